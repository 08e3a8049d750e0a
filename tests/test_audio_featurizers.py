"""The bundled audio featurizers and load_audio, on synthetic signals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from emoplug import EmoplugError
from emoplug.data.audio import load_audio
from emoplug.errors import ComponentUnavailableError
from emoplug.registry import get_registry

SR = 16000


def tone(freq: float, seconds: float = 1.0, sr: int = SR, harmonics: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def build(**settings):
    return get_registry().build("audio", settings)


def test_bundled_featurizers_are_registered():
    assert {"mfcc", "spectrogram", "prosodic", "wav2vec"} <= set(get_registry().names("audio"))


@pytest.mark.parametrize(("settings", "dim"), [
    ({"type": "mfcc"}, 40),
    ({"type": "mfcc", "deltas": 1}, 80),
    ({"type": "mfcc", "n_mfcc": 13, "deltas": 2}, 39),
    ({"type": "spectrogram"}, 64),
    ({"type": "spectrogram", "kind": "linear"}, 257),
    ({"type": "spectrogram", "n_mels": 40, "win_ms": 32}, 40),
    ({"type": "prosodic"}, 8),
    ({"type": "prosodic", "deltas": 0}, 4),
    ({"type": "prosodic", "deltas": 2, "cmvn": True}, 12),
])
def test_frame_featurizers_shape_dtype_and_determinism(settings, dim):
    featurizer = build(**settings)
    y = tone(220, 1.0, harmonics=5)
    features = featurizer.featurize(y, SR)
    assert features.dtype == np.float32
    assert features.shape == (1 + len(y) // 160, dim)  # centred frames, 10 ms hop
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features, featurizer.featurize(y.copy(), SR))


@pytest.mark.parametrize("settings", [
    {"type": "mfcc", "deltas": 2}, {"type": "mfcc", "level": "functionals"},
    {"type": "spectrogram", "kind": "linear", "deltas": 1}, {"type": "spectrogram", "hop_ms": 20},
    {"type": "prosodic"}, {"type": "prosodic", "level": "functionals"},
])
def test_cache_layout_is_what_featurize_returns(settings):
    featurizer = build(**settings)
    y = tone(220, 1.5, harmonics=5)
    features = featurizer.featurize(y, SR)
    layout = featurizer.cache_layout()
    assert features.shape == (layout.rows_per_second * 1.5 + layout.rows_per_file, layout.dim)
    assert features.dtype == layout.dtype
    assert layout.bytes_for(1.5, 1) == features.nbytes + 144


def test_mfcc_cmvn_normalises_each_coefficient():
    rng = np.random.default_rng(0)
    y = (tone(150, 1.0, harmonics=8) + 0.05 * rng.standard_normal(SR)).astype(np.float32)
    normalised = build(type="mfcc").featurize(y, SR)
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=0), 1, atol=1e-3)
    raw = build(type="mfcc", cmvn=False).featurize(y, SR)
    assert np.abs(raw.mean(axis=0)).max() > 1


def test_mfcc_rejects_more_coefficients_than_mel_bands():
    with pytest.raises(ValidationError, match="n_mfcc"):
        build(type="mfcc", n_mfcc=80, n_mels=64)


@pytest.mark.parametrize("freq", [120.0, 200.0, 310.0])
def test_prosodic_yin_tracks_the_pitch_of_a_tone(freq):
    contours = build(type="prosodic", deltas=0).featurize(tone(freq, 1.0, harmonics=4), SR)
    f0, voicing = contours[:, 0], contours[:, 1]
    inner = slice(5, -5)  # edge frames half-overlap the zero padding
    assert (f0[inner] > 0).all() and (voicing[inner] > 0.9).all()
    assert abs(np.median(f0[inner]) - freq) / freq < 0.03


def test_prosodic_silence_and_noise_are_unvoiced():
    silence = np.zeros(SR, dtype=np.float32)
    contours = build(type="prosodic", deltas=0).featurize(silence, SR)
    assert (contours[:, 0] == 0).all() and (contours[:, 1] == 0).all()
    noise = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.3
    contours = build(type="prosodic", deltas=0).featurize(noise, SR)
    assert (contours[:, 0] > 0).mean() < 0.1


def test_prosodic_unvoiced_gap_between_tones():
    y = np.concatenate([tone(200, 0.5), np.zeros(SR // 2, np.float32), tone(200, 0.5)])
    f0 = build(type="prosodic", deltas=0).featurize(y, SR)[:, 0]
    assert (f0[60:90] == 0).all()  # 0.6-0.9 s: silence
    assert (f0[10:40] > 0).all() and (f0[110:140] > 0).all()


def test_prosodic_pyin_agrees_with_yin():
    y = np.concatenate([tone(180, 0.4, harmonics=3), np.zeros(SR // 4, np.float32)])
    contours = build(type="prosodic", pitch="pyin", deltas=0).featurize(y, SR)
    f0 = contours[:, 0]
    assert abs(np.median(f0[5:35]) - 180) < 5
    assert (f0[-15:] == 0).all()


@pytest.mark.parametrize("freq", [110.0, 230.0])
def test_prosodic_praat_tracks_a_tone_and_finds_the_silence(freq):
    y = np.concatenate([tone(freq, 0.5, harmonics=4), np.zeros(SR // 2, np.float32)])
    contours = build(type="prosodic", pitch="praat", deltas=0).featurize(y, SR)
    f0, voicing = contours[:, 0], contours[:, 1]
    assert contours.shape == (1 + len(y) // 160, 4)
    assert abs(np.median(f0[8:42]) - freq) < 1 and (voicing[8:42] > 0.9).all()
    assert (f0[60:] == 0).all()


def test_prosodic_praat_without_parselmouth_is_refused_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "parselmouth", None)
    with pytest.raises(ComponentUnavailableError, match=r'pip install "emoplug\[praat\]"'):
        build(type="prosodic", pitch="praat")
    build(type="prosodic", pitch="yin")
    assert get_registry().get("audio", "prosodic").unavailable_reason() is None


@pytest.mark.parametrize(("settings", "dim"), [
    ({"type": "mfcc", "n_mfcc": 13, "deltas": 2}, 78),
    ({"type": "spectrogram", "n_mels": 32, "deltas": 1}, 128),
])
def test_functionals_are_mean_and_std_of_the_raw_frames(settings, dim):
    rng = np.random.default_rng(0)
    y = (tone(150, 1.0, harmonics=8) + 0.05 * rng.standard_normal(SR)).astype(np.float32)
    frames = build(**settings, cmvn=False).featurize(y, SR)
    functionals = build(**settings, level="functionals").featurize(y, SR)
    assert functionals.shape == (1, dim) and functionals.dtype == np.float32
    half = dim // 2
    np.testing.assert_allclose(functionals[0, :half], frames.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(functionals[0, half:], frames.std(0), rtol=1e-5, atol=1e-4)
    assert build(**settings, level="functionals").encoder_config().type == "mlp"
    assert build(**settings).encoder_config().type == "cnn"


def test_prosodic_functionals():
    featurizer = build(type="prosodic", level="functionals")
    # a rising glide, 150 -> 250 Hz over 2 s, with 4 Hz syllable-like loudness bursts
    t = np.arange(2 * SR) / SR
    freq = 150 + 50 * t
    y = np.sin(2 * np.pi * np.cumsum(freq) / SR) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    y = y.astype(np.float32)
    values = featurizer.featurize(y, SR)
    assert values.shape == (1, 11) and values.dtype == np.float32
    f0_mean, _, f0_range, f0_slope, *_, voiced_ratio, peak_rate, duration = values[0]
    assert abs(f0_mean - 200) < 10 and abs(f0_slope - 50) < 10 and f0_range > 80
    assert voiced_ratio > 0.9 and abs(duration - 2.0) < 0.02
    assert 3 <= peak_rate <= 5
    silent = featurizer.featurize(np.zeros(SR, np.float32), SR)[0]
    assert silent[0] == 0 and silent[8] == 0  # no F0, no voiced frame


def test_prosodic_default_encoder_follows_level():
    assert build(type="prosodic").encoder_config().type == "cnn"
    assert build(type="prosodic", level="functionals").encoder_config().type == "mlp"
    custom = build(type="prosodic", encoder={"type": "attention_pool", "hidden": 8})
    assert custom.encoder_config().hidden == 8


def test_cache_key_follows_feature_settings_not_encoder_settings():
    base = build(type="mfcc")
    assert base.cache_key() == build(type="mfcc", n_mfcc=40).cache_key()
    assert base.cache_key() != build(type="mfcc", deltas=1).cache_key()
    assert base.cache_key() != build(type="mfcc", sample_rate=8000).cache_key()
    assert base.cache_key() == build(type="mfcc", encoder={"hidden": 32}).cache_key()
    assert base.cache_key().startswith("mfcc-")
    assert base.cache_key() != build(type="spectrogram").cache_key()


# -- load_audio ----------------------------------------------------------------------------

def dominant_frequency(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[spectrum.argmax()])


def test_load_audio_resamples_8k_to_16k(tmp_path):
    path = tmp_path / "low.wav"
    sf.write(path, tone(440, 1.0, sr=8000), 8000)
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 16000
    assert abs(dominant_frequency(y, 16000) - 440) < 2


def test_load_audio_mixes_stereo_to_mono_and_reads_flac(tmp_path):
    left, right = tone(300, 0.5), tone(500, 0.5)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), SR)
    y = load_audio(path, SR)
    assert y.shape == (SR // 2,)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-4)  # 16-bit FLAC


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00garbage" * 10])
def test_load_audio_rejects_unreadable_files_naming_them(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(EmoplugError, match="broken.wav"):
        load_audio(path, SR)


def test_load_audio_rejects_a_file_without_samples(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), SR)
    with pytest.raises(EmoplugError, match="empty.wav.*empty"):
        load_audio(path, SR)


def test_load_audio_missing_file(tmp_path):
    with pytest.raises(EmoplugError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav", SR)


# -- wav2vec with a tiny random model -------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_wav2vec(tmp_path_factory):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    path = tmp_path_factory.mktemp("tiny-wav2vec2")
    Wav2Vec2Model(config).save_pretrained(path)
    return str(path)


def test_wav2vec_features_from_a_local_checkpoint(tiny_wav2vec):
    featurizer = build(type="wav2vec", pretrained=tiny_wav2vec)
    assert featurizer.model_layers() == [2]  # (4, 8, 12) clipped to the model's 2 layers
    y = tone(200, 0.8, harmonics=3)
    features = featurizer.featurize(y, SR)
    assert features.dtype == np.float16
    # receptive field 85 samples, total stride 80
    assert features.shape == ((len(y) - 85) // 80 + 1, 32)
    np.testing.assert_array_equal(features, featurizer.featurize(y, SR))
    assert featurizer.model() is featurizer.model()  # loaded once per instance


def test_wav2vec_stacks_layers_and_downsamples(tiny_wav2vec):
    import torch

    y = tone(200, 0.8, harmonics=3)
    full = build(type="wav2vec", pretrained=tiny_wav2vec, layers=[0, 1, 2]).featurize(y, SR)
    assert full.shape == (159, 96)
    thirds = build(type="wav2vec", pretrained=tiny_wav2vec, layers=[0, 1, 2], downsample=4)
    features = thirds.featurize(y, SR)
    assert features.shape == (40, 96)  # ceil(159 / 4): the last group averages 3 frames
    np.testing.assert_allclose(features[0].astype(np.float32),
                               full[:4].astype(np.float32).mean(0), atol=2e-2)
    np.testing.assert_allclose(features[-1].astype(np.float32),
                               full[-3:].astype(np.float32).mean(0), atol=2e-2)
    encoder = thirds.build_encoder(96)
    out = encoder(torch.from_numpy(features)[None].float(), torch.ones(1, 40, dtype=torch.bool))
    assert out.pooled.shape == (1, 256) and out.sequence.shape == (1, 40, 256)


def test_wav2vec_pads_very_short_audio(tiny_wav2vec):
    features = build(type="wav2vec", pretrained=tiny_wav2vec).featurize(
        np.zeros(20, np.float32), SR)
    assert features.shape == (1, 32) and np.isfinite(features.astype(np.float32)).all()


def test_wav2vec_missing_checkpoint_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    featurizer = build(type="wav2vec", pretrained="nobody/no-such-wav2vec")
    with pytest.raises(EmoplugError) as info:
        featurizer.featurize(tone(200, 0.2), SR)
    assert str(info.value) == (
        "pretrained: nobody/no-such-wav2vec is not in the local Hugging Face cache and the hub "
        "is unreachable; give a local checkpoint directory instead")
    # the same problem, found by the preflight before anything runs
    assert [str(p) for p in featurizer.check()] == [str(info.value)]


def test_wav2vec_check_passes_a_checkpoint_directory(tiny_wav2vec, tmp_path):
    assert build(type="wav2vec", pretrained=tiny_wav2vec).check() == []
    (problem,) = build(type="wav2vec", pretrained=str(tmp_path / "gone")).check()
    assert str(problem.at("audio.w2v")) == f"audio.w2v.pretrained: no directory {tmp_path}/gone"


def test_wav2vec_config_validation():
    with pytest.raises(ValidationError):
        build(type="wav2vec", layers=[])
    with pytest.raises(ValidationError):
        build(type="wav2vec", layers=[-1])
    with pytest.raises(ValidationError):
        build(type="wav2vec", downsample=0)
