"""Predicting with saved models: ``emoplug.load(MODEL_DIR)`` and ``emoplug predict``.

A model directory is one job's saved model (``model.json`` of kind ``model``, written by
:mod:`emoplug.train.saving`) or an ensemble exported by ``emoplug export`` (kind
``ensemble``: member model directories whose probabilities and AVD are averaged).

Loading reads JSON and safetensors only: the text encoder comes back through the same
``from_pretrained`` path as in training, from the saved directory, with ``trust_remote_code``
never set, and a directory holding a pickle-based file (``.bin``, ``.pt``, ...) is refused.

A model whose text encoder read transcripts made from speech (``source: asr``) transcribes
the audio of an utterance given without text with the same speech recogniser, through the
transcript cache (``emoplug.data.transcripts``).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emoplug.errors import EmoplugError, SettingError
from emoplug.model_folder import (
    AUDIO_DIR,
    MODEL_JSON,
    TEXT_DIR,
    TEXT_MODULE_PREFIX,
    WEIGHTS,
    read_model_json,
    refuse_pickles,
)
from emoplug.types import AVD_NAMES, Decoded


@dataclass
class Row:
    """One utterance to predict: an id, an audio file path and/or a transcript."""

    id: str
    audio: str | None = None
    text: str | None = None


def resolve_device(device: str) -> Any:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``, ..."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise EmoplugError(f"--device {device!r} is not a torch device (try cpu or cuda)") \
            from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise EmoplugError(f"--device {device}: no CUDA GPU is available")
    return chosen


class SavedModel:
    """One job's saved model, rebuilt from its directory on ``device``."""

    def __init__(self, folder: Path, manifest: dict[str, Any], device: Any):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from emoplug.recipe import audio_mode
        from emoplug.registry import get_registry
        from emoplug.train.model import CellModel, pretrained_keys

        registry = get_registry()
        components = manifest["components"]
        self.folder = folder
        self.device = device
        self.labels: list[str] = list(manifest["labels"])
        self.text_mode: str | None = manifest["text_mode"]
        self.batch_size = int(manifest.get("batch_size", 32))
        self.featurizer = (registry.build("audio", components["audio"])
                           if components["audio"] is not None else None)
        self.audio_mode = audio_mode(components["audio"])
        self.text_module = (self._build_text(components["text"])
                            if components["text"] is not None else None)
        #: the speech recogniser whose transcripts the text encoder read, if it read any
        self.recogniser = (registry.build("asr", components["text"]["asr"])
                           if (components["text"] or {}).get("source") == "asr" else None)
        audio_module = None
        if self.audio_mode in ("finetune", "staged"):  # the fine-tuned model, from audio/
            self.featurizer = self.featurizer.saved_featurizer(folder / AUDIO_DIR)
        if self.audio_mode == "finetune":
            try:
                audio_module = self.featurizer.build_waveform_encoder()
            except SettingError as exc:  # the saved folder, not a setting the user gave
                raise EmoplugError(exc.message) from None
        elif self.featurizer is not None:  # features: of the stage's model when staged
            audio_module = self.featurizer.build_encoder(int(manifest["audio_input_dim"]))
        # modality order matters (fusions concatenate in it): text first, as in training
        dims = {m: int(manifest["dims"][m]) for m in ("text", "audio") if m in manifest["dims"]}
        fusion = registry.build("fusion", components["fusion"]).build(
            dims, int(manifest["out_dim"]))
        model = CellModel(fusion, audio=audio_module)
        if self.text_mode == "finetune":
            model.text = self.text_module
        try:
            weights = load_file(str(folder / WEIGHTS))
        except (OSError, SafetensorError) as exc:  # missing, truncated or not safetensors
            raise EmoplugError(f"{folder / WEIGHTS}: cannot read the weights ({exc}); the "
                               "folder is damaged: export or save the model again") from None
        expected = model.state_dict()
        resized = [f"{k} {tuple(v.shape)} where {MODEL_JSON} builds {tuple(expected[k].shape)}"
                   for k, v in weights.items() if k in expected and v.shape != expected[k].shape]
        if resized:  # load_state_dict would raise a size-mismatch RuntimeError
            raise EmoplugError(f"{folder / WEIGHTS} does not match the model described in "
                               f"{MODEL_JSON}: {len(resized)} weight(s) of another size (e.g. "
                               f"{resized[0]}); are they from different cells? export the "
                               "model again")
        loaded = model.load_state_dict(weights, strict=False)
        speech = pretrained_keys(model, "audio") if self.audio_mode == "finetune" else set()
        missing = [k for k in loaded.missing_keys
                   if not k.startswith(TEXT_MODULE_PREFIX) and k not in speech]
        if missing or loaded.unexpected_keys:
            raise EmoplugError(f"{folder / WEIGHTS} does not match the model described in "
                               f"{MODEL_JSON} (missing {missing[:3]}, unexpected "
                               f"{loaded.unexpected_keys[:3]})")
        self.model = model.to(device).eval()
        self.approach = registry.build("approach", components["approach"])
        self.approach.load_state_dict(manifest["approach_state"])

    def _build_text(self, text_config: dict[str, Any]) -> Any:
        """The text encoder, rebuilt by its component from the saved ``text/`` folder."""
        from emoplug.registry import get_registry

        component = get_registry().build("text", text_config)
        try:
            return component.load(self.folder / TEXT_DIR).eval()
        except SettingError as exc:  # the saved folder, not a setting the user gave
            raise EmoplugError(exc.message) from None

    @property
    def needs_text(self) -> bool:
        return self.text_module is not None

    def _texts(self, rows: Sequence[Row]) -> list[str]:
        """Each row's text: the one given, else (a model reading ASR transcripts) its audio
        transcribed by the model's speech recogniser, through the transcript cache."""
        from emoplug.data.cache import FeatureCache
        from emoplug.data.transcripts import transcribe_corpus
        from emoplug.types import Utterance

        heard = [Utterance(str(i), "", "", audio=r.audio) for i, r in enumerate(rows)
                 if not _has_text(r)]
        if not heard:
            return [str(r.text) for r in rows]
        if self.recogniser is None:
            raise EmoplugError("the model reads text, but no text was given")
        made = transcribe_corpus(self.recogniser, heard, FeatureCache())
        if made.failed:
            raise EmoplugError(next(iter(made.failed.values())))
        return [str(r.text) if _has_text(r) else made.texts[str(i)]
                for i, r in enumerate(rows)]

    @property
    def needs_audio(self) -> bool:
        return self.featurizer is not None

    @property
    def input_key(self) -> str:
        """Which audio input the model reads: its featurizer's features, or (``finetune``)
        the waveform its speech model reads."""
        key = self.featurizer.cache_key()
        return f"{key}:waveform" if self.audio_mode == "finetune" else key

    def audio_input(self, waveform: np.ndarray) -> np.ndarray:
        """The model's audio input ``[frames, D]`` for one waveform at the featurizer's rate."""
        if self.audio_mode == "finetune":
            return self.featurizer.prepare_waveform(waveform)[:, None]
        return self.featurizer.featurize(waveform, self.featurizer.sample_rate)

    def decode(self, rows: Sequence[Row], features: Sequence[dict[str, np.ndarray]]
               ) -> Decoded:
        """Predictions for ``rows`` (in order); ``features[i]`` maps a featurizer's cache key
        to row ``i``'s audio features."""
        import torch

        from emoplug.train.data import Collator, Example, Loader
        from emoplug.train.loop import predict
        from emoplug.train.text_stage import encode_texts

        keys = [str(i) for i in range(len(rows))]
        texts = dict(zip(keys, self._texts(rows), strict=True)) if self.needs_text else {}
        cached = None
        if self.needs_text and self.text_mode != "finetune":  # staged/frozen: as in training
            cached = encode_texts(self.text_module, texts, self.batch_size, self.device)
        examples = []
        for key, feats in zip(keys, features, strict=True):
            example = Example(key, -1, (math.nan,) * 3)
            if self.needs_text:
                if cached is not None:
                    example.text_cached = cached[key]
                else:
                    example.text = texts[key]
            if self.featurizer is not None:
                array = feats[self.input_key]
                example.audio = lambda array=array: array
            examples.append(example)
        tokenize = self.text_module.tokenize if self.text_mode == "finetune" else None
        out = predict(self.model, Loader(examples, Collator(tokenize), self.batch_size, False),
                      self.device)
        order = torch.tensor([out.ids.index(k) for k in keys])
        return self.approach.decode(out.outputs[order])


