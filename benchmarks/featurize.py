"""Featurization speed on one CPU core: one hour of speech-like 16 kHz audio.

Times each bundled frame featurizer (mfcc, spectrogram, prosodic frames with yin) and the
openSMILE functionals (egemaps, compare) called per utterance, as the runner does, and the
bare library call each one wraps (librosa, opensmile.Smile); and the speech encoders
(wav2vec 2.0, HuBERT, WavLM, Whisper) as tiny random checkpoints at the frame and pooled
levels, with the cache each writes per hour beside ``emoplug plan``'s estimate, plus that
estimate for the real base and large checkpoints (from their config alone). Writes
benchmarks/results/featurize.json; ``--rows`` measures some rows and keeps the others, each
row with its own date and load average. Targets for the hour: mfcc <= 5 s, spectrogram
<= 5 s, prosodic <= 30 s; none for openSMILE or the speech encoders.

    python benchmarks/featurize.py [--minutes 60] [--rows classic,speech]
                                   [--out benchmarks/results/featurize.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / librosa / torch load their thread pools

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import _common  # noqa: E402
import librosa  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emoplug.data.cache import DIGEST_SIZE  # noqa: E402
from emoplug.registry import get_registry  # noqa: E402

SR = 16000
CLIP_S = 10.0
TARGETS_S = {"mfcc": 5.0, "spectrogram": 5.0, "prosodic": 30.0}
#: the tiny speech encoders' size: random weights, so only their cost means anything
TINY_HIDDEN, TINY_LAYERS = 64, 4


def speech_like_clip(rng: np.random.Generator) -> np.ndarray:
    """10 s of voiced 'syllables' (harmonic, wandering F0, 3-6 per second) with breathy
    noise and pauses."""
    n = int(CLIP_S * SR)
    t = np.arange(n) / SR
    base = rng.uniform(90, 250)
    f0 = base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.15 * t + rng.uniform(0, 6)) > -0.6).astype(np.float64)
    y = 0.3 * voiced * syllables * pauses + 0.01 * rng.standard_normal(n)
    return y.astype(np.float32)


def smile(feature_set: str):
    """``opensmile.Smile`` of a feature set's functionals, as the featurizers build it."""
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel.Functionals)


def bare_calls() -> dict:
    """The library call each featurizer wraps, with the featurizer's default settings."""
    egemaps, compare = smile("eGeMAPSv02"), smile("ComParE_2016")
    return {
        "mfcc": lambda y: librosa.feature.mfcc(y=y, sr=SR, n_mfcc=40, n_fft=512,
                                               hop_length=160, win_length=400, n_mels=64),
        "spectrogram": lambda y: librosa.feature.melspectrogram(
            y=y, sr=SR, n_fft=512, hop_length=160, win_length=400, n_mels=64),
        "prosodic": lambda y: librosa.yin(y, fmin=60, fmax=500, sr=SR, frame_length=1024,
                                          hop_length=160),
        "egemaps": lambda y: egemaps.process_signal(y, SR),
        "compare": lambda y: compare.process_signal(y, SR),
    }


def timed(fn, clips: list[np.ndarray]) -> float:
    fn(clips[0])  # warm-up: imports, filter banks, numba compilation
    start = time.perf_counter()
    for clip in clips:
        fn(clip)
    return time.perf_counter() - start


