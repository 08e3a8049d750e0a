"""Checking that a finished job trained the model its ``config.json`` describes.

A job records what it built in ``result.json``'s ``model`` (each part's class and trainable
parameter count, see :func:`emoplug.train.model.describe_model`). :func:`check_job` rebuilds
the audio encoder and the fusion from ``config.json`` alone, with the recorded input sizes,
and compares; :func:`check_run` does it for every finished job of a run folder. A shared
component instance leaking one cell's settings into another (the defect this guards
against) shows as a different class or parameter count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emoplug.files import read_json
from emoplug.registry import Registry, get_registry


def expected_parts(config: dict[str, Any], record: dict[str, Any],
                   registry: Registry) -> dict[str, dict[str, Any] | None]:
    """The audio encoder and fusion ``config`` gives for the recorded input sizes."""
    from emoplug.recipe import audio_mode
    from emoplug.train.build import build_audio_module
    from emoplug.train.model import CellModel, describe_model

    audio = None
    if config.get("audio") is not None:
        audio = build_audio_module(registry.build("audio", config["audio"]),
                                   audio_mode(config["audio"]), int(record["audio_input_dim"]))
    fusion = registry.build("fusion", config["fusion"]).build(
        {m: int(d) for m, d in record["dims"].items()}, int(record["out_dim"]))
    described = describe_model(CellModel(fusion, audio=audio), record["dims"],
                               record["out_dim"], record["audio_input_dim"])
    return {"audio": described["audio"], "fusion": described["fusion"]}


def check_job(job_folder: Path, registry: Registry | None = None) -> list[str]:
    """How the model a finished job recorded differs from what its ``config.json`` builds
    (empty: they match). A job without a ``model`` record is reported as such."""
    registry = registry or get_registry()
    config = read_json(job_folder / "config.json")
    result = read_json(job_folder / "result.json")
    if config is None or result is None or result.get("status") != "done":
        return []
    record = result.get("model")
    tuned = (result.get("tuning") or {}).get("config")
    if tuned is not None:  # the job trained with its best trial's settings
        config = {**config, **tuned}
    if record is None:
        return [f"{job_folder.name}: result.json records no model (written before it did)"]
    problems = []
    for part, expected in expected_parts(config, record, registry).items():
        if record.get(part) != expected:
            problems.append(f"{job_folder.name}: {part} built {record.get(part)}, "
                            f"config.json gives {expected}")
    return problems


def check_run(run_dir: Path, registry: Registry | None = None) -> dict[str, Any]:
    """``{"checked": finished jobs, "mismatched": [problem lines]}`` over a run folder."""
    registry = registry or get_registry()
    checked, problems = 0, []
    for folder in sorted((run_dir / "jobs").glob("*")):
        result = read_json(folder / "result.json")
        if result is None or result.get("status") != "done":
            continue
        checked += 1
        problems.extend(check_job(folder, registry))
    return {"checked": checked, "mismatched": problems}