class Predictor:
    """A loaded model directory (one model or an ensemble). ``predict(audio=, text=)``
    returns ``{"category", "probabilities", "avd"}``; ``predict_many`` runs batches."""

    def __init__(self, folder: Path, members: list[SavedModel], avd_scale: Sequence[float]):
        self.folder = folder
        self.members = members
        self.labels = members[0].labels
        for member in members[1:]:
            if member.labels != self.labels:
                raise EmoplugError(f"{member.folder}: label set {member.labels} differs from "
                                   f"{self.labels} of the other ensemble members")
        self.avd_scale = tuple(avd_scale)
        self.needs_text = any(m.needs_text for m in members)
        self.needs_audio = any(m.needs_audio for m in members)
        #: every member reading text can transcribe an utterance given as audio alone
        self.transcribes = self.needs_text and all(
            m.recogniser is not None for m in members if m.needs_text)
        self.audio_readers = {m.input_key: m for m in members if m.featurizer is not None}

    @property
    def predicts_avd(self) -> bool:
        return all(m.approach.predicts_avd for m in self.members)

    def features(self, row: Row) -> dict[str, np.ndarray]:
        """Check that ``row`` has what the model reads; compute its audio features."""
        from emoplug.data.audio import load_audio

        heard = self.needs_text and not _has_text(row)
        if heard and not self.transcribes:
            raise EmoplugError("the model reads text, but no text was given")
        if heard and not row.audio:
            raise EmoplugError("the model reads text transcribed from speech, but neither "
                               "text nor an audio file was given")
        if not (self.needs_audio or heard):
            return {}
        if not row.audio:
            raise EmoplugError("the model reads audio, but no audio file was given")
        if not Path(row.audio).is_file():
            raise EmoplugError(f"audio file {row.audio} not found")
        if heard:  # an unreadable file is this row's problem, found before transcribing
            for member in self.members:
                if member.recogniser is not None:
                    load_audio(row.audio, member.recogniser.sample_rate)
        out = {}
        for key, member in self.audio_readers.items():
            featurizer = member.featurizer
            waveform = load_audio(row.audio, featurizer.sample_rate)
            try:
                array = member.audio_input(waveform)
            except Exception as exc:  # e.g. audio too short for the featurizer's window
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise EmoplugError(f"audio file {row.audio}: {featurizer.name} features "
                                   f"failed ({reason})") from exc
            out[key] = np.asarray(array).astype(np.float32, copy=False)
        return out

    def predict(self, audio: str | Path | None = None, text: str | None = None
                ) -> dict[str, Any]:
        """The prediction for one utterance (raises :class:`EmoplugError` on bad input)."""
        row = Row("input", None if audio is None else str(audio), text)
        return self._combine([row], [self.features(row)])[0]

    def predict_many(self, rows: Sequence[Row], batch_size: int = 32, progress: bool = False
                     ) -> tuple[list[tuple[Row, dict[str, Any]]], list[tuple[Row, str]]]:
        """``(predicted, bad)``: ``(row, prediction)`` for every usable row, in order, and
        ``(row, reason)`` for the rows skipped for bad input."""
        predicted: list[tuple[Row, dict[str, Any]]] = []
        bad: list[tuple[Row, str]] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(rows), unit="utt", desc="predict", file=sys.stderr,
                       dynamic_ncols=True)
        for chunk in _chunks(rows, batch_size):
            good, features = [], []
            for row in chunk:
                try:
                    features.append(self.features(row))
                    good.append(row)
                except EmoplugError as exc:
                    bad.append((row, str(exc).splitlines()[0]))
            if good:
                predicted.extend(zip(good, self._combine(good, features), strict=True))
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return predicted, bad

    def _combine(self, rows: Sequence[Row], features: Sequence[dict[str, np.ndarray]]
                 ) -> list[dict[str, Any]]:
        """Every member's predictions; an ensemble averages probabilities and AVD and takes
        the most probable class (a majority vote when an approach gives no probabilities)."""
        decoded = [m.decode(rows, features) for m in self.members]
        if len(decoded) == 1:
            labels, probs, avd = decoded[0].labels, decoded[0].probs, decoded[0].avd
        else:
            probs = (np.mean([d.probs for d in decoded], axis=0)
                     if all(d.probs is not None for d in decoded) else None)
            votes = np.stack([d.labels for d in decoded], axis=1)
            labels = (probs.argmax(axis=1) if probs is not None else np.array(
                [np.bincount(v, minlength=len(self.labels)).argmax() for v in votes]))
            avd = (np.mean([d.avd for d in decoded], axis=0)
                   if all(d.avd is not None for d in decoded) else None)
        return [{
            "category": self.labels[int(labels[i])],
            "probabilities": (None if probs is None else
                              {c: float(p) for c, p in zip(self.labels, probs[i], strict=True)}),
            "avd": (None if avd is None else
                    {n: float(v) for n, v in zip(AVD_NAMES, avd[i], strict=True)}),
        } for i in range(len(rows))]


