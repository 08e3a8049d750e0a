"""Pitch trackers of the `prosodic` featurizer (yin, pyin, praat) on signals of known F0.

Each clip alternates voiced stretches (a harmonic source whose F0 glides and has vibrato, in
noise at a per-clip SNR of 0-25 dB), unvoiced noise (as in a fricative) and pauses. Every
10 ms frame whose centre lies at least 40 ms from a stretch boundary is scored against the
truth: the median absolute F0 error in Hz (frames voiced in truth and called voiced by the
tracker), the gross error rate (those frames more than 20 % off), the voicing accuracy (all
scored frames), and the seconds one core spends per hour of audio (one thread for numpy,
torch and OpenMP). Writes benchmarks/results/pitch.json.

    python benchmarks/pitch.py [--clips 60] [--out benchmarks/results/pitch.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / librosa / torch load their thread pools

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import _common  # noqa: E402
import numpy as np  # noqa: E402

from emoplug.registry import get_registry  # noqa: E402

SR = 16000
HOP_S = 0.010
CLIP_S = 4.0
MARGIN_S = 0.040
TRACKERS = ("yin", "pyin", "praat")


@dataclass
class Clip:
    """A waveform, its true F0 at each frame centre (0 = unvoiced) and which frames count."""

    waveform: np.ndarray
    f0: np.ndarray
    scored: np.ndarray


def make_clip(rng: np.random.Generator) -> Clip:
    """4 s of voiced stretches (0.3-0.8 s, F0 80-350 Hz, a +-20 % glide, 5 Hz vibrato, a
    syllable-like loudness envelope, noise at a per-clip SNR of 0-25 dB), unvoiced noise
    (0.1-0.3 s) and pauses (0.1-0.3 s), in random order, over faint background noise."""
    n = int(CLIP_S * SR)
    y = 0.002 * rng.standard_normal(n)
    f0 = np.zeros(n)
    snr_db = rng.uniform(0, 25)
    boundaries = [0]
    at = 0
    while at < n:
        kind = rng.choice(["voiced", "voiced", "noise", "pause"])
        length = int(SR * (rng.uniform(0.3, 0.8) if kind == "voiced" else rng.uniform(0.1, 0.3)))
        part = slice(at, min(n, at + length))
        m = part.stop - part.start
        t = np.arange(m) / SR
        if kind == "voiced":
            base = rng.uniform(80, 350)
            glide = 1 + rng.uniform(-0.2, 0.2) * t / max(t[-1], 1e-9)
            contour = base * glide * (1 + 0.03 * np.sin(2 * np.pi * 5 * t + rng.uniform(0, 6)))
            phase = 2 * np.pi * np.cumsum(contour) / SR
            harmonics = range(1, int(SR / 2 / contour.max()))
            source = sum(np.sin(k * phase) / k for k in harmonics)
            envelope = 0.4 + 0.6 * np.sin(np.pi * t / max(t[-1], 1e-9)) ** 2
            voiced = 0.3 * envelope * source / np.abs(source).max()
            noise_std = np.sqrt(np.mean(voiced ** 2) / 10 ** (snr_db / 10))
            y[part] += voiced + noise_std * rng.standard_normal(m)
            f0[part] = contour
        elif kind == "noise":
            y[part] += rng.uniform(0.03, 0.1) * rng.standard_normal(m)
        at = part.stop
        boundaries.append(at)
    centres = np.arange(1 + n // round(HOP_S * SR)) * round(HOP_S * SR)
    nearest = np.min(np.abs(centres[:, None] - np.array(boundaries)[None, :]), axis=1)
    scored = nearest >= MARGIN_S * SR
    truth = f0[np.minimum(centres, n - 1)]
    return Clip(y.astype(np.float32), truth, scored)


def score(clips: list[Clip], estimates: list[np.ndarray]) -> dict[str, float]:
    truth = np.concatenate([c.f0[c.scored] for c in clips])
    found = np.concatenate([e[c.scored] for c, e in zip(clips, estimates, strict=True)])
    both = (truth > 0) & (found > 0)
    error = np.abs(found[both] - truth[both])
    return {
        "median_f0_error_hz": round(float(np.median(error)), 3),
        "gross_error_rate": round(float(np.mean(error > 0.2 * truth[both])), 4),
        "voicing_accuracy": round(float(np.mean((truth > 0) == (found > 0))), 4),
        "frames_scored": int(len(truth)),
        "frames_voiced_in_truth": int((truth > 0).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60, help="4 s clips to track")
    parser.add_argument("--out", default="benchmarks/results/pitch.json")
    args = parser.parse_args()

    threads = _common.single_thread()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    clips = [make_clip(rng) for _ in range(args.clips)]
    audio_s = len(clips) * CLIP_S
    registry = get_registry()
    results = {}
    for tracker in TRACKERS:
        featurizer = registry.build("audio", {"type": "prosodic", "pitch": tracker,
                                              "deltas": 0})
        featurizer.contours(clips[0].waveform, SR)  # warm-up: imports, numba compilation
        start = time.perf_counter()
        estimates = [featurizer.contours(c.waveform, SR)[:, 0] for c in clips]
        seconds = time.perf_counter() - start
        results[tracker] = {"config": featurizer.config_dict(), **score(clips, estimates),
                            "seconds": round(seconds, 3),
                            "seconds_per_hour": round(seconds * 3600 / audio_s, 1)}
        row = results[tracker]
        print(f"{tracker:6s} median error {row['median_f0_error_hz']:6.2f} Hz  gross "
              f"{row['gross_error_rate']:.3f}  voicing {row['voicing_accuracy']:.3f}  "
              f"{row['seconds_per_hour']:7.1f} s per hour", flush=True)

    _common.write_report(
        "pitch", args.out,
        audio={"seconds": audio_s, "clips": len(clips), "clip_seconds": CLIP_S,
               "sample_rate": SR, "margin_s": MARGIN_S,
               "signal": "voiced stretches (harmonic source, F0 80-350 Hz, glide and "
                         "vibrato, SNR 0-25 dB) between unvoiced noise and pauses, "
                         "background noise, seed 0"},
        machine=_common.machine(cores_used=1, torch_threads=threads),
        versions=_common.versions("numpy", "librosa", "parselmouth"), results=results)


if __name__ == "__main__":
    main()
