"""Stand-in components for core tests (configs matter here, not models)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from emoplug import (
    Approach,
    AudioFeaturizer,
    ComponentConfig,
    Dataset,
    DatasetInfo,
    Fusion,
    Protocol,
    TextEncoder,
    TextEncoderConfig,
    hookimpl,
)


class FakeDatasetConfig(ComponentConfig):
    root: str = "/nowhere"
    sessions: int = Field(5, ge=1)


class FakeDataset(Dataset):
    name = "fakedata"
    Config = FakeDatasetConfig
    location_fields = ("root",)

    def describe(self) -> DatasetInfo:
        return DatasetInfo(tuple(f"S{i + 1}" for i in range(self.config.sessions)))


class FakeLosoConfig(ComponentConfig):
    subset: str = "all"


class FakeLoso(Protocol):
    name = "fakeloso"
    Config = FakeLosoConfig

    def fold_names(self, info: DatasetInfo) -> list[str]:
        return list(info.sessions)


def _text(family: str) -> type[TextEncoder]:
    class Config(TextEncoderConfig):
        pretrained: str = f"{family}-base"

    return type(family.capitalize(), (TextEncoder,), {"name": family, "Config": Config})


class FeatConfig(ComponentConfig):
    n: int = Field(40, ge=1)


def _audio(name: str) -> type[AudioFeaturizer]:
    return type(name.capitalize(), (AudioFeaturizer,), {"name": name, "Config": FeatConfig})


class AttentionConfig(ComponentConfig):
    attention: bool = True
    heads: int = Field(4, ge=1)


def _fusion(name: str, config: type = ComponentConfig) -> type[Fusion]:
    return type(name.capitalize(), (Fusion,), {"name": name, "Config": config})


class TwoStageConfig(ComponentConfig):
    mapper: Literal["logistic", "knn"] = "logistic"
    oracle: bool = False


def _approach(name: str, config: type = ComponentConfig) -> type[Approach]:
    cls = type(name.capitalize(), (Approach,), {"name": name, "Config": config})
    cls.predicts_avd: ClassVar[bool] = False
    return cls


TEXT = ["bert", "roberta", "xlnet", "albert", "electra", "deberta"]
AUDIO = ["mfcc", "spectrogram", "prosodic", "wav2vec"]


class FakePlugin:
    """Registers six text encoders, four featurizers, five fusions, two approaches."""

    @hookimpl
    def emoplug_register_text_encoders(self, register):
        for family in TEXT:
            register(_text(family))

    @hookimpl
    def emoplug_register_audio_featurizers(self, register):
        for name in AUDIO:
            register(_audio(name))

    @hookimpl
    def emoplug_register_fusions(self, register):
        for name in ("early", "late", "hybrid", "none"):
            register(_fusion(name))
        register(_fusion("attention", AttentionConfig))

    @hookimpl
    def emoplug_register_approaches(self, register):
        register(_approach("direct"))
        register(_approach("two_stage", TwoStageConfig))

    @hookimpl
    def emoplug_register_datasets(self, register):
        register(FakeDataset)

    @hookimpl
    def emoplug_register_protocols(self, register):
        register(FakeLoso)


def fake_registry():
    from emoplug.registry import Registry

    registry = Registry(load_entry_points=False)
    registry.add_plugin(FakePlugin(), "fake")
    return registry


FULL_GRID = {
    "name": "grid",
    "dataset": {"type": "fakedata", "root": "/data/a"},
    "protocol": {"type": "fakeloso"},
    "seeds": [0, 1, 2],
    "fusion": {"attention_noattn": {"type": "attention", "attention": False}},
    "approach": {"two_stage_oracle": {"type": "two_stage", "oracle": True}},
    "grid": {"text": TEXT, "audio": AUDIO, "fusion": ["early", "late", "hybrid", "attention"],
             "approach": ["direct", "two_stage"]},
    "extra": [
        *({"text": t, "approach": a} for t in TEXT for a in ("direct", "two_stage")),
        *({"audio": f, "approach": a} for f in AUDIO for a in ("direct", "two_stage")),
        {"text": "roberta", "audio": "mfcc", "fusion": "attention_noattn", "approach": "direct"},
        {"text": "roberta", "approach": "two_stage_oracle"},
    ],
}


def fake_hub_cache(monkeypatch, root, names) -> None:
    """Point the Hugging Face cache at ``root``, holding a ``config.json`` for each hub name."""
    from huggingface_hub import constants

    for name in names:
        repo = root / f"models--{name.replace('/', '--')}"
        snapshot = repo / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