def format_prediction(result: dict[str, Any], avd_scale: Sequence[float],
                      one_line: bool = False) -> str:
    """A prediction as text: the category, class probabilities, and AVD when predicted."""
    parts = [("category", result["category"])]
    if result["probabilities"] is not None:
        parts.append(("probabilities", " ".join(
            f"{c}={p:.3f}" for c, p in result["probabilities"].items())))
    if result["avd"] is not None:
        low, high = avd_scale
        parts.append(("avd", " ".join(f"{n}={v:.2f}" for n, v in result["avd"].items())
                      + f" (scale {low:g}-{high:g})"))
    if one_line:
        return "\t".join(text for _, text in parts)
    return "\n".join(f"{name}: {text}" for name, text in parts)


def _has_text(row: Row) -> bool:
    return bool(row.text and row.text.strip())


def _chunks(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), max(1, size)):
        yield rows[start:start + size]


def load_model(model_dir: str | Path, device: str = "auto") -> Predictor:
    """Load a saved model or exported ensemble directory for prediction."""
    folder = Path(model_dir).expanduser()
    manifest = read_model_json(folder)
    refuse_pickles(folder)
    chosen = resolve_device(device)
    try:
        return _load(folder, manifest, chosen)
    except KeyError as exc:
        raise EmoplugError(f"{folder}: a {MODEL_JSON} lacks the key {exc}; the folder is "
                           "incomplete or was not written by emoplug") from None


