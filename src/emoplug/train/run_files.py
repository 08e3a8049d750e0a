"""The plan files of a run folder: ``plan.json`` (the recipe, folds, jobs and audit of the
run the folder holds) and ``plans/<hash>.json`` (every plan it has had), and the check that
refuses to mix two studies in one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emoplug.errors import EmoplugError
from emoplug.files import read_json, write_json_atomic
from emoplug.recipe import Plan, stable_hash


def write_plan(out: Path, plan: Plan, audit: dict[str, Any] | None,
                data: dict[str, Any] | None = None) -> None:
    """``plan.json``: the recipe, the folds (of every protocol), the jobs, each fold's
    leakage audit and the items skipped and excluded by reason (``data``); the last two are
    kept from the last write while the corpus has not been read. Every plan the folder has
    had is kept as ``plans/<hash>.json`` (the previous one before it is replaced)."""
    previous = read_json(out / "plan.json")
    if audit is None:
        audit, data = (previous or {}).get("audit", {}), (previous or {}).get("data")
    payload = {
        "recipe": plan.recipe.model_dump(mode="json"), "source": plan.source,
        "folds": plan.all_folds, "protocols": list(plan.protocol_folds),
        "audit": audit, **({"data": data} if data is not None else {}),
        "jobs": [{"id": j.id, "cell": j.cell.id, "label": j.cell.label, "fold": j.fold,
                  "seed": j.seed} for j in plan.jobs]}
    (out / "plans").mkdir(exist_ok=True)
    if isinstance(previous, dict) and not (out / "plans" / plan_file(previous)).exists():
        write_json_atomic(out / "plans" / plan_file(previous), previous)
    write_json_atomic(out / "plans" / plan_file(payload), payload)
    write_json_atomic(out / "plan.json", payload)


def plan_file(payload: dict[str, Any]) -> str:
    """The file name under ``plans/`` of a ``plan.json`` payload: a hash of its recipe and
    job ids (rewriting the same plan, e.g. with its audit, keeps one file)."""
    jobs = payload.get("jobs")
    ids = [j.get("id") for j in jobs if isinstance(j, dict)] if isinstance(jobs, list) else []
    return f"{stable_hash({'recipe': payload.get('recipe'), 'jobs': ids})}.json"


def check_plan_change(out: Path, plan: Plan, force: bool) -> str | None:
    """Refuse to run ``plan`` into a run folder that holds another study: a different
    recipe, or settings of the same recipe under which some of its planned jobs would no
    longer be part of the plan (stale). With ``force`` it goes on and the warning line is
    returned (the previous plan is kept under ``plans/``). A plan that only adds jobs
    (more seeds, more cells) is no change of study. Raises :class:`EmoplugError`."""
    path = out / "plan.json"
    if not path.exists():
        return None
    previous = read_json(path)
    jobs = previous.get("jobs") if isinstance(previous, dict) else None
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and "id" in j for j in jobs):
        problem = f"{path} is damaged (not a plan's JSON), so what the folder holds is unknown"
        if not force:
            raise EmoplugError(f"--output: {problem}; run with --force to replace it")
        return f"emoplug: warning: {problem}; replaced (--force)"
    new_ids = {j.id for j in plan.jobs}
    stale = [j for j in jobs if j["id"] not in new_ids]
    name = (previous.get("recipe") or {}).get("name")
    if name != plan.recipe.name:
        problem = (f"{out} holds the run of recipe '{name}' ({len(jobs)} jobs); running "
                   f"recipe '{plan.recipe.name}' there would mix two studies in one folder")
    elif stale:
        shown = ", ".join(f"{j.get('label')} fold={j.get('fold')} seed={j.get('seed')}"
                          for j in stale[:3])
        problem = (f"{out} holds a plan of recipe '{name}' with other settings: "
                   f"{len(stale)} of its {len(jobs)} jobs would become stale (e.g. {shown})")
    else:
        return None
    if not force:
        raise EmoplugError(f"--output: {problem}; give another --output, or --force to run "
                           "it here (every earlier plan is kept under plans/)")
    return (f"emoplug: warning: {problem}; running it there (--force); the earlier plan is "
            f"kept as {out / 'plans' / plan_file(previous)}")
