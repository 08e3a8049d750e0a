"""Bundled audio featurizers: mfcc, spectrogram, prosodic, and the speech encoders wav2vec
(wav2vec 2.0, HuBERT, WavLM, ...) and whisper (Whisper's encoder).

Each featurizer (one module each) turns a mono waveform into a deterministic, cacheable
``[frames, dim]`` array and names a default trainable encoder (from
:mod:`emoplug.audio_encoders`); :mod:`emoplug_audio.base` is their shared base. Numeric helpers
shared by the featurizers live in :mod:`emoplug_audio.dsp`.
"""

from __future__ import annotations

from emoplug import hookimpl


@hookimpl
def emoplug_register_audio_featurizers(register):
    from emoplug_audio.mfcc import MFCC
    from emoplug_audio.prosodic import Prosodic
    from emoplug_audio.spectrogram import Spectrogram
    from emoplug_audio.wav2vec import Wav2Vec
    from emoplug_audio.whisper import Whisper

    for cls in (MFCC, Spectrogram, Prosodic, Wav2Vec, Whisper):
        register(cls)
