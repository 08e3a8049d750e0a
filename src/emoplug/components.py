"""Base classes of the seven component kinds: the contract a plugin implements.

A component is a class with a unique ``name`` and a pydantic ``Config`` model. The registry
validates a recipe's mapping with ``Config`` and calls ``cls(config)``. Component classes must
be light to import: import torch / transformers / librosa inside methods.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from emoplug.errors import SettingError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from emoplug.cache_size import CacheLayout
    from emoplug.types import Corpus, DatasetInfo, Decoded, Fold, Targets


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Component:
    """Common base: ``name`` (unique within its kind) and ``Config`` (pydantic model)."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]] = ComponentConfig

    def __init__(self, config: BaseModel | None = None):
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled), with ``type`` first."""
        return {"type": self.name, **self.config.model_dump(mode="json")}

    def check(self) -> list[SettingError]:
        """Problems that would stop this component from working, found without running it
        (a checkpoint that is not there; a missing package is ``unavailable_reason``'s): one
        :class:`emoplug.SettingError` each, naming the setting. ``emoplug validate`` and
        ``emoplug run`` call it before anything runs. Must be quick; none by default."""
        return []

    def fingerprint(self, version: str = "") -> str:
        """A stable hash of name + resolved config (+ a code version), for cache keys."""
        payload = json.dumps([self.config_dict(), version], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    @classmethod
    def unavailable_reason(cls, config: BaseModel | None = None) -> str | None:
        """Why the component cannot run here, as one line that says what to install; None
        when it can. ``config`` None asks about the component as a whole (``emoplug
        plugins``); a validated config asks about that configuration (recipe validation),
        so an option that needs an optional package can be refused alone. Must be cheap:
        look packages up with :func:`missing_package`, do not import them."""
        return None


def missing_package(module: str, install: str) -> str | None:
    """None when the top-level ``module`` can be imported, else ``needs <module>, which is
    not installed: <install>`` (e.g. ``install='pip install "emoplug[praat]"'``). Finds the
    module without importing it; a module blocked in ``sys.modules`` counts as missing."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"needs {module}, which is not installed: {install}"


@contextmanager
def recipe_key(key: str) -> Iterator[None]:
    """Place the :class:`SettingError` raised inside under the recipe key ``key`` (the entry
    that holds the component, e.g. ``text.minilm``)."""
    try:
        yield
    except SettingError as exc:
        located = exc.at(key)
        if located is exc:
            raise
        raise located from None


class Dataset(Component):
    """Reads a corpus.

    ``location_fields`` names config fields that say *where* the data is (e.g. ``root``), not
    *what* it is; they are left out of job ids so a recipe gives the same ids on every machine.
    """

    location_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> DatasetInfo:
        """Sessions (and speakers) known without reading the corpus; used by ``emoplug plan``."""
        raise NotImplementedError

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        """Read the corpus. Audio is checked only when ``need_audio``; unreadable items are
        skipped and counted in ``Corpus.skipped``; a root that is not this dataset raises
        :class:`emoplug.EmoplugError` with a one-line message."""
        raise NotImplementedError


class Protocol(Component):
    """Splits a corpus into folds."""

    def fold_names(self, info: DatasetInfo) -> list[str]:
        """The fold names this protocol will produce, known before the corpus is read."""
        raise NotImplementedError

    def folds(self, corpus: Corpus) -> list[Fold]:
        """Deterministic folds; no utterance in two of train/dev/test."""
        raise NotImplementedError


class TextEncoderConfig(ComponentConfig):
    """Settings every text encoder has. ``mode``: ``finetune`` trains the encoder in every
    cell; ``frozen`` caches its outputs once; ``staged`` fine-tunes it once per (fold, seed)
    with a text-only head, then caches its outputs for every cell of that fold and seed."""

    pretrained: str
    mode: Literal["finetune", "frozen", "staged"] = "finetune"
    max_length: int = Field(128, gt=0)
    lr: float | None = Field(None, gt=0, description="learning rate; default train.encoder_lr")
    stage_objective: Literal["multitask", "category", "avd"] = Field(
        "multitask", description="staged mode: what the text-only head of the per-fold "
        "fine-tuning is trained on")
    source: Literal["gold", "asr"] = Field(
        "gold", description="the transcripts encoded: gold (the corpus's own) or asr "
        "(made from the audio by the speech recogniser `asr`)")
    asr: dict[str, Any] | None = Field(
        None, description="source asr: the speech recogniser, {type: whisper, ...settings} "
        "(type defaults to whisper); validated by that recogniser's config")

    @model_validator(mode="after")
    def _asr_only_for_asr_source(self) -> TextEncoderConfig:
        if self.asr is not None and self.source != "asr":
            raise ValueError("asr settings are given but source is gold; set source: asr")
        return self

    @model_serializer(mode="wrap")
    def _gold_left_out(self, handler: Any) -> dict[str, Any]:
        """The resolved config without ``source``/``asr`` when the source is gold, so the
        ids and cache keys of gold-transcript cells are those they had before the setting
        existed (an absent ``source`` reads as gold)."""
        data = handler(self)
        if self.source == "gold":
            data.pop("source", None)
            data.pop("asr", None)
        return data


class TextEncoder(Component):
    """Builds a trainable text encoder module."""

    Config: ClassVar[type[TextEncoderConfig]] = TextEncoderConfig

    def build(self, *, texts: Sequence[str], work_dir: Path) -> torch.nn.Module:
        """Return an ``nn.Module`` with attribute ``dim`` and methods
        ``tokenize(list[str]) -> dict[str, Tensor]`` (dynamic padding) and
        ``forward(**tokens) -> Encoded``. ``texts`` (the corpus transcripts) and ``work_dir``
        (a writable cache folder) serve encoders that build a tokenizer, e.g. tiny models."""
        raise NotImplementedError

    def save(self, module: torch.nn.Module, folder: Path) -> None:
        """Write a trained module built by :meth:`build` into ``folder`` (created empty by
        the caller), as safetensors and JSON only, so that :meth:`load` rebuilds it without
        the corpus. The default writes the module's weights to ``weights.safetensors``;
        an encoder whose architecture depends on the corpus texts (a tokenizer trained on
        them) overrides both methods."""
        from safetensors.torch import save_model

        save_model(module, str(folder / "weights.safetensors"))

    def load(self, folder: Path) -> torch.nn.Module:
        """Rebuild the module :meth:`save` wrote to ``folder``. The default builds the
        module from this config (with no texts) and loads ``weights.safetensors`` into it."""
        import tempfile

        from safetensors.torch import load_model

        with tempfile.TemporaryDirectory(prefix="emoplug-load-") as work_dir:
            module = self.build(texts=[], work_dir=Path(work_dir))
        load_model(module, str(folder / "weights.safetensors"))
        return module


class SpeechRecogniser(Component):
    """Turns speech into text (a text encoder's ``source: asr``). Its transcripts are cached
    per audio file and :meth:`cache_key`, so a corpus is transcribed once per recogniser
    config; subclasses bump ``version`` when their output changes."""

    version: ClassVar[str] = "1"
    sample_rate: int = 16000

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """One transcript per mono float32 waveform at ``self.sample_rate``, in order."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """Names the transcripts of this config: every setting is part of it."""
        return f"{self.name}-{self.fingerprint(self.version)}"


class AudioFeaturizer(Component):
    """A deterministic waveform -> ``[frames, dim]`` function and its default trainable encoder.

    Subclasses bump ``version`` when their output changes, which invalidates cached features.
    """

    version: ClassVar[str] = "1"
    sample_rate: int = 16000

    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """Features of one mono float32 waveform at ``sample_rate`` (== ``self.sample_rate``)."""
        raise NotImplementedError

    def featurize_many(self, waveforms: Sequence[np.ndarray],
                       sample_rate: int) -> list[np.ndarray]:
        """Features of several waveforms, each as ``featurize`` gives it alone (within
        floating-point tolerance). The default runs them one by one; a featurizer that pads
        them into one batch (a speech encoder on a GPU) overrides it and sets
        :meth:`batch_size`."""
        return [self.featurize(waveform, sample_rate) for waveform in waveforms]

    def batch_size(self) -> int:
        """How many waveforms :func:`emoplug.data.features.featurize_corpus` hands
        :meth:`featurize_many` at once (1 by default)."""
        return 1

    def cache_layout(self) -> CacheLayout | None:
        """The shape and dtype of what ``featurize`` returns, for ``emoplug plan``'s cache
        size estimate; None when it cannot be told without featurizing."""
        return None

    def cache_key(self) -> str:
        return f"{self.name}-{self.fingerprint(self.version)}"

    def build_encoder(self, input_dim: int) -> torch.nn.Module:
        """A trainable module with attribute ``dim``; ``forward(features [B,T,D], mask [B,T])
        -> Encoded``."""
        raise NotImplementedError

    def prepare_waveform(self, waveform: np.ndarray) -> np.ndarray:
        """For a featurizer whose config has ``mode: finetune`` or ``staged`` (its model
        trains): the model's input ``[samples]`` float32 for one mono waveform at
        ``self.sample_rate`` (normalised, padded as the model needs)."""
        raise NotImplementedError

    def build_waveform_encoder(self) -> torch.nn.Module:
        """For ``mode: finetune`` or ``staged``: a trainable module with attribute ``dim``,
        ``forward(waveforms [B,S,1], mask [B,S]) -> Encoded`` (prepared waveforms, zero
        padded), ``pretrained_parameters()`` (trained at the encoder learning rate) and
        ``frames(waveforms, mask) -> (features [B,F,D], mask [B,F])``: what its encoder
        reads, which a ``staged`` fine-tuning saves as the cells' features."""
        raise NotImplementedError

    def save_waveform_encoder(self, module: torch.nn.Module, folder: Path) -> None:
        """For ``mode: finetune`` with ``train.save: best``: write the trained speech model
        of ``module`` (a :meth:`build_waveform_encoder` module: its
        ``pretrained_parameters()``) into ``folder`` (created empty by the caller), as
        safetensors and JSON only; emoplug saves the module's other weights itself."""
        raise NotImplementedError

    def saved_featurizer(self, folder: Path) -> AudioFeaturizer:
        """This featurizer reading its speech model from ``folder`` (written by
        :meth:`save_waveform_encoder`): its ``build_waveform_encoder()`` has the trained
        weights, its ``prepare_waveform`` prepares waveforms as in training."""
        raise NotImplementedError


class Fusion(Component):
    """Combines the modalities' encodings into approach outputs."""

    def build(self, input_dims: dict[str, int], out_dim: int) -> torch.nn.Module:
        """``forward(dict[str, Encoded]) -> Tensor [B, out_dim]``. ``input_dims`` maps
        modality (``text``/``audio``) to the encoder's ``dim``."""
        raise NotImplementedError


class Approach(Component):
    """Turns model outputs into a loss and predictions. One instance serves one job.

    Lifecycle: ``prepare`` (before training, sees the training targets) -> ``loss`` per batch
    -> ``fit`` (after training, sees outputs on the training set, in-sample or out of fold:
    ``out_of_fold_splits``) -> ``decode``.
    """

    #: True when the approach predicts valence/arousal/dominance.
    predicts_avd: ClassVar[bool] = False

    def prepare(self, labels: Sequence[str], avd_scale: tuple[float, float],
                train_targets: Targets) -> int:
        """Remember the label set and target statistics; return the output size."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, train_outputs: torch.Tensor | None, train_targets: Targets) -> None:
        """Second stage, fitted on the training fold after the network trained (optional).
        ``train_outputs`` is None when ``fit_uses_outputs`` says it is not needed; else its
        row i belongs to row i of ``train_targets``."""

    def fit_uses_outputs(self) -> bool:
        """Whether ``fit`` reads the network's outputs on the training set; when not, they
        are not computed (a second stage fitted on gold targets alone)."""
        return True

    def out_of_fold_splits(self) -> int:
        """Where the training-set outputs ``fit`` reads come from (when it reads any). 0: the
        job's network, which trained on them (in-sample). k >= 2: out of fold: the training
        split is divided into k speaker-grouped folds (at most one per speaker) and each fold
        is predicted by a fresh network of the cell trained on the others, as the job's
        network never saw its test speakers. Costs k extra trainings per job."""
        return 0

    def decode(self, outputs: torch.Tensor, targets: Targets | None = None) -> Decoded:
        """Predictions for a batch. ``targets`` is given at evaluation for oracle ablations."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (statistics, fitted mapper) needed to decode after loading."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
