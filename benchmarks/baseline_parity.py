"""Is emoplug's classic baseline scikit-learn's logistic regression? Per fold, the test UA of
emoplug's linear cell (utterance functionals, the ``linear`` encoder, a linear head, fitted
with ``train.optimizer: lbfgs``) beside scikit-learn's ``StandardScaler`` +
``LogisticRegression(C=1)`` trained on the very feature vectors emoplug cached for the same
training utterances, for the ``mfcc``, ``spectrogram``, ``egemaps`` and ``compare``
functionals. Required: the mean over folds within 1 UA point for every feature set.

The linear cells run through the real ``emoplug run`` (a subprocess); the reference reads the
features back from the run's feature cache with emoplug's own loader, so both sides see
identical inputs. On the demo corpus by default (synthetic: the figures show that the
machinery matches the reference, not how well a linear model recognises emotion), or on any
manifest CSV given with ``--manifest`` (leave one speaker out).

A third side, ``synthetic_functionals``, needs no audio: emoplug's fit and scikit-learn on a
synthetic problem with the statistics of real acoustic functionals
(:func:`emoplug.testing.utterance_statistics`: 535 utterances, 7 overlapping classes,
10 speakers, scales from 1e-3 to 1e4, a constant column), with the AdamW path beside it.

    python benchmarks/baseline_parity.py [--manifest FILE.csv] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import _common
import yaml

FEATURES = {
    "mfcc": {"type": "mfcc", "n_mfcc": 40, "deltas": 2, "level": "functionals"},
    "spectrogram": {"type": "spectrogram", "kind": "logmel", "n_mels": 64,
                    "level": "functionals"},
    "egemaps": {"type": "egemaps", "level": "functionals"},
    "compare": {"type": "compare", "level": "functionals"},
}
TOLERANCE = 0.01  # UA, on the mean over folds
CAVEAT = ("Demo corpus rows: synthetic audio; they show that emoplug's linear cell equals "
          "scikit-learn's logistic regression on identical inputs, not how well a linear "
          "model recognises human emotion.")


def reference_model() -> Any:
    """scikit-learn's logistic regression with its default C and L2 penalty, solved to the
    same convergence as emoplug's fit (scikit-learn's default tol, 1e-4, stops short of the
    optimum on thousands of ComParE columns; both sides are run to the optimum here)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=10000, tol=1e-8)


def recipe(dataset: dict[str, Any], protocol: dict[str, Any]) -> dict[str, Any]:
    """One linear cell per feature set, fitted as logistic regression."""
    return {
        "name": "baseline_parity", "dataset": dataset, "protocol": protocol, "seeds": [0],
        "audio": {f"{name}_stats": {**settings, "encoder": {"type": "linear"}}
                  for name, settings in FEATURES.items()},
        "fusion": {"linear_head": {"type": "none", "hidden": 0}},
        "extra": [{"audio": f"{name}_stats", "fusion": "linear_head", "approach": "direct",
                   "train": {"optimizer": "lbfgs"}} for name in FEATURES],
    }


def run_emoplug(data: dict[str, Any], work: Path) -> Path:
    """``emoplug run`` of the recipe into ``work/run`` with the cache in ``work/cache``."""
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    subprocess.run([sys.executable, "-m", "emoplug", "run", str(path),
                    f"cache_dir={work / 'cache'}", "--output", str(run), "-q"], check=True)
    return run