def classic_rows(clips: list[np.ndarray], audio_s: float) -> dict:
    """The frame featurizers and openSMILE, each beside the bare library call it wraps."""
    registry = get_registry()
    featurizers = {
        "mfcc": registry.build("audio", {"type": "mfcc"}),
        "spectrogram": registry.build("audio", {"type": "spectrogram"}),
        "prosodic": registry.build("audio", {"type": "prosodic", "level": "frames",
                                             "pitch": "yin"}),
        "egemaps": registry.build("audio", {"type": "egemaps", "level": "functionals"}),
        "compare": registry.build("audio", {"type": "compare", "level": "functionals"}),
    }
    bare = bare_calls()
    results = {}
    for name, featurizer in featurizers.items():
        seconds = timed(lambda y, f=featurizer: f.featurize(y, SR), clips)
        bare_seconds = timed(bare[name], clips)
        target = TARGETS_S[name] * audio_s / 3600 if name in TARGETS_S else None
        results[name] = {
            "config": featurizer.config_dict(),
            "seconds": round(seconds, 3),
            "seconds_per_hour": round(seconds * 3600 / audio_s, 2),
            "x_real_time": round(audio_s / seconds, 1),
            "bare_seconds": round(bare_seconds, 3),
            "overhead_ratio": round(seconds / bare_seconds, 3),
            "target_seconds": target,
            "meets_target": None if target is None else seconds <= target,
            "measured": measured(),
        }
        print(f"{name:12s} {seconds:7.2f} s  {audio_s / seconds:8.0f}x real time  "
              f"(bare call {bare_seconds:6.2f} s, x{seconds / bare_seconds:.2f}; "
              f"target {'none' if target is None else f'{target:.1f} s'})", flush=True)
    return results


