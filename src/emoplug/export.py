"""``emoplug export``: one cell's trained models as a model directory for ``emoplug predict``.

Two ways:

- from saved models (the run used ``train.save: best``): the chosen fold's job (one per seed)
  or, with ``fold="all"``, every fold's; one job is copied as it is, several become an
  *ensemble* directory (``members/<fold>-seed<seed>/``) whose predictions average the
  members' probabilities and AVD;
- ``refit``: train the cell once more on all the utterances the run's protocol uses, minus a
  seeded, label-stratified dev split for early stopping (see :func:`refit_fold`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from emoplug.errors import EmoplugError
from emoplug.files import honour_umask_tree, read_json, write_json_atomic

REFIT_FOLD = "refit"


def read_plan_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "plan.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmoplugError(f"{run_dir} is not an emoplug run folder (no plan.json)") from None
    except json.JSONDecodeError as exc:
        raise EmoplugError(f"{path} is not valid JSON ({exc})") from None


def match_cell(cells: dict[str, str], wanted: str, run_dir: Path) -> str:
    """The id of the cell ``wanted`` names: its id, a unique id prefix, or its label.
    ``cells`` maps id -> label."""
    hits = [cid for cid, label in cells.items()
            if cid == wanted or label == wanted or cid.startswith(wanted)]
    exact = [cid for cid in hits if cid == wanted or cells[cid] == wanted]
    if len(exact) == 1 or len(hits) == 1:
        return (exact or hits)[0]
    listing = ", ".join(f"{cid} ({label})" for cid, label in sorted(cells.items())[:8])
    more = f" and {len(cells) - 8} more" if len(cells) > 8 else ""
    problem = "matches several cells" if hits else "is no cell"
    raise EmoplugError(f"--cell {wanted!r} {problem} of run {run_dir}; cells: {listing}{more}")


def _default_output(run_dir: Path, cell: str, what: str) -> Path:
    return run_dir / "exports" / f"{cell}-{what}"


def _fresh_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise EmoplugError(f"{output} already exists; choose another --output or delete it")


def export_saved(run_dir: Path, cell: str, fold: str = "all",
                 output: Path | None = None) -> Path:
    """Copy the saved models of ``cell`` (all folds, or one) into ``output``."""
    from emoplug.files import link_or_copy_tree
    from emoplug.model_folder import FORMAT_VERSION, MODEL_JSON, read_model_json

    plan = read_plan_json(run_dir)
    cells = {j["cell"]: j["label"] for j in plan["jobs"]}
    cell_id = match_cell(cells, cell, run_dir)
    if fold != "all" and fold not in plan["folds"]:
        raise EmoplugError(f"--fold {fold!r} is not a fold of run {run_dir} "
                           f"({', '.join(plan['folds'])}, or all)")
    jobs = [j for j in plan["jobs"] if j["cell"] == cell_id and fold in ("all", j["fold"])]
    if not jobs:
        raise EmoplugError(f"run {run_dir} has no job of cell {cell_id} on fold {fold}")
    missing, unfinished = [], []
    for job in jobs:
        folder = run_dir / "jobs" / job["id"]
        if (folder / "model" / MODEL_JSON).is_file():
            continue
        status = (read_json(folder / "result.json") or {}).get("status")
        where = f"{job['id']} (fold {job['fold']})"
        (missing if status == "done" else unfinished).append(
            where + (": failed" if status == "failed" else ""))
    if unfinished:
        raise EmoplugError(
            f"{len(unfinished)} job(s) of cell {cell_id} are not finished (still running, not "
            f"started or failed), e.g. {unfinished[0]}: let the run finish (run the recipe "
            "again to redo failed jobs), then export")
    if missing:
        raise EmoplugError(
            f"{len(missing)} job(s) of cell {cell_id} have no saved model, e.g. {missing[0]}: "
            "run the recipe with train.save=best (finished jobs are skipped: delete their "
            "jobs/<id> folders first) or export with --refit")
    output = output or _default_output(run_dir, cell_id, fold)
    _fresh_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".tmp-{output.name}-"))
    try:
        target = tmp / "out"
        if len(jobs) == 1:
            link_or_copy_tree(run_dir / "jobs" / jobs[0]["id"] / "model", target)
        else:
            members = []
            for job in jobs:
                source = run_dir / "jobs" / job["id"] / "model"
                manifest = read_model_json(source)
                name = f"members/{job['fold']}-seed{job['seed']}"
                link_or_copy_tree(source, target / name)
                members.append(name)
            write_json_atomic(target / MODEL_JSON, {
                "format_version": FORMAT_VERSION, "kind": "ensemble", "combine": "mean",
                "cell": cell_id, "cell_label": cells[cell_id], "members": members,
                "labels": manifest["labels"], "avd_scale": manifest["avd_scale"],
                "folds": sorted({j["fold"] for j in jobs}),
                "seeds": sorted({j["seed"] for j in jobs})})
        if output.exists():
            output.rmdir()
        honour_umask_tree(target)
        os.replace(target, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def refit_fold(ids: list[str], labels: dict[str, str | None], dev_fraction: float,
               seed: int) -> Any:
    """The refit split: dev = ``round(dev_fraction * n)`` utterances of each label (drawn
    with ``seed``), train = the rest; test = dev (a job needs a test split; its scores are
    then the dev scores)."""
    import numpy as np

    from emoplug.splits import stratified_sample
    from emoplug.types import Fold

    ordered = sorted(ids)
    dev = set(stratified_sample(ordered, [labels[i] for i in ordered], dev_fraction,
                                np.random.default_rng(seed)))
    train = tuple(i for i in sorted(ids) if i not in dev)
    if not dev or not train:
        raise EmoplugError(f"refit: dev_fraction {dev_fraction} leaves an empty "
                           f"{'dev' if not dev else 'training'} split of {len(ids)} utterances")
    return Fold(REFIT_FOLD, train, tuple(sorted(dev)), tuple(sorted(dev)),
                meta={"protocol": "refit", "dev_fraction": dev_fraction, "seed": seed})


def refit(run_dir: Path, cell: str, output: Path | None = None, seed: int | None = None,
          dev_fraction: float = 0.1) -> tuple[Path, dict[str, Any]]:
    """Train ``cell`` of the run's recipe on all its protocol's utterances (see
    :func:`refit_fold`) and save the model to ``output``. Returns the output folder and
    the job's result (its metrics are on the dev split)."""
    from accelerate import Accelerator

    from emoplug.recipe import Job, build_plan, stable_hash
    from emoplug.train import text_stage
    from emoplug.train.context import RunContext
    from emoplug.train.inputs import text_mode
    from emoplug.train.job import run_job
    from emoplug.train.packed import device_inputs_mode
    from emoplug.train.saving import save_model

    if not 0 < dev_fraction < 1:
        raise EmoplugError(f"--dev-fraction must be between 0 and 1, got {dev_fraction}")
    device_inputs_mode()  # a bad EMOPLUG_DEVICE_INPUTS stops here, before any training
    saved = read_plan_json(run_dir)
    recipe = saved["recipe"]
    recipe["train"] = {**recipe.get("train", {}), "save": "best"}
    source = saved.get("source", str(run_dir / "plan.json"))
    # relative dataset paths are the recipe file's, as when the run was planned
    plan = build_plan(recipe, source, folder=Path(source).absolute().parent
                      if Path(source).is_file() else None)
    cells = {c.id: c.label for c in plan.cells}
    chosen = next(c for c in plan.cells if c.id == match_cell(cells, cell, run_dir))
    seed = plan.recipe.seeds[0] if seed is None else seed
    output = output or _default_output(run_dir, chosen.id, f"refit-seed{seed}")
    _fresh_output(output)

    work = run_dir / "refit" / f"{chosen.id}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(plan, work)
    first = next(iter(ctx.folds.values()))
    used = [*first.train, *first.dev, *first.test]  # every utterance the protocol keeps
    ctx.folds = {REFIT_FOLD: refit_fold(used, {i: ctx.by_id[i].label for i in used},
                                        dev_fraction, seed)}
    job = Job(chosen, REFIT_FOLD, seed, stable_hash({
        **plan.shared_config, **chosen.config, "fold": REFIT_FOLD, "seed": seed,
        "dev_fraction": dev_fraction}), plan.recipe.name, plan.shared_config)
    accelerator = Accelerator(mixed_precision=plan.recipe.train.mixed_precision)
    if text_mode(job) == "staged":
        sid = text_stage.job_stage_id(ctx, job)
        status = text_stage.stage_status(ctx, sid)
        if status is None or status.get("status") != "done":
            print(f"refit: fine-tuning the {chosen.config['text']['type']} text stage",
                  file=sys.stderr)
            text_stage.run_text_stage(ctx, chosen.config["text"], REFIT_FOLD, seed, accelerator,
                                      control=chosen.control)
    print(f"refit: training {chosen.label} on {len(ctx.folds[REFIT_FOLD].train)} utterances "
          f"(dev {len(ctx.folds[REFIT_FOLD].dev)})", file=sys.stderr)
    outcome = run_job(ctx, job, accelerator)
    save_model(output, ctx, job, outcome.model, outcome.approach)
    write_json_atomic(work / "result.json", outcome.result)
    return output, outcome.result