def reference_fold(plan: Any, ctx: Any, cell: Any, fold_name: str) -> dict[str, Any]:
    """scikit-learn on the features emoplug cached for the fold's train and test ids."""
    import numpy as np
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emoplug.metrics import classification_metrics

    store = ctx.features(cell.config["audio"])
    fold = ctx.folds[fold_name]

    def matrix(ids: tuple[str, ...]) -> tuple[Any, Any, list[str]]:
        kept = [i for i in ids if ctx.by_id[i].audio and store.available(ctx.by_id[i])
                and ctx.by_id[i].label in ctx.labels]
        x = np.stack([store.compute(ctx.by_id[i])[0] for i in kept]).astype(np.float64)
        y = np.array([ctx.labels.index(ctx.by_id[i].label) for i in kept])
        return x, y, kept

    x_train, y_train, _ = matrix(fold.train)
    x_test, y_test, test_ids = matrix(fold.test)
    model = make_pipeline(StandardScaler(), reference_model())
    predicted = model.fit(x_train, y_train).predict(x_test)
    return {"ua": classification_metrics(y_test, predicted, ctx.labels)["ua"],
            "predicted": dict(zip(test_ids, (ctx.labels[p] for p in predicted), strict=True))}


def compare_run(run: Path, data: dict[str, Any], work: Path) -> dict[str, Any]:
    """Per feature set and fold: emoplug's test UA, scikit-learn's, and how often their
    predicted labels agree."""
    import csv

    from emoplug.recipe import build_plan
    from emoplug.train.context import RunContext

    plan = build_plan({**data, "cache_dir": str(work / "cache")})
    ctx = RunContext(plan, run)
    rows: dict[str, Any] = {}
    for cell in plan.cells:
        name = cell.audio.removesuffix("_stats")
        folds = []
        for job in (j for j in plan.jobs if j.cell.id == cell.id):
            result = json.loads((run / "jobs" / job.id / "result.json").read_text())
            reference = reference_fold(plan, ctx, cell, job.fold)
            with open(run / "jobs" / job.id / "predictions.csv", newline="") as f:
                ours = {row["id"]: row["predicted"] for row in csv.DictReader(f)}
            shared = [i for i in ours if i in reference["predicted"]]
            folds.append({
                "fold": job.fold, "emoplug_ua": round(result["metrics"]["test"]["ua"], 4),
                "sklearn_ua": round(reference["ua"], 4),
                "agreement": round(sum(ours[i] == reference["predicted"][i] for i in shared)
                                   / max(len(shared), 1), 4),
                "stopped_by": result["stopping"]["stopped_by"],
                "lbfgs_iterations": result["history"][-1].get("iterations")})
        ours_mean = sum(f["emoplug_ua"] for f in folds) / len(folds)
        ref_mean = sum(f["sklearn_ua"] for f in folds) / len(folds)
        rows[name] = {"folds": folds, "n_folds": len(folds),
                      "emoplug_ua_mean": round(ours_mean, 4),
                      "sklearn_ua_mean": round(ref_mean, 4),
                      "difference": round(ours_mean - ref_mean, 4),
                      "within_tolerance": abs(ours_mean - ref_mean) <= TOLERANCE}
    return rows


