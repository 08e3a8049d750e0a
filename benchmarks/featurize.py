"""Featurization speed on one CPU core: one hour of speech-like 16 kHz audio.

Times each bundled frame featurizer (mfcc, spectrogram, prosodic frames with yin) and the
openSMILE functionals (egemaps, compare) called per utterance, as the runner does, and the
bare library call each one wraps (librosa, opensmile.Smile), then writes
benchmarks/results/featurize.json. Targets for the hour: mfcc <= 5 s, spectrogram <= 5 s,
prosodic <= 30 s; none for openSMILE (timed for comparison).

    python benchmarks/featurize.py [--minutes 60] [--out benchmarks/results/featurize.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / librosa / torch load their thread pools

import argparse  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
import librosa  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emoplug.registry import get_registry  # noqa: E402

SR = 16000
CLIP_S = 10.0
TARGETS_S = {"mfcc": 5.0, "spectrogram": 5.0, "prosodic": 30.0}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="audio to featurize")
    parser.add_argument("--out", default="benchmarks/results/featurize.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    clips = [speech_like_clip(rng) for _ in range(round(args.minutes * 60 / CLIP_S))]
    audio_s = len(clips) * CLIP_S

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
        }
        print(f"{name:12s} {seconds:7.2f} s  {audio_s / seconds:8.0f}x real time  "
              f"(bare call {bare_seconds:6.2f} s, x{seconds / bare_seconds:.2f}; "
              f"target {'none' if target is None else f'{target:.1f} s'})", flush=True)

    _common.write_report(
        "featurize", args.out,
        audio={"seconds": audio_s, "clips": len(clips), "clip_seconds": CLIP_S,
               "sample_rate": SR, "signal": "synthetic harmonic syllables + noise, seed 0"},
        machine=_common.machine(cores_used=1),
        versions=_common.versions("numpy", "scipy", "librosa", "opensmile"), results=results)


if __name__ == "__main__":
    main()
