"""A battery of bad or odd inputs through the ``emoplug`` command line, each in a subprocess
as a new user would type it, and how each is answered.

The battery is generated: recipe keys with wrong values, manifests (encodings, headers,
separators, rows, labels, AVD values, sessions), WAV files (missing, empty, foreign, cut
short, NaN), environment variables, command-line flags, run folders (damaged, mixed, busy)
and the storage (a full disk or a read-only file system, injected into the process). Every
case says what a good answer is: an ``error:`` line naming the file/key/line (``expect``
substrings) with its exit code, a ``warning:`` line, or a clean run whose output names what
was skipped. Each outcome is classified:

- GOOD: the expected answer, in one line (no other line on stderr for an error);
- TRACEBACK: a Python traceback anywhere in the output;
- SILENT: exit 0 with nothing said where an error or a warning was due;
- WRONG: anything else (another exit code, a line that does not name the problem, several
  lines, or a file written where nothing should be).

Writes ``benchmarks/results/bad_inputs.json``: the tally, one row per case, the command and
the commit tested. Takes a few minutes (one process start per case): ``python
benchmarks/bad_inputs.py``; ``--against DIR`` runs the battery against another checkout (the
code before a fix, say) and ``--out`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_report  # noqa: E402

ERROR, WARNING, OK = "error", "warning", "ok"

TINY = """\
name: tiny
dataset: {type: demo, utterances_per_speaker: 4}
protocol: {type: kfold, k: 2}
train: {epochs: 1, save: best}
audio: {mfcc: {type: mfcc}}
fusion: {small: {type: none, hidden: 8}}
grid: {audio: [mfcc], fusion: [small], approach: [direct]}
"""
MANIFEST = """\
name: m
dataset: {type: manifest, path: m.csv}
protocol: {type: loso}
text: {bert: {type: bert, tiny: true}}
grid: {text: [bert], approach: [direct]}
"""
AUDIO_MANIFEST = MANIFEST.replace("text: {bert: {type: bert, tiny: true}}",
                                  "audio: {mfcc: {type: mfcc}}").replace("text: [bert]",
                                                                          "audio: [mfcc]")
COLUMNS = ["id", "speaker", "session", "text", "label", "valence", "arousal", "dominance"]
LABELS = ["happy", "sad", "angry", "neutral"]

#: a process whose predictions writer (``job_files.write_predictions``) or text stage record
#: writer (``text_stage.write_json_atomic``) fails as on a full disk or read-only file system
INJECT = """\
import errno, os, sys
from emoplug.train import job_files, text_stage
write_json = text_stage.write_json_atomic
def fail(path, *args):
    if "{target}" == "predictions" or path.name == "stage.json":
        raise OSError(errno.{errno}, os.strerror(errno.{errno}), str(path))
    return write_json(path, *args)
