"""The ``demo`` dataset: a small synthetic IEMOCAP-shaped corpus generated on first use.

Generated into ``<cache_dir>/demo/<config fingerprint>/`` (``utterances.jsonl`` plus
``wav/<dialog>/<utt>.wav``, PCM16) in a few seconds, then reused. It needs no download; see
:mod:`emoplug_data.demo_synth` for how it is made. It is synthetic: results on it say that a
pipeline works, not how well a model recognises emotion.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from emoplug import ComponentConfig, Corpus, Dataset, DatasetInfo, Utterance
from emoplug.files import honour_umask_tree
from emoplug_data.common import audio_problem

#: Bump when generation changes, so cached corpora are regenerated.
GENERATOR_VERSION = "1"
INDEX = "utterances.jsonl"


class DemoConfig(ComponentConfig):
    utterances_per_speaker: int = Field(40, ge=4, description="10 speakers: 400 by default")
    seed: int = 0
    sample_rate: int = Field(16000, ge=8000)
    min_duration: float = Field(1.0, gt=0, description="seconds")
    max_duration: float = Field(2.5, gt=0, description="seconds")
    label_noise: float = Field(
        0.1, ge=0, le=1, description="chance that a modality portrays another class")

    @model_validator(mode="after")
    def _durations(self) -> DemoConfig:
        if self.min_duration > self.max_duration:
            raise ValueError("min_duration must not exceed max_duration")
        return self


class DemoDataset(Dataset):
    """Synthetic four-class corpus: text carries valence, audio carries arousal."""

    name: ClassVar[str] = "demo"
    Config: ClassVar[type[DemoConfig]] = DemoConfig

    def describe(self) -> DatasetInfo:
        from emoplug_data.demo_synth import GENDERS, SESSIONS

        return DatasetInfo(sessions=SESSIONS,
                           speakers=tuple(f"{s}_{g}" for s in SESSIONS for g in GENDERS))

    def folder(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "demo" / self.fingerprint(GENERATOR_VERSION)

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        from emoplug_data.demo_synth import CLASSES

        folder = self.folder(cache_dir)
        if (folder / INDEX).is_file() and need_audio and self._damaged(folder):
            self._discard(folder)
        if not (folder / INDEX).is_file():
            self._generate(folder)
        corpus = Corpus("demo", CLASSES, [], avd_scale=(1.0, 5.0),
                        meta={"synthetic": True, "folder": str(folder)})
        for line in (folder / INDEX).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            audio = folder / record["audio"]
            problem = audio_problem(audio, corpus) if need_audio else None
            if problem:
                corpus.skip(problem, str(audio))
                continue
            corpus.utterances.append(Utterance(
                id=record["id"], speaker=record["speaker"], session=record["session"],
                text=record["text"], audio=str(audio), label=record["label"],
                avd=tuple(record["avd"]), meta=record["meta"]))
        return corpus

    def _damaged(self, folder: Path) -> bool:
        """Whether a WAV of the generated corpus is missing or unreadable (a damaged cache:
        the corpus is regenerated, as a corrupt feature cache entry is recomputed)."""
        for line in (folder / INDEX).read_text(encoding="utf-8").splitlines():
            if audio_problem(folder / json.loads(line)["audio"]):
                return True
        return False

    def _discard(self, folder: Path) -> None:
        """Move a damaged corpus aside (one process wins the rename) and delete it."""
        aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".damaged-{folder.name}-"))
        try:
            os.rename(folder, aside / folder.name)
            print(f"emoplug: warning: demo corpus {folder} has damaged audio; regenerating",
                  file=sys.stderr)
        except OSError:
            pass  # another process moved it first
        shutil.rmtree(aside, ignore_errors=True)

    def _generate(self, folder: Path) -> None:
        """Write the corpus into a temporary sibling folder, then rename it into place."""
        import soundfile

        from emoplug_data.demo_synth import generate

        cfg = self.config
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
        try:
            items = generate(utterances_per_speaker=cfg.utterances_per_speaker, seed=cfg.seed,
                             sample_rate=cfg.sample_rate,
                             duration_range=(cfg.min_duration, cfg.max_duration),
                             label_noise=cfg.label_noise)
            lines = []
            for record, wave in items:
                path = tmp / record["audio"]
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(path), wave, cfg.sample_rate, subtype="PCM_16")
                lines.append(json.dumps(record, sort_keys=True))
            (tmp / INDEX).write_text("\n".join(lines) + "\n", encoding="utf-8")
            (tmp / "config.json").write_text(
                json.dumps(self.config_dict(), indent=2, sort_keys=True), encoding="utf-8")
            try:
                honour_umask_tree(tmp)
                os.rename(tmp, folder)
            except OSError:
                if not (folder / INDEX).is_file():  # not a concurrent writer that won: re-raise
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