def synthetic_functionals() -> dict[str, Any]:
    """emoplug's fit (lbfgs, and the minibatch AdamW path with early stopping on a held-out
    training speaker) vs scikit-learn on :func:`emoplug.testing.utterance_statistics`,
    leave one speaker out over its 10 speakers."""
    import numpy as np
    import torch
    from accelerate import Accelerator
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emoplug.metrics import classification_metrics
    from emoplug.recipe import TrainSettings
    from emoplug.registry import get_registry
    from emoplug.testing import utterance_statistics
    from emoplug.train.data import Collator, Example, Loader, targets_of
    from emoplug.train.loop import fit, predict
    from emoplug.train.model import CellModel

    features, labels, speakers = utterance_statistics()
    names = [str(c) for c in range(int(labels.max()) + 1)]
    registry = get_registry()
    accelerator = Accelerator(cpu=True)

    def examples(rows: np.ndarray) -> list[Example]:
        return [Example(f"u{i:04d}", int(labels[i]), (np.nan,) * 3,
                        audio=(lambda i=i: features[i][None, :]), frames=1) for i in rows]

    def emoplug_ua(train: np.ndarray, dev: np.ndarray, test: np.ndarray,
                   settings: TrainSettings) -> float:
        torch.manual_seed(0)
        encoder = registry.build("audio", {"type": "egemaps", "level": "functionals",
                                           "encoder": {"type": "linear"}}).build_encoder(
            features.shape[1])
        approach = registry.build("approach", {"type": "direct"})
        approach.prepare(names, (1.0, 5.0), targets_of(examples(train)))
        fusion = registry.build("fusion", {"type": "none", "hidden": 0}).build(
            {"audio": encoder.dim}, len(names))
        model = CellModel(fusion, audio=encoder)
        collate = Collator(None)
        fit(model, approach.loss, Loader(examples(train), collate, settings.batch_size, True),
            Loader(examples(dev), collate, 64, False), settings, accelerator)
        out = predict(model, Loader(examples(test), collate, 64, False), accelerator.device)
        gold = np.array([int(i[1:]) for i in out.ids])
        return classification_metrics(labels[gold], approach.decode(out.outputs).labels,
                                      names)["ua"]

    everyone = sorted(set(speakers))
    folds = []
    for index, speaker in enumerate(everyone):
        test = np.flatnonzero(speakers == speaker)
        rest = np.flatnonzero(speakers != speaker)
        dev_speaker = everyone[(index + 1) % len(everyone)]
        dev = rest[speakers[rest] == dev_speaker]
        reference = make_pipeline(StandardScaler(), reference_model())
        predicted = reference.fit(features[rest], labels[rest]).predict(features[test])
        folds.append({
            "test_speaker": speaker,
            "sklearn_ua": round(classification_metrics(labels[test], predicted, names)["ua"], 4),
            "emoplug_lbfgs_ua": round(emoplug_ua(rest, dev, test,
                                                 TrainSettings(optimizer="lbfgs")), 4),
            # the minibatch path: AdamW, warmup/decay, early stopping on one dev speaker
            # held out of the training speakers
            "emoplug_adamw_ua": round(emoplug_ua(
                rest[speakers[rest] != dev_speaker], dev, test,
                TrainSettings(epochs=60, patience=8, batch_size=16)), 4)})

    def mean(key: str) -> float:
        return round(sum(f[key] for f in folds) / len(folds), 4)

    return {"problem": "emoplug.testing.utterance_statistics(): 535 utterances, 7 classes, "
                       "10 speakers, 88 columns", "folds": folds, "n_folds": len(folds),
            "sklearn_ua_mean": mean("sklearn_ua"),
            "emoplug_lbfgs_ua_mean": mean("emoplug_lbfgs_ua"),
            "emoplug_adamw_ua_mean": mean("emoplug_adamw_ua"),
            "lbfgs_within_tolerance": abs(mean("emoplug_lbfgs_ua") - mean("sklearn_ua"))
            <= TOLERANCE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="a manifest CSV (leave one speaker out)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/"
                                      "baseline_parity.json)")
    args = parser.parse_args()
    _common.offline()
    work = _common.WORK / "baseline_parity"
    work.mkdir(parents=True, exist_ok=True)
    if args.manifest:
        dataset = {"type": "manifest", "path": str(Path(args.manifest).absolute())}
        protocol = {"type": "loso_speaker", "dev": "speaker"}
        corpus = f"manifest {args.manifest}"
    else:
        dataset, protocol, corpus = {"type": "demo"}, {"type": "loso"}, "demo (synthetic)"
    data = recipe(dataset, protocol)
    run = run_emoplug(data, work)
    rows = compare_run(run, data, work)
    synthetic = synthetic_functionals()
    _common.write_report(
        "baseline_parity", args.out, corpus=corpus, caveat=CAVEAT,
        tolerance_ua=TOLERANCE, feature_sets=rows, synthetic_functionals=synthetic,
        all_within_tolerance=all(r["within_tolerance"] for r in rows.values())
        and synthetic["lbfgs_within_tolerance"],
        versions=_common.versions("sklearn", "opensmile"))


if __name__ == "__main__":
    main()
