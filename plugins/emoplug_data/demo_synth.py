"""Procedural generation of the synthetic ``demo`` corpus (numpy only, deterministic).

The corpus is shaped like IEMOCAP: 5 sessions x 2 speakers, improvised and scripted dialogs,
the four classes neutral/happy/angry/sad and V/A/D on a 1-5 scale. Each modality carries
half of the answer:

* text: template sentences whose core phrase carries valence (positive for happy, neutral
  for neutral, one shared negative pool for angry *and* sad);
* audio: voiced harmonic syllables (speaker-specific pitch, vowel formants, a pitch contour)
  whose energy, pitch and speaking rate carry arousal (angry/happy high, sad/neutral low).

So text alone cannot tell angry from sad, audio alone cannot tell angry from happy, and only
both together separate all four. With probability ``label_noise`` each modality, on its own,
portrays a random other class, so neither modality is ever perfect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CLASSES = ("neutral", "happy", "angry", "sad")
#: The class proportions of IEMOCAP's four-class setup (1,708 / 1,636 / 1,103 / 1,084).
CLASS_PRIORS = np.array([1708, 1636, 1103, 1084]) / 5531
HIGH_AROUSAL = {"happy", "angry"}
#: Mean (valence, arousal, dominance) per class; gold AVD adds Gaussian noise to these.
AVD_MEANS = {
    "neutral": (3.0, 2.3, 2.8), "happy": (4.0, 3.6, 3.2),
    "angry": (1.8, 3.9, 3.8), "sad": (1.9, 2.0, 2.0),
}
AVD_NOISE = 0.35
SESSIONS = tuple(f"Ses0{i}" for i in range(1, 6))
GENDERS = ("F", "M")

OPENERS = ("", "well,", "okay,", "so", "you know,", "honestly,", "look,", "oh,")
CLOSERS = ("", "today", "right now", "this time", "I think", "you know", "tonight")
CORES = {
    "positive": (
        "this is wonderful", "I love it here", "we did it", "that is great news",
        "I am so glad you came", "what a lovely idea", "it worked out perfectly",
        "you made my day", "I feel fantastic", "that was so much fun", "thank you so much",
        "everything is going well"),
    "neutral": (
        "the meeting is at noon", "I will take the bus", "the forms are on the desk",
        "we need to check the schedule", "the store opens at nine", "I have to call the office",
        "the train leaves from platform two", "let me find my keys",
        "the report is due on monday", "we can talk about it later",
        "I put the box in the hall", "the line at the bank was long"),
    "negative": (
        "I can't believe this", "this is terrible", "everything went wrong", "I lost it all",
        "nothing ever works", "why would you do that", "it is hopeless", "that was awful",
        "I hate how this ended", "you never listen to me", "I don't want this",
        "it is all ruined"),
}
POLARITY = {"neutral": "neutral", "happy": "positive", "angry": "negative", "sad": "negative"}

#: (F1, F2, F3) in Hz of a few vowels (adult male); female speakers scale them up.
VOWELS = np.array([(730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480),
                   (570, 840, 2410), (300, 870, 2240), (660, 1720, 2410)], dtype=np.float32)
FORMANT_BANDWIDTHS = np.array([90, 120, 180], dtype=np.float32)
N_HARMONICS = 24


@dataclass(frozen=True)
class Speaker:
    session: str
    gender: str
    f0: float
    formant_scale: float

    @property
    def name(self) -> str:
        return f"{self.session}_{self.gender}"


def make_speakers(rng: np.random.Generator) -> list[Speaker]:
    """Ten speakers, one female and one male per session, each with its own voice."""
    speakers = []
    for session in SESSIONS:
        for gender in GENDERS:
            f0 = rng.uniform(185, 235) if gender == "F" else rng.uniform(100, 135)
            scale = (1.15 if gender == "F" else 1.0) * rng.uniform(0.95, 1.05)
            speakers.append(Speaker(session, gender, float(f0), float(scale)))
    return speakers


def portrayed(label: str, noise: float, rng: np.random.Generator) -> str:
    """The class a modality portrays: ``label``, or with probability ``noise`` another one."""
    if rng.random() >= noise:
        return label
    others = [c for c in CLASSES if c != label]
    return others[rng.integers(len(others))]


def sentence(label: str, rng: np.random.Generator) -> str:
    """A transcript whose core phrase carries the valence of ``label``."""
    core = CORES[POLARITY[label]][rng.integers(12)]
    words = " ".join(w for w in (OPENERS[rng.integers(len(OPENERS))], core,
                                 CLOSERS[rng.integers(len(CLOSERS))]) if w)
    return words[0].upper() + words[1:] + ".?!"[rng.integers(3)]


def speech(label: str, speaker: Speaker, duration: float, sample_rate: int,
           rng: np.random.Generator) -> np.ndarray:
    """A float32 waveform of voiced syllables whose prosody carries the arousal of ``label``."""
    high = label in HIGH_AROUSAL
    rate = rng.uniform(4.5, 6.0) if high else rng.uniform(2.5, 3.6)        # syllables / s
    energy = rng.uniform(0.30, 0.55) if high else rng.uniform(0.08, 0.20)  # target RMS scale
    pitch = rng.uniform(1.15, 1.35) if high else rng.uniform(0.85, 1.0)
    excursion = 0.18 if high else 0.06

    n = int(duration * sample_rate)
    lead, tail = (int(rng.uniform(0.05, 0.15) * sample_rate) for _ in range(2))
    n_syl = max(2, round((n - lead - tail) / sample_rate * rate))
    widths = rng.uniform(0.7, 1.3, n_syl)
    edges = lead + np.concatenate([[0], np.cumsum(widths) / widths.sum()]) * (n - lead - tail)
    samples = np.arange(n, dtype=np.float32)
    syl = np.clip(np.searchsorted(edges, samples, side="right") - 1, 0, n_syl - 1)
    pos = (samples - edges[syl]) / (edges[syl + 1] - edges[syl])  # 0..1 within a syllable
    inside = (samples >= edges[0]) & (samples < edges[-1])
    voiced = inside & (pos < 0.8)
    envelope = np.where(voiced, np.sin(np.pi * np.clip(pos / 0.8, 0, 1)) ** 0.5, 0.0)

    accents = rng.normal(0.0, excursion, n_syl)
    declination = 1.0 - 0.12 * samples / n
    f0 = speaker.f0 * pitch * declination * (1.0 + accents[syl] * np.sin(np.pi * pos))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate

    # Harmonic amplitudes follow the vowel's formants; computed every 5 ms, held in between.
    hop = sample_rate // 200
    frames = np.arange(0, n, hop)
    vowels = VOWELS[rng.integers(len(VOWELS), size=n_syl)] * speaker.formant_scale
    formants = vowels[syl[frames]]                                            # [F, 3]
    k = np.arange(1, N_HARMONICS + 1, dtype=np.float32)[:, None]
    freqs = k * f0[None, frames].astype(np.float32)                          # [K, F]
    gain = 0.05 + sum(1.0 / (1.0 + ((freqs - formants[None, :, j]) / FORMANT_BANDWIDTHS[j]) ** 2)
                      for j in range(3))
    gain = np.where(freqs < sample_rate / 2 - 200, gain / k, 0.0)
    gain = np.repeat(gain, hop, axis=1)[:, :n]
    voice = (gain * np.sin(k * phase[None, :].astype(np.float32))).sum(axis=0) * envelope

    burst = inside * np.exp(-40.0 * pos) * rng.normal(0.0, 0.3, n)        # consonant onsets
    wave = voice / (np.sqrt(np.mean(voice[voiced] ** 2)) + 1e-8) + burst
    wave = energy * wave / 3.0 + rng.normal(0.0, 0.002, n)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def generate(*, utterances_per_speaker: int, seed: int, sample_rate: int,
             duration_range: tuple[float, float], label_noise: float
             ) -> list[tuple[dict[str, Any], np.ndarray]]:
    """The corpus as ``(record, waveform)`` pairs; the record's ``audio`` is a relative path."""
    rng = np.random.default_rng(seed)
    items = []
    for speaker in make_speakers(rng):
        g = speaker.gender
        dialogs = [f"{speaker.session}{g}_impro01", f"{speaker.session}{g}_impro02",
                   f"{speaker.session}{g}_script01", f"{speaker.session}{g}_script02"]
        clock = dict.fromkeys(dialogs, 0.0)
        labels = rng.choice(len(CLASSES), size=utterances_per_speaker, p=CLASS_PRIORS)
        for i, label_index in enumerate(labels):
            label = CLASSES[label_index]
            dialog = dialogs[i % len(dialogs)]
            utt_id = f"{dialog}_{g}{i // len(dialogs):03d}"
            duration = float(rng.uniform(*duration_range))
            text = sentence(portrayed(label, label_noise, rng), rng)
            wave = speech(portrayed(label, label_noise, rng), speaker, duration, sample_rate, rng)
            avd = np.clip(np.array(AVD_MEANS[label]) + rng.normal(0, AVD_NOISE, 3), 1.0, 5.0)
            start = clock[dialog] + float(rng.uniform(0.2, 1.0))
            clock[dialog] = start + duration
            items.append(({
                "id": utt_id, "speaker": speaker.name, "session": speaker.session,
                "text": text, "audio": f"wav/{dialog}/{utt_id}.wav", "label": label,
                "avd": [round(float(v), 3) for v in avd],
                "meta": {"dialog": dialog, "gender": g, "improvised": "impro" in dialog,
                         "start": round(start, 4), "end": round(start + duration, 4)},
            }, wave))
    return items