def entry_bytes(array: np.ndarray) -> int:
    """What the feature cache stores for ``array``: digest + ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return DIGEST_SIZE + len(buffer.getvalue())


def speech_rows(clips: list[np.ndarray], audio_s: float, work: Path) -> dict:
    """Tiny random checkpoints of each speech family (hidden 64, 4 layers, all 5 hidden
    states; Whisper with its real 30 s window), at both levels, filled in batches of
    ``batch_size`` as the cache is: seconds and cache bytes per hour, beside the estimate
    ``emoplug plan`` prints."""
    from emoplug_audio.tiny import FAMILIES, tiny_speech_checkpoint

    registry = get_registry()
    results = {}
    for family, kind in FAMILIES.items():
        path = tiny_speech_checkpoint(family, work / family, hidden=TINY_HIDDEN,
                                      layers=TINY_LAYERS)
        for level in ("frames", "pooled"):
            featurizer = registry.build("audio", {"type": kind, "pretrained": str(path),
                                                  "layers": "all", "level": level})
            batch = featurizer.batch_size()
            featurizer.featurize(clips[0], SR)  # warm-up: load the model
            start = time.perf_counter()
            arrays = [a for at in range(0, len(clips), batch)
                      for a in featurizer.featurize_many(clips[at:at + batch], SR)]
            seconds = time.perf_counter() - start
            cache_bytes = sum(entry_bytes(a) for a in arrays)
            estimate = featurizer.cache_layout().bytes_for(audio_s, len(clips))
            name = f"{family}-tiny {level}"
            results[name] = {
                "config": featurizer.config_dict(),
                "model": {"family": family, "hidden": TINY_HIDDEN, "layers": TINY_LAYERS,
                          "random": True},
                "shape_per_clip": list(arrays[0].shape), "dtype": str(arrays[0].dtype),
                "seconds": round(seconds, 3),
                "seconds_per_hour": round(seconds * 3600 / audio_s, 2),
                "x_real_time": round(audio_s / seconds, 1),
                "cache_mb_per_hour": round(cache_bytes * 3600 / audio_s / 1e6, 3),
                "plan_estimate_mb_per_hour": round(estimate * 3600 / audio_s / 1e6, 3),
                "encoded_seconds_per_audio_second": (
                    30.0 / CLIP_S if family == "whisper" else 1.0),
                "measured": measured(),
            }
            print(f"{name:20s} {seconds:7.2f} s  {audio_s / seconds:8.0f}x real time  "
                  f"cache {cache_bytes * 3600 / audio_s / 1e6:9.3f} MB/h "
                  f"(plan: {estimate * 3600 / audio_s / 1e6:9.3f})", flush=True)
    return results


#: the real checkpoints' shapes (their config.json), for cache estimates without weights
REAL_CHECKPOINTS = {
    "facebook/wav2vec2-base": ("wav2vec", "Wav2Vec2Config", {}),
    "facebook/hubert-base-ls960": ("wav2vec", "HubertConfig", {}),
    "microsoft/wavlm-base-plus": ("wav2vec", "WavLMConfig", {}),
    "microsoft/wavlm-large": ("wav2vec", "WavLMConfig", {
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "intermediate_size": 4096}),
    "openai/whisper-base": ("whisper", "WhisperConfig", {
        "d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8}),
    "openai/whisper-large-v3": ("whisper", "WhisperConfig", {
        "d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
        "num_mel_bins": 128}),
}


def real_estimates(work: Path, utterance_s: float) -> dict:
    """Cache per hour of the real checkpoints, estimated by ``emoplug plan``'s code from a
    directory holding only their ``config.json`` (the transformers config class with the
    checkpoint's published sizes; no weights), at ``utterance_s`` per utterance."""
    import transformers

    registry = get_registry()
    results = {}
    for name, (kind, config_class, sizes) in REAL_CHECKPOINTS.items():
        folder = work / "configs" / name.replace("/", "--")
        getattr(transformers, config_class)(**sizes).save_pretrained(folder)
        for level, layers in (("frames", "all"), ("frames", [4, 8, 12]), ("pooled", "all")):
            if kind == "whisper" and layers != "all":
                layers = [2, 4, 6]
            featurizer = registry.build("audio", {"type": kind, "pretrained": str(folder),
                                                  "layers": layers, "level": level})
            layout = featurizer.cache_layout()
            per_hour = layout.bytes_for(3600.0, round(3600.0 / utterance_s))
            results[f"{name} {level} layers={layers}"] = {
                "checkpoint": name, "level": level, "layers": layers,
                "layout": layout.describe(), "cache_mb_per_hour": round(per_hour / 1e6, 1)}
            print(f"{name:28s} {level:7s} {str(layers):12s} {layout.describe():40s} "
                  f"{per_hour / 1e6:10.1f} MB/h", flush=True)
    return results


def measured() -> dict:
    return {"date": _common.now(), "load_average_1min": _common.load_average()}


def previous_rows(path: Path) -> dict:
    """The rows of an earlier report at ``path``; rows without their own ``measured``
    get the report's date and load average."""
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    when = {"date": report["date"],
            "load_average_1min": report["machine"]["load_average_1min"]}
    return {name: {**row, "measured": row.get("measured", when)}
            for name, row in report["results"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="audio to featurize")
    parser.add_argument("--rows", default="classic,speech",
                        help="which rows to measure: classic (mfcc, spectrogram, prosodic, "
                        "openSMILE), speech (tiny speech encoders, real checkpoints' cache "
                        "estimates); rows not measured are kept from --out")
    parser.add_argument("--out", default="benchmarks/results/featurize.json")
    args = parser.parse_args()
    rows = set(args.rows.split(","))

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    clips = [speech_like_clip(rng) for _ in range(round(args.minutes * 60 / CLIP_S))]
    audio_s = len(clips) * CLIP_S

    results = previous_rows(Path(args.out))
    estimates = {}
    if "classic" in rows:
        results.update(classic_rows(clips, audio_s))
    if "speech" in rows:
        with tempfile.TemporaryDirectory() as work:
            results.update(speech_rows(clips, audio_s, Path(work)))
            estimates = real_estimates(Path(work), CLIP_S)
    elif Path(args.out).exists():
        estimates = json.loads(Path(args.out).read_text()).get("real_checkpoint_estimates", {})

    _common.write_report(
        "featurize", args.out,
        audio={"seconds": audio_s, "clips": len(clips), "clip_seconds": CLIP_S,
               "sample_rate": SR, "signal": "synthetic harmonic syllables + noise, seed 0"},
        machine=_common.machine(cores_used=1),
        versions=_common.versions("numpy", "scipy", "librosa", "opensmile"), results=results,
        real_checkpoint_estimates=estimates)


if __name__ == "__main__":
    main()