job_files.write_predictions = fail if "{target}" == "predictions" else job_files.write_predictions
text_stage.write_json_atomic = fail if "{target}" == "stage" else write_json
from emoplug.cli import main
sys.argv = ["emoplug", *sys.argv[1:]]
main()
"""
STAGED = TINY.replace("name: tiny", "name: staged").replace(
    "audio: {mfcc: {type: mfcc}}", "text: {bert: {type: bert, tiny: true, mode: staged}}").replace(
    "grid: {audio: [mfcc], fusion: [small], approach: [direct]}",
    "grid: {text: [bert], approach: [direct]}")


@dataclass
class Case:
    """One input: the command's arguments (``argv`` after ``emoplug``), what a good answer
    is (``kind``: error/warning/ok; ``code``; substrings the answer's line must hold) and a
    path that must not exist afterwards (``untouched``)."""

    id: str
    group: str
    argv: list[str]
    kind: str
    expect: list[str]
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    untouched: str | None = None
    inject: str | None = None


def rows(n: int = 40, **change: str) -> list[list[str]]:
    """``n`` manifest rows over 4 speakers (one session each) and 4 balanced labels;
    ``r<i>_<column>=value`` changes one cell."""
    out = [[f"u{i}", f"spk{i % 4}", f"S{i % 4}", f"words of utterance {i}", LABELS[i % 4],
            "3.0", "2.0", "4.0"] for i in range(n)]
    for key, value in change.items():
        index, column = key.rsplit("_", 1)
        out[int(index[1:])][COLUMNS.index(column)] = value
    return out


def csv_text(body: list[list[str]], header: list[str] = COLUMNS, delimiter: str = ",") -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue()


class Battery:
    """Builds the inputs under ``work`` and lists the cases."""

    def __init__(self, work: Path):
        self.work = work
        self.cases: list[Case] = []
        self.tiny = self.write("tiny.yaml", TINY)

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def add(self, group: str, name: str, argv: list[Any], kind: str, *expect: str,
            **options: Any) -> None:
        self.cases.append(Case(f"{group}/{name}", group, [str(a) for a in argv], kind,
                               list(expect), **options))

    def manifest(self, name: str, body: str | bytes, recipe: str = MANIFEST,
                 suffix: str = ".csv") -> Path:
        """A folder ``name`` with the manifest ``m<suffix>`` and a recipe reading it."""
        self.write(f"{name}/m{suffix}", body)
        return self.write(f"{name}/m.yaml", recipe.replace("m.csv", f"m{suffix}"))

    # ---- recipe keys -------------------------------------------------------------------

    def recipe_keys(self) -> None:
        bad_values = {
            "train.epochs": ["-1", "many", "0", "[1]"], "train.lr": ["fast", "-0.1"],
            "train.batch_size": ["0", "big"], "train.patience": ["-2"],
            "train.mixed_precision": ["fp8"], "train.save": ["everything"],
            "seeds": ["[-1]", "[a]", "[]", "[0, 0]"], "name": ["'bad name!'", "''"],
            "dataset.type": ["demoo", "[a]"], "protocol.type": ["losoo"],
            "protocol.k": ["1"], "dataset.utterances_per_speaker": ["1"],
            "audio.mfcc.type": ["mfccc"], "fusion.small.hidden": ["-4"],
            "fusion.small.type": ["nonee"], "grid.approach": ["[directt]"],
            "grid.audio": ["[mfc]"], "grid.fusion": ["[smal]"],
        }
        for key, values in bad_values.items():
            for i, value in enumerate(values):
                self.add("recipe", f"{key}={value}#{i}", ["validate", self.tiny, f"{key}={value}",
                                                          "--no-data"], ERROR, key)
        for key in ("bogus", "train.bogus", "audio.mfcc.bogus", "dataset.bogus"):
            self.add("recipe", f"unknown {key}", ["validate", self.tiny, f"{key}=1",
                                                  "--no-data"], ERROR, key)
        self.add("recipe", "override without =", ["validate", self.tiny, "train.epochs",
                                                  "--no-data"], ERROR, "train.epochs")
        self.add("recipe", "override before recipe", ["validate", "seeds=[0]", self.tiny],
                 ERROR, "RECIPE comes first")
        self.add("recipe", "override creates unused entry",
                 ["validate", self.tiny, "audio.spec.n_mels=20", "--no-data"], ERROR,
                 "audio.spec")
        texts = {
            "not yaml": ("name: [x\n", "not valid YAML"),
            "a list": ("- a\n- b\n", "a recipe is a YAML mapping"),
            "duplicate key": (TINY + "name: again\n", "name"),
            "unset variable": (TINY.replace("kfold", '"${NO_SUCH_VAR_XYZ}"'), "NO_SUCH_VAR_XYZ"),
            "grid of nulls": (TINY.replace("grid: {audio: [mfcc], fusion: [small], ",
                                           "grid: {text: [null], audio: [null], "),
                              "the grid gives no cells"),
            "no cells": (TINY.replace("grid: {audio: [mfcc], fusion: [small], "
                                      "approach: [direct]}", ""), "no cells"),
            "empty grid no extra": (TINY.replace("approach: [direct]", "approach: []"),
                                    "grid.approach"),
            "extra without modality": (TINY + "extra: [{approach: direct}]\n", "extra[0]"),
            "attention 10/3": (TINY.replace("fusion: {small: {type: none, hidden: 8}}",
                                            "fusion: {att: {type: attention, dim: 10, heads: 3}}\n"
                                            "text: {bert: {type: bert, tiny: true}}")
                               .replace("grid: {audio: [mfcc], fusion: [small]",
                                        "grid: {text: [bert], audio: [mfcc], fusion: [att]"),
                               "fusion.att.heads"),
            "attention 64/5": (TINY.replace("fusion: {small: {type: none, hidden: 8}}",
                                            "fusion: {att: {type: attention, dim: 64, heads: 5}}\n"
                                            "text: {bert: {type: bert, tiny: true}}")
                               .replace("grid: {audio: [mfcc], fusion: [small]",
                                        "grid: {text: [bert], audio: [mfcc], fusion: [att]"),
                               "fusion.att.heads"),
            "none with two modalities": (TINY + "text: {bert: {type: bert, tiny: true}}\n"
                                         "extra: [{text: bert, audio: mfcc, fusion: small, "
                                         "approach: direct}]\n", "takes one modality"),
            "unknown extra protocol": (TINY + "extra: [{audio: mfcc, approach: direct, "
                                       "protocol: nope}]\n", "extra[0].protocol"),
        }
        texts["iemocap merge onto a label not kept"] = (
            "name: iem\ndataset: {type: iemocap, root: /nowhere, merge: {excited: hapy}}\n"
            "text: {bert: {type: bert, tiny: true}}\ngrid: {text: [bert], approach: [direct]}\n",
            "dataset.merge.excited")
        for name, (text, expect) in texts.items():
            self.add("recipe", name, ["validate", self.write(f"r/{name}.yaml", text),
                                      "--no-data"], ERROR, expect)
        self.add("recipe", "missing file", ["validate", self.work / "nope.yaml"], ERROR,
                 "nope.yaml", "file not found")
        self.add("recipe", "folder as recipe", ["validate", self.work], ERROR,
                 "is a directory")
        self.add("recipe", "latin-1 recipe", ["validate", self.write(
            "r/latin.yaml", TINY.encode() + "description: caf\u00e9\n".encode("latin-1"))],
            ERROR, "latin.yaml")
        self.add("recipe", "cache_dir is a file", ["validate", self.tiny,
                                                   f"cache_dir={self.tiny}"], ERROR,
                 "cache_dir", "not a folder")
        unused = TINY.replace("fusion: [small]", "fusion: [late2]").replace(
            "fusion: {small:", "fusion: {late2: {type: late}, small:")
        self.add("recipe", "unused grid fusion", ["plan", self.write("r/unused.yaml", unused)],
                 WARNING, "'late2' is not used", code=0)
        extra_only = TINY.replace("approach: [direct]}", "approach: []}\nextra: [{audio: "
                                  "mfcc, approach: direct}]")
        self.add("recipe", "extra cells only", ["validate", self.write("r/extra.yaml",
                                                                       extra_only),
                                                "--no-data"], WARNING, "extra cells run",
                 code=0)

    # ---- manifests ---------------------------------------------------------------------

    def manifests(self) -> None:
        good = csv_text(rows())
        for line in (2, 7, 30):
            body = good.splitlines(keepends=True)
            body[line - 1] = body[line - 1].replace("words", "caf\u00e9 words")
            self.add("manifest", f"latin-1 line {line}", ["validate", self.manifest(
                f"m/latin{line}", "".join(body).encode("latin-1"))], ERROR,
                f"line {line}", "not UTF-8")
        self.add("manifest", "BOM", ["validate", self.manifest(
            "m/bom", good.encode("utf-8-sig"))], OK, "40 utterances", code=0)
        for column in COLUMNS[1:]:
            header = [c if c != column else "id" for c in COLUMNS]
            self.add("manifest", f"duplicate header id/{column}", ["validate", self.manifest(
                f"m/dup-{column}", csv_text(rows(), header))], ERROR, "duplicate column 'id'")
        for line in (2, 7, 41):
            body = good.splitlines(keepends=True)
            body[line - 1] = body[line - 1].replace("words of", "words, of")
            self.add("manifest", f"unquoted comma line {line}", ["validate", self.manifest(
                f"m/comma{line}", "".join(body))], ERROR, f"line {line}",
                "9 fields, the header has 8")
        for line in (3, 20):
            body = good.splitlines(keepends=True)
            body[line - 1] = body[line - 1].rstrip("\n") + ",surplus,more\n"
            self.add("manifest", f"extra fields line {line}", ["validate", self.manifest(
                f"m/extra{line}", "".join(body))], ERROR, f"line {line}", "10 fields")
            body = good.splitlines(keepends=True)
            body[line - 1] = body[line - 1].rsplit(",", 2)[0] + "\n"
            self.add("manifest", f"missing fields line {line}", ["validate", self.manifest(
                f"m/short{line}", "".join(body))], ERROR, f"line {line}", "6 fields")
        for delimiter, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            self.add("manifest", f"{name}-separated", ["validate", self.manifest(
                f"m/sep-{name}", csv_text(rows(), delimiter=delimiter))], WARNING,
                f"{name}-separated", code=0)
        for size in (100_000, 140_000, 400_000):
            self.add("manifest", f"text cell of {size} characters", ["plan", self.manifest(
                f"m/big{size}", csv_text(rows(r3_text="w" * size)))], OK, "jobs", code=0)
        for value in ("NaN", "nan", "None", "null", "N/A"):
            self.add("manifest", f"label {value}", ["validate", self.manifest(
                f"m/missing-{value.replace('/', '')}", csv_text(rows(r0_label=value)))], OK,
                "no label: 1", code=0)
        for name, change in (("Happy", {"r0_label": "Happy"}), ("sad ", {"r1_label": "sad "}),
                             ("ANGRY", {"r2_label": "ANGRY"})):
            self.add("manifest", f"label {name!r} beside its lower case", ["validate",
                     self.manifest(f"m/case-{name.strip()}", csv_text(rows(**change)))],
                     WARNING, "differ only in case", code=0)
        for typo in ("hapy", "sadd", "angy"):
            self.add("manifest", f"rare label {typo}", ["validate", self.manifest(
                f"m/rare-{typo}", csv_text(rows(r5_label=typo)))], WARNING,
                f"{typo}: 1", code=0)
        for column, value in (("valence", "9.5"), ("arousal", "-3"), ("dominance", "6.5"),
                              ("valence", "-1")):
            self.add("manifest", f"{column} {value}", ["validate", self.manifest(
                f"m/avd-{column}{value}", csv_text(rows(**{f"r4_{column}": value})))],
                WARNING, "far outside avd_scale", code=0)
        for scale in ("0-100", "0-10"):
            top = 100 if scale == "0-100" else 10
            body = [r[:5] + [str(top * 0.6), str(top * 0.7), str(top * 0.8)] for r in rows()]
            self.add("manifest", f"AVD on a {scale} scale", ["validate", self.manifest(
                f"m/scale{top}", csv_text(body))], ERROR, "dataset.avd_scale")
        self.add("manifest", "non-numeric valence", ["validate", self.manifest(
            "m/avd-text", csv_text(rows(r4_valence="high")))], OK,
            "non-numeric valence/arousal/dominance: 1", code=0)
        for n in (1, 3):
            blanks = {f"r{i}_session": "" for i in range(1, 1 + 4 * n, 4)}
            self.add("manifest", f"{n} blank sessions", ["validate", self.manifest(
                f"m/blank{n}", csv_text(rows(**blanks)))], WARNING, "have no session", code=0)
        for label in ("fear", "Happy"):
            recipe = MANIFEST.replace("path: m.csv}",
                                      f"path: m.csv, labels: [happy, sad, angry, neutral, "
                                      f"{label}]}}")
            self.add("manifest", f"labels entry {label} never occurs", ["validate",
                     self.manifest(f"m/never-{label}", csv_text(rows()), recipe)], ERROR,
                     "dataset.labels", repr(label))
        for column in ("id", "speaker"):
            header = [c if c != column else f"my_{column}" for c in COLUMNS]
            self.add("manifest", f"no {column} column", ["validate", self.manifest(
                f"m/no-{column}", csv_text(rows(), header))], ERROR, f"'{column}'",
                "dataset.columns")
        no_text = [[r[0], r[1], r[2], f"{r[0]}.wav", r[4]] for r in rows()]
        self.add("manifest", "text cell, no text column", ["validate", self.manifest(
            "m/no-text", csv_text(no_text, ["id", "speaker", "session", "audio", "label"]))],
            ERROR, "dataset.columns.text")
        self.add("manifest", "empty file", ["validate", self.manifest("m/empty", "")], ERROR,
                 "m.csv", "no rows")
        self.add("manifest", "header only", ["validate", self.manifest(
            "m/header", csv_text([]))], ERROR, "m.csv", "no rows")
        self.add("manifest", "one label only", ["validate", self.manifest(
            "m/one-label", csv_text([r[:4] + ["sad"] + r[5:] for r in rows()]))], ERROR,
            "the label 'sad'")
        self.add("manifest", "repeated id", ["validate", self.manifest(
            "m/repeat", csv_text(rows(r7_id="u1")))], ERROR, "'u1'", "more than once")
        self.add("manifest", "path missing", ["validate", self.tiny.parent / "m/bom/m.yaml",
                                              "dataset.path=/no/such.csv"], ERROR,
                 "dataset.path", "/no/such.csv")
        self.add("manifest", "path is a folder", ["validate", self.tiny.parent / "m/bom/m.yaml",
                                                  f"dataset.path={self.work}"], ERROR,
                 "dataset.path", "is not a file")
        lines = [json.dumps(dict(zip(COLUMNS, r, strict=True))) for r in rows()]
        self.add("manifest", "jsonl malformed line", ["validate", self.manifest(
            "m/jsonl", "\n".join(lines[:5] + ["{not json"] + lines[5:]), suffix=".jsonl")],
            OK, "malformed line: 1", code=0)
        self.add("manifest", "jsonl latin-1", ["validate", self.manifest(
            "m/jsonl-latin", "\n".join(lines).replace("words", "caf\u00e9").encode("latin-1"),
            suffix=".jsonl")], ERROR, "line 1", "not UTF-8")

    # ---- WAV files -----------------------------------------------------------------------

    def wavs(self) -> None:
        import numpy as np
        import soundfile

        def folder(name: str, spoil) -> Path:
            base = self.work / "w" / name
            base.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(0)
            for i in range(40):
                soundfile.write(base / f"u{i}.wav", rng.normal(0, .1, 4000).astype("float32"),
                                16000, subtype="FLOAT" if name.startswith("nan") else "PCM_16")
            spoil(base)
            body = [[r[0], r[1], r[2], f"u{i}.wav", r[4]] for i, r in enumerate(rows())]
            return self.manifest(f"w/{name}", csv_text(body, ["id", "speaker", "session",
                                                              "audio", "label"]),
                                 AUDIO_MANIFEST)

        def rng_clip(samples: int) -> Any:
            return np.random.default_rng(1).normal(0, .1, samples).astype("float32")

        def cut(count: int):
            def spoil(base: Path) -> None:
                for i in range(count):
                    data = (base / f"u{i}.wav").read_bytes()
                    (base / f"u{i}.wav").write_bytes(data[:len(data) // 2])
            return spoil

        for count in (1, 3):
            self.add("wav", f"{count} cut off mid-data", ["validate", folder(f"cut{count}",
                                                                             cut(count))],
                     WARNING, f"{count} WAV file(s)", "cut off", code=0)
        self.add("wav", "missing", ["validate", folder("missing", lambda b: (
            b / "u3.wav").unlink())], ERROR, "do not exist", "u3.wav")
        self.add("wav", "empty file", ["validate", folder("empty", lambda b: (
            b / "u3.wav").write_bytes(b""))], OK, "unreadable WAV: 1", code=0)
        self.add("wav", "text as wav", ["validate", folder("text", lambda b: (
            b / "u3.wav").write_text("not audio"))], OK, "unreadable WAV: 1", code=0)
        self.add("wav", "header only", ["validate", folder("header", lambda b: (
            b / "u3.wav").write_bytes((b / "u3.wav").read_bytes()[:44]))], OK,
            "unreadable WAV: 1", code=0)
        self.add("wav", "NaN samples", ["validate", folder("nan", lambda b: soundfile.write(
            b / "u3.wav", np.full(4000, np.nan, dtype="float32"), 16000, subtype="FLOAT"))],
            OK, "NaN or infinite samples: 1", code=0)
        short = folder("short", lambda b: soundfile.write(
            b / "u3.wav", rng_clip(160), 16000))
        self.add("wav", "10 ms clip featurized", ["featurize", short], WARNING, "u3.wav",
                 "(10 ms)", code=0)
        self.add("wav", "folder named .wav", ["validate", folder("dir", lambda b: (
            (b / "u3.wav").unlink(), (b / "u3.wav").mkdir()))], ERROR, "u3.wav")

    # ---- environment variables -----------------------------------------------------------

    def environment(self) -> None:
        values = {"EMOPLUG_FEATURE_MEMORY": ["lots", "-1", "1.5", "4GB"],
                  "EMOPLUG_LEASE_TIMEOUT": ["soon", "0", "-5"],
                  "EMOPLUG_DEVICE_INPUTS": ["yes", "gpu"],
                  "EMOPLUG_THREADS": ["many", "0", "-2"]}
        for name, bad in values.items():
            for value in bad:
                out = self.work / "env" / f"{name}-{value}"
                self.add("env", f"{name}={value}", ["run", self.tiny, "--output", out], ERROR,
                         name, env={name: value}, untouched=str(out))
        afile = self.write("env/afile", "x")
        self.add("env", "EMOPLUG_CACHE is a file", ["validate", self.tiny], ERROR,
                 "EMOPLUG_CACHE", env={"EMOPLUG_CACHE": str(afile)})
        self.add("env", "EMOPLUG_CACHE under a file", ["validate", self.tiny], ERROR,
                 "EMOPLUG_CACHE", str(afile), env={"EMOPLUG_CACHE": str(afile / "c")})

    # ---- flags ---------------------------------------------------------------------------

    def flags(self) -> None:
        afile = self.write("flags/afile", "x")
        for flag, value in (("--workers", "0"), ("--threads", "0"), ("--workers", "two")):
            self.add("flags", f"run {flag} {value}", ["run", self.tiny, flag, value], ERROR,
                     flag)
        self.add("flags", "unknown command", ["trian"], ERROR, "trian")
        self.add("flags", "unknown option", ["run", self.tiny, "--fast"], ERROR, "--fast")
        self.add("flags", "missing recipe", ["run"], ERROR, "RECIPE")
        self.add("flags", "report --format pdf", ["report", self.work, "--format", "pdf"],
                 ERROR, "pdf")
        self.add("flags", "folds export --format x", ["folds", "export", self.tiny,
                                                      "--format", "x", "--output",
                                                      self.work / "fx"], ERROR, "--format")
        self.add("flags", "predict nothing", ["predict", self.work], ERROR, "nothing to predict")
        self.add("flags", "predict both", ["predict", self.work, "--text", "hi", "--manifest",
                                           self.tiny], ERROR, "either --manifest")
        self.add("flags", "predict --batch-size 0", ["predict", self.work, "--text", "hi",
                                                     "--batch-size", "0"], ERROR,
                 "--batch-size")
        self.add("flags", "predict --manifest folder", ["predict", self.work, "--manifest",
                                                        self.work], ERROR, "--manifest")
        self.add("flags", "predict missing model", ["predict", self.work / "nomodel",
                                                    "--text", "hi"], ERROR, "nomodel")
        for where, output in (("under a file", afile / "out"), ("in /proc", "/proc/emoplug-x"),
                              ("in /sys", "/sys/emoplug-x")):
            self.add("flags", f"run --output {where}", ["run", self.tiny, "--output", output],
                     ERROR, "--output", str(output))
            self.add("flags", f"folds export --output {where}", [
                "folds", "export", self.tiny, "--format", "s3prl", "--output", output], ERROR,
                "--output", str(output))
        full = self.work / "flags" / "full"
        self.write("flags/full/keep.txt", "mine")
        for fmt in ("emobox", "s3prl"):
            self.add("flags", f"folds export {fmt} into a non-empty folder", [
                "folds", "export", self.tiny, "--format", fmt, "--output", full], ERROR,
                "--output", "already holds files", untouched=str(full / "demo"))

    # ---- run folders ---------------------------------------------------------------------

    def run_folders(self, finished: Path) -> None:
        """Cases on copies of ``finished`` (a finished run of ``tiny.yaml``)."""
        def copy(name: str) -> Path:
            target = self.work / "runs" / name
            shutil.copytree(finished, target)
            return target

        jobs = sorted((finished / "jobs").iterdir())
        self.add("run", "report of a folder that is no run", ["report", self.work / "flags"],
                 ERROR, "not an emoplug run folder")
        self.add("run", "report of a missing folder", ["report", self.work / "nope"], ERROR,
                 "nope")
        for name, text in (("truncated", '{"jobs": ['), ("empty", ""), ("list", "[]")):
            run = copy(f"plan-{name}")
            (run / "plan.json").write_text(text)
            self.add("run", f"report with plan.json {name}", ["report", run], ERROR,
                     "plan.json", "damaged", untouched=str(run / "report"))
        for name, text in (("truncated", None), ("empty", "")):
            run = copy(f"result-{name}")
            path = run / "jobs" / jobs[0].name / "result.json"
            path.write_text(path.read_text()[:40] if text is None else text)
            self.add("run", f"report with result.json {name}", ["report", run], WARNING,
                     "damaged", jobs[0].name, code=0)
        busy = copy("busy")
        (busy / "jobs" / jobs[0].name / "result.json").unlink()
        shutil.rmtree(busy / "jobs" / jobs[0].name / "model")
        self.add("run", "export while a job runs", ["export", busy, "--cell",
                                                    "mfcc/small/direct"], ERROR,
                 "not finished", untouched=str(busy / "exports"))
        self.add("run", "export unknown cell", ["export", finished, "--cell", "nope"], ERROR,
                 "--cell 'nope'")
        self.add("run", "export unknown fold", ["export", finished, "--cell",
                                                "mfcc/small/direct", "--fold", "fold9"],
                 ERROR, "--fold 'fold9'")
        for extra in ([], ["--refit"]):
            self.add("run", f"export {' '.join(extra)} --output under a file".replace("  ", " "),
                     ["export", finished, "--cell", "mfcc/small/direct", *extra, "--output",
                      self.tiny / "model"], ERROR, "--output", "under the file")
        self.add("run", "export --seed without --refit", ["export", finished, "--cell",
                                                          "mfcc/small/direct", "--seed", "1"],
                 ERROR, "--seed")
        for name, overrides, expect in (
                ("another recipe", ["name=other"], "recipe 'other'"),
                ("other epochs", ["train.epochs=2"], "would become stale"),
                ("other protocol", ["protocol.k=3"], "would become stale"),
                ("other fusion", ["fusion.small.hidden=16"], "would become stale")):
            run = copy(f"mixed-{name.replace(' ', '-')}")
            self.add("run", f"run {name} into the folder", ["run", self.tiny, *overrides,
                                                            "--output", run], ERROR,
                     "--output", expect, "--force")
        model = self.work / "runs" / "swapped-model"
        shutil.copytree(jobs[0] / "model", model)
        manifest = json.loads((model / "model.json").read_text())
        manifest["components"]["fusion"]["hidden"] = 16
        (model / "model.json").write_text(json.dumps(manifest))
        self.add("run", "predict with weights of another cell", ["predict", model, "--text",
                                                                 "hi"], ERROR,
                 "model.safetensors", "another size")
        damaged = self.work / "runs" / "damaged-model"
        shutil.copytree(jobs[0] / "model", damaged)
        (damaged / "model.json").write_text("{")
        self.add("run", "predict with a damaged model.json", ["predict", damaged, "--text",
                                                              "hi"], ERROR, "model.json")
        for name in ("ENOSPC", "EDQUOT"):
            run = copy(f"full-{name}")
            shutil.rmtree(run / "jobs" / jobs[1].name)
            self.add("storage", f"disk full ({name}) mid-run", [
                "run", self.tiny, "--output", run, "-q"], ERROR, "no space left on device",
                "predictions.csv", "run the same command to resume", code=3, inject=name)
        staged = self.write("staged.yaml", STAGED)
        for name in ("ENOSPC", "EROFS"):
            out = self.work / "runs" / f"stage-{name}"
            self.add("storage", f"{name} writing a text stage", [
                "run", staged, "--output", out, "-q"], ERROR, "stage.json",
                "no space left on device" if name == "ENOSPC" else "read-only file system",
                code=3 if name == "ENOSPC" else 2, inject=f"{name}:stage",
                untouched=str(out / "failures.log"))
        run = copy("read-only")
        shutil.rmtree(run / "jobs" / jobs[1].name)
        self.add("storage", "read-only file system mid-run", [
            "run", self.tiny, "--output", run, "-q"], ERROR, "read-only file system",
            "predictions.csv", inject="EROFS")


@dataclass
class Outcome:
    case: Case
    outcome: str
    why: str
    exit_code: int
    stderr: list[str]
    stdout_tail: list[str]
    seconds: float


def classify(case: Case, code: int, stdout: str, stderr: str) -> tuple[str, str]:
    """GOOD / TRACEBACK / SILENT / WRONG, and why."""
    said = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in stdout + stderr:
        return "TRACEBACK", said[-1] if said else ""
    if case.untouched and Path(case.untouched).exists():
        return "WRONG", f"wrote {case.untouched}"
    errors = [line for line in said if line.startswith("error:")]
    warnings = [line for line in said if "warning:" in line]
    if case.kind == ERROR:
        if code == 0 and not errors:
            return "SILENT", "exit 0 where an error was due"
        if code != case.code:
            return "WRONG", f"exit {code}, expected {case.code}"
        if len(said) != 1 or not errors:
            return "WRONG", f"{len(said)} lines on stderr, expected one error line"
        missing = [s for s in case.expect if s not in errors[0]]
        return ("WRONG", f"the line does not name {missing}") if missing else ("GOOD", "")
    if code != case.code:
        return "WRONG", f"exit {code}, expected {case.code}"
    if case.kind == WARNING:
        hits = [w for w in warnings if all(s in w for s in case.expect)]
        if not warnings:
            return "SILENT", "nothing said"
        return ("GOOD", "") if len(hits) == 1 else ("WRONG", "no one warning names "
                                                             f"{case.expect}")
    missing = [s for s in case.expect if s not in stdout]
    return ("WRONG", f"the output does not name {missing}") if missing else ("GOOD", "")


def run_case(case: Case, env: dict[str, str], cwd: Path) -> Outcome:
    command = [sys.executable, "-m", "emoplug", *case.argv]
    if case.inject:
        errno, _, target = case.inject.partition(":")
        command = [sys.executable, "-c",
                   INJECT.format(errno=errno, target=target or "predictions"), *case.argv]
    start = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env={**env, **case.env}, capture_output=True,
                          text=True, timeout=600)
    seconds = round(time.monotonic() - start, 2)
    outcome, why = classify(case, done.returncode, done.stdout, done.stderr)
    stderr = [line for line in done.stderr.splitlines() if line.strip()]
    return Outcome(case, outcome, why, done.returncode, stderr[-6:],
                   done.stdout.strip().splitlines()[-2:], seconds)


def measure(work: Path, jobs: int = 2, only: str | None = None,
            against: Path | None = None) -> dict[str, Any]:
    """Build the battery under ``work``, run every case (``only``: those whose id holds
    it) with ``jobs`` at a time, and return the tally and rows. ``against``: a checkout of
    emoplug whose ``src`` and ``plugins`` the commands import instead of the installed one
    (e.g. the commit before a fix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOPLUG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", EMOPLUG_CACHE=str(work / "cache"),
               PYTHONWARNINGS="ignore")
    if against is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(against / d) for d in ("src", "plugins"))
    battery = Battery(work)
    finished = work / "finished"
    done = subprocess.run([sys.executable, "-m", "emoplug", "run", str(battery.tiny),
                           "--output", str(finished), "-q"], env=env, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"the reference run failed: {done.stderr[-2000:]}")
    battery.recipe_keys()
    battery.manifests()
    battery.wavs()
    battery.environment()
    battery.flags()
    battery.run_folders(finished)
    cases = [c for c in battery.cases if only is None or only in c.id]
    with ThreadPoolExecutor(jobs) as pool:
        outcomes = list(pool.map(lambda c: run_case(c, env, work), cases))
    tally = Counter(o.outcome for o in outcomes)
    for o in outcomes:
        if o.outcome != "GOOD":
            print(f"{o.outcome:<9} {o.case.id}: {o.why} | {' / '.join(o.stderr[-2:])}")
    code = against or ROOT
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True,
                            text=True).stdout.strip() or "(not a git checkout: see the path)"
    return {
        "code_under_test": {"path": str(code), "commit": commit},
        "cases": len(outcomes),
        "tally": {k: tally.get(k, 0) for k in ("GOOD", "TRACEBACK", "SILENT", "WRONG")},
        "by_group": {g: dict(Counter(o.outcome for o in outcomes if o.case.group == g))
                     for g in dict.fromkeys(c.group for c in cases)},
        "rows": [{**{k: v for k, v in asdict(o.case).items() if k != "group"},
                  "argv": [a.replace(str(work), "<work>") for a in o.case.argv],
                  "untouched": (o.case.untouched or "").replace(str(work), "<work>") or None,
                  "outcome": o.outcome, "why": o.why, "exit_code": o.exit_code,
                  "stderr": [s.replace(str(work), "<work>") for s in o.stderr],
                  "seconds": o.seconds} for o in outcomes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="report path (default benchmarks/results/bad_inputs.json)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at a time")
    parser.add_argument("--only", help="run the cases whose id holds this text")
    parser.add_argument("--against", type=Path,
                        help="an emoplug checkout whose src/ and plugins/ the commands import "
                             "(default: the installed emoplug)")
    args = parser.parse_args()
    before = machine()
    with tempfile.TemporaryDirectory(prefix="emoplug-bad-inputs-") as work:
        figures = measure(Path(work), args.jobs, args.only, args.against)
    print(json.dumps(figures["tally"]))
    write_report("bad_inputs", args.out, machine=before, **figures)


if __name__ == "__main__":
    main()