def _load(folder: Path, manifest: dict[str, Any], chosen: Any) -> Predictor:
    """The model, or the ensemble's members, of ``folder`` on device ``chosen``."""
    if manifest.get("kind") == "ensemble":
        members = []
        for relative in manifest["members"]:
            member = (folder / relative).resolve()
            if folder.resolve() not in member.parents:
                raise EmoplugError(f"{folder / MODEL_JSON}: member {relative!r} lies outside "
                                   "the model directory")
            members.append(SavedModel(member, read_model_json(member), chosen))
    elif manifest.get("kind") == "model":
        members = [SavedModel(folder, manifest, chosen)]
    else:
        raise EmoplugError(f"{folder / MODEL_JSON}: unknown kind {manifest.get('kind')!r}")
    return Predictor(folder, members, manifest["avd_scale"])


def read_rows(path: Path) -> list[Row]:
    """Rows of a CSV manifest with columns ``id`` and ``audio`` and/or ``text``; relative
    audio paths are read from the manifest's folder."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or ())
            if "id" not in columns or not columns & {"audio", "text"}:
                raise EmoplugError(f"manifest {path}: needs columns id and audio and/or text "
                                   f"(found {', '.join(sorted(columns)) or 'none'})")
            records = list(reader)
    except (OSError, UnicodeDecodeError) as exc:
        raise EmoplugError(f"cannot read manifest {path}: {exc}") from None
    rows = []
    for record in records:
        audio = (record.get("audio") or "").strip() or None
        if audio is not None and not Path(audio).expanduser().is_absolute():
            audio = str(path.parent / audio)
        rows.append(Row(record["id"] or "", audio, record.get("text") or None))
    return rows
