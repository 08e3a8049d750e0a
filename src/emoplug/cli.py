"""The ``emoplug`` command line; heavy modules are imported inside commands (fast ``--help``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emoplug.errors import EmoplugError

if TYPE_CHECKING:
    from emoplug.recipe import Plan

OVERRIDES = click.argument("overrides", nargs=-1)
RECIPE = click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))


class _Group(click.Group):
    """Turns user-facing errors into one line on stderr and exit code 2; a file-system
    error (no space, read-only, no permission, a file where a folder belongs) into one line
    naming the path, exit code 3 (:data:`EXIT_NO_SPACE`) when the disk is full, else 2."""

    def invoke(self, ctx: click.Context):
        from emoplug.errors import EXIT_NO_SPACE, is_no_space, storage_error, storage_message

        try:
            return super().invoke(ctx)
        except EmoplugError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                click.echo(f"error: {line}", err=True)
            sys.exit(2)
        except click.UsageError as exc:  # click's three lines, as one
            where = exc.ctx.command_path if exc.ctx is not None else "emoplug"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            error = storage_error(exc)
            if error is None and isinstance(exc, OSError) and exc.filename is not None:
                error = exc  # e.g. a file that vanished: still one line naming it
            if error is None:
                raise
            click.echo(f"error: {storage_message(error)}", err=True)
            sys.exit(EXIT_NO_SPACE if is_no_space(error) else 2)


@click.group(cls=_Group)
@click.version_option(package_name="emoplug")
def main() -> None:
    """emoplug: multimodal (text + speech) emotion recognition studies from one YAML recipe.

    Recipes take dotted overrides after the file, e.g.
    ``emoplug run r.yaml dataset.root=/data/IEMOCAP train.epochs=3 seeds=[0]``.
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(as_json: bool) -> None:
    """List every component: kind, name, providing plugin and distribution, and why a
    component whose optional dependency is missing is unavailable."""
    from emoplug.registry import get_registry

    registry = get_registry()
    rows = [{"kind": s.kind, "name": s.name, "plugin": s.plugin,
             "distribution": s.distribution, "version": s.version,
             "unavailable": s.unavailable_reason()} for s in registry.all()]
    broken = [{"plugin": p.name, "distribution": p.distribution, "error": p.error}
              for p in registry.plugins.values() if p.error]
    disabled = sorted(p.name for p in registry.plugins.values() if p.disabled)
    conflicts = [{"kind": kind, "name": name, "plugins": [s.plugin for s in specs]}
                 for (kind, name), specs in registry.conflicts().items()]
    if as_json:
        click.echo(json.dumps({"components": rows, "broken": broken, "disabled": disabled,
                               "conflicts": conflicts}, indent=2))
        return
    width = max([len(r["name"]) for r in rows] + [4])
    for r in rows:
        dist = f"{r['distribution']} {r['version']}" if r["distribution"] else "(not installed)"
        click.echo(f"{r['kind']:<9} {r['name']:<{width}}  {r['plugin']:<12} {dist}"
                   + (f"  UNAVAILABLE: {r['unavailable']}" if r["unavailable"] else ""))
    for b in broken:
        click.echo(f"BROKEN    plugin '{b['plugin']}' ({b['distribution'] or 'no distribution'})"
                   f": {b['error']}", err=True)
    for c in conflicts:
        click.echo(f"CONFLICT  {c['kind']} '{c['name']}' registered by "
                   f"{', '.join(c['plugins'])}", err=True)
    if disabled:
        click.echo(f"disabled: {', '.join(disabled)}", err=True)


@main.command()
@RECIPE
@OVERRIDES
@click.option("--no-data", is_flag=True,
              help="check the recipe only, without reading the dataset")
def validate(recipe: Path, overrides: tuple[str, ...], no_data: bool) -> None:
    """Check a recipe, its components' settings and the data it names; exit 0 when all
    are valid."""
    plan = _checked_plan(recipe, overrides)
    data = None
    if not no_data:
        from emoplug.data.loading import data_line, data_warnings, load_corpus_and_folds

        corpus, folds = load_corpus_and_folds(plan.corpus_request(), warn=False)
        data = data_line(corpus, folds)
        for warning in data_warnings(corpus):
            click.echo(f"emoplug: warning: {warning}", err=True)
    click.echo(f"{recipe}: valid ({len(plan.cells)} cells, {len(plan.jobs)} jobs)")
    if data is not None:
        click.echo(data)


def _checked_plan(recipe: Path, overrides: tuple[str, ...]) -> Plan:
    """The recipe's plan, after every component checked its settings (``check``)."""
    from emoplug.errors import RecipeError
    from emoplug.recipe import load_plan, preflight

    plan_ = load_plan(recipe, overrides)
    problems = preflight(plan_)
    if problems:
        raise RecipeError(str(recipe), problems)
    _say_warnings(plan_)
    return _cache_checked(plan_)


def _say_warnings(plan_: Plan) -> None:
    """The recipe's warnings (settings that will not be used), one line each on stderr."""
    for warning in plan_.warnings:
        click.echo(f"emoplug: warning: {plan_.source}: {warning}", err=True)


def _cache_checked(plan_: Plan) -> Plan:
    """``plan_``, once its cache folder is known to be writable (a file there, or a
    read-only folder, stops the command in one line naming the key that set it)."""
    import os

    from emoplug.files import check_writable_folder

    key = ("cache_dir" if plan_.recipe.cache_dir else
           "EMOPLUG_CACHE" if os.environ.get("EMOPLUG_CACHE") else "the cache folder")
    check_writable_folder(plan_.cache_dir(), key)
    return plan_


@main.command()
@RECIPE
@OVERRIDES
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--no-data", is_flag=True, help="do not read the dataset (the audio cache "
              "estimate is then per hour of audio only)")
def plan(recipe: Path, overrides: tuple[str, ...], as_json: bool, no_data: bool) -> None:
    """Show the cells and jobs a recipe expands to, and the audio feature cache each
    featurizer will write."""
    from emoplug.recipe import load_plan

    p = load_plan(recipe, overrides)
    _say_warnings(p)
    corpus, corpus_note = (None, "not read (--no-data)") if no_data else _corpus_audio(p)
    summary = {
        "recipe": p.recipe.name,
        "cells": len(p.cells),
        "folds": p.all_folds,
        "seeds": p.recipe.seeds,
        "jobs": len(p.jobs),
        "counts": p.counts(),
        "size": p.size(),
        "audio_cache": _audio_cache(p, corpus, corpus_note),
        "job_list": [{"id": j.id, "cell": j.cell.id, "label": j.cell.label, "fold": j.fold,
                      "seed": j.seed} for j in p.jobs],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if p.protocol_folds:
        per = "; ".join(f"{name}: {len(folds)} folds" for name, folds in
                        ([("protocol", p.folds)] if p.folds else []) + list(
                            p.protocol_folds.items()))
        click.echo(f"recipe {p.recipe.name}: {len(p.cells)} cells ({per}) x "
                   f"{len(p.recipe.seeds)} seeds = {len(p.jobs)} jobs")
    else:
        click.echo(f"recipe {p.recipe.name}: {len(p.cells)} cells x {len(p.folds)} folds x "
                   f"{len(p.recipe.seeds)} seeds = {len(p.jobs)} jobs")
    size = summary["size"]
    click.echo(f"  size: {size['feature_extractions']} audio feature extractions and "
               f"{size['frozen_encoder_passes']} frozen text encoder passes over the corpus "
               f"(cached), "
               + (f"{size['transcriptions']} speech recogniser passes over its audio (cached), "
                  if size["transcriptions"] else "")
               + f"{size['stage_fine_tunings']} text and speech stage fine-tunings, "
               f"{size['head_jobs']} jobs ({size['fine_tuning_jobs']} fine-tune an encoder)"
               + (f", {size['tuning_trials']} tuning trials" if size["tuning_trials"] else "")
               + f"; {size['trainings']} network trainings")
    for axis, tally in summary["counts"].items():
        click.echo(f"  {axis:<10} " + ", ".join(f"{k}: {v}" for k, v in tally.items()))
    _echo_audio_cache(summary["audio_cache"])
    for j in summary["job_list"]:
        click.echo(f"  {j['id']}  {j['label']:<40} fold={j['fold']} seed={j['seed']}")


def _corpus_audio(plan_: Plan) -> tuple[tuple[float, int] | None, str]:
    """(seconds, files) of the plan's corpus audio, read from the files' headers, and a
    note; None and the reason when the dataset cannot be read."""
    from emoplug.cache_size import audio_duration
    from emoplug.registry import get_registry

    if not any(cell.audio is not None for cell in plan_.cells):
        return None, "no audio"
    try:
        corpus = get_registry().build("dataset", plan_.dataset).load(
            need_audio=False, cache_dir=plan_.cache_dir())
    except (EmoplugError, OSError) as exc:
        return None, f"dataset not read: {str(exc).splitlines()[0]}"
    seconds, files = audio_duration(u.audio for u in corpus.utterances if u.audio)
    return (seconds, files), f"{seconds / 3600:.2f} h of audio in {files} files"


def _audio_cache(plan_: Plan, corpus: tuple[float, int] | None,
                 note: str) -> dict[str, Any]:
    """The audio cache estimate of ``emoplug plan``: the corpus it is for and a row per
    featurizer (:func:`emoplug.cache_size.plan_cache_sizes`)."""
    from emoplug.cache_size import plan_cache_sizes
    from emoplug.registry import get_registry

    rows = plan_cache_sizes(plan_, get_registry(), corpus)
    return {"corpus_seconds": corpus[0] if corpus else None,
            "corpus_files": corpus[1] if corpus else None, "corpus": note,
            "featurizers": rows}


def _echo_audio_cache(cache: dict[str, Any]) -> None:
    from emoplug.cache_size import ENTRY_OVERHEAD, human_bytes

    if not cache["featurizers"]:
        return
    click.echo(f"  audio feature cache (estimated: frames per second x seconds + rows per "
               f"file, x dim x bytes per value, + {ENTRY_OVERHEAD} B per file; corpus: "
               f"{cache['corpus']}):")
    width = max(len(row["audio"]) for row in cache["featurizers"])
    for row in cache["featurizers"]:
        if "unknown" in row:
            click.echo(f"    {row['audio']:<{width}}  unknown: {row['unknown']}")
            continue
        total = (f"; corpus {human_bytes(row['corpus_bytes'])}"
                 if "corpus_bytes" in row else "")
        click.echo(f"    {row['audio']:<{width}}  {row['shape']}: "
                   f"{human_bytes(row['bytes_per_hour'])} per hour of audio "
                   f"({row['utterance_seconds']:g} s utterances){total}")


@main.command()
@RECIPE
@OVERRIDES
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="run folder (default runs/<recipe name>)")
@click.option("-q", "--quiet", is_flag=True, help="only failures and the final summary")
@click.option("-v", "--verbose", is_flag=True, help="per-epoch lines")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="local processes sharing the jobs (e.g. one per CPU core)")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="threads per process [default: $EMOPLUG_THREADS, else 1 on a CPU, "
                   "else cores / workers]")
@click.option("--force", is_flag=True,
              help="run into a folder holding another recipe's plan or other settings "
                   "(the earlier plans stay under plans/)")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="local: this process (with --workers, local processes) sharing units "
                   "through leases; ray: every unit a task on a Ray cluster")
@click.option("--address", default=None,
              help="with --executor ray: the cluster to join (auto: the one `ray start` "
                   "runs here; ray://HOST:10001; default: start a local one)")
def run(recipe: Path, overrides: tuple[str, ...], output: Path | None, quiet: bool,
        verbose: bool, workers: int, threads: int | None, force: bool, executor: str,
        address: str | None) -> None:
    """Run every job of a recipe (skips finished ones)."""
    from emoplug.files import check_writable_folder
    from emoplug.recipe import load_plan
    from emoplug.train.context import feature_memory_bytes
    from emoplug.train.leases import lease_timeout
    from emoplug.train.local_workers import run_with_workers
    from emoplug.train.packed import device_inputs_mode
    from emoplug.train.run_files import check_plan_change
    from emoplug.train.runner import run_plan
    from emoplug.train.signals import Stopped, stop_on_signals, watch_parent
    from emoplug.train.workers import Worker, threads_per_process, use_threads

    if executor == "ray" and workers > 1:
        raise click.UsageError("--workers shares units between local processes; with "
                               "--executor ray, Ray's workers run them")
    if address is not None and executor != "ray":
        raise click.UsageError("--address names a Ray cluster: use it with --executor ray")
    if executor == "ray":
        from emoplug.train.ray_executor import import_ray

        import_ray()  # one line when Ray is not installed, before anything is written
    # workers started by --workers were checked by the command that started them
    plan_ = (load_plan(recipe, overrides) if Worker.from_env() is not None
             else _checked_plan(recipe, overrides))
    device_inputs_mode()  # a bad EMOPLUG_DEVICE_INPUTS stops here, before any worker starts
    lease_timeout()  # so does a bad EMOPLUG_LEASE_TIMEOUT
    feature_memory_bytes()  # and a bad EMOPLUG_FEATURE_MEMORY
    verbosity = 0 if quiet else (2 if verbose else 1)
    worker = Worker.from_env()
    if worker is None:  # bad data or folders stop here, before the run folder is written
        from emoplug.data.loading import load_corpus_and_folds

        out = plan_.output_dir(output)
        check_writable_folder(out, "--output" if output is not None else "run folder")
        forced = check_plan_change(out, plan_, force)
        load_corpus_and_folds(plan_.corpus_request(), warn=False)
        if forced:
            click.echo(forced, err=True)
    use_threads(threads_per_process(workers, threads))
    try:
        if workers > 1 and worker is None:
            argv = ["run", str(recipe), *overrides, "-q", *(["--force"] if force else [])]
            if output is not None:
                argv += ["--output", str(output)]
            summary = run_with_workers(plan_, argv, workers, output, verbosity)
        else:
            if worker is not None:
                watch_parent(worker.parent)
            stop_on_signals()
            summary = run_plan(plan_, output, verbosity, executor=executor, address=address)
    except Stopped as stop:
        if worker is None:  # the main process speaks for its workers
            click.echo(f"emoplug: {stop}; finished jobs are kept (run the same command to "
                       "resume)", err=True)
        sys.exit(128 + stop.signum)
    if worker is None:
        _warn_undertrained(plan_.output_dir(output))
    if not summary.ok:
        sys.exit(1)


def _warn_undertrained(run_dir: Path) -> None:
    """One line naming the cells that stopped at the epoch limit with dev loss still
    improving in at least half of their folds."""
    from emoplug.report.collect import load_run
    from emoplug.report.stopping import FLAG, undertrained_cells

    cells = undertrained_cells(load_run(run_dir))
    if cells:
        click.echo(f"emoplug: warning: {len(cells)} cell(s) {FLAG} in at least half of "
                   f"their folds (raise train.epochs): "
                   f"{', '.join(c.label for c in cells)}", err=True)


@main.command()
@RECIPE
@OVERRIDES
def featurize(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Compute and cache the audio features of every featurizer in a recipe, and the
    transcripts of every speech recogniser its text encoders read."""
    from emoplug.recipe import load_plan
    from emoplug.train.warm import warm_feature_cache, warm_transcripts

    plan = _cache_checked(load_plan(recipe, overrides))
    warm_feature_cache(plan, verbose=True)
    warm_transcripts(plan, verbose=True)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="report folder (default RUN_DIR/report)")
@click.option("--format", "formats", default="md,html,csv", show_default=True,
              help="comma-separated: md, html, csv, latex")
@click.option("--stats", type=click.Choice(["corrected", "plain"]), default="corrected",
              show_default=True,
              help="paired t-test: Nadeau-Bengio corrected resampled, or plain (uncorrected)")
def report(run_dir: Path, output: Path | None, formats: str, stats: str) -> None:
    """Tables and figures from a run's finished jobs (works while it is still running)."""
    from emoplug.report import FORMATS, write_report

    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown:
        raise click.BadParameter(f"unknown format(s) {', '.join(unknown)}; use "
                                 f"{', '.join(FORMATS)}", param_hint="--format")
    from emoplug.report.collect import load_run

    damaged = load_run(run_dir).damaged
    if damaged:
        click.echo(f"emoplug: warning: {len(damaged)} job(s) have a damaged result.json (e.g. "
                   f"{damaged[0]}): reported as failed; running the recipe again redoes them",
                   err=True)
    for kind, path in write_report(run_dir, output, chosen, stats).items():
        click.echo(f"{kind}: {path}")


@main.group()
def data() -> None:
    """Inspect the data a recipe reads."""


@data.command("summary")
@RECIPE
@OVERRIDES
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def data_summary(recipe: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Utterances per label, session and speaker; skipped items; fold sizes."""
    from emoplug.data.loading import load_corpus_and_folds
    from emoplug.data.summary import format_summary, summarize
    from emoplug.recipe import load_plan

    plan_ = _cache_checked(load_plan(recipe, overrides))
    corpus, folds = load_corpus_and_folds(plan_.corpus_request())
    summary = summarize(corpus, folds)
    click.echo(json.dumps(summary, indent=2, sort_keys=True) if as_json
               else format_summary(summary))


@main.group("folds")
def folds_group() -> None:
    """A recipe's folds in the formats reference benchmarks publish."""


@folds_group.command("export")
@RECIPE
@OVERRIDES
@click.option("--format", "fmt", type=click.Choice(["emobox", "s3prl"]), required=True,
              help="emobox: <DIR>/<corpus>/fold_<k>/*.jsonl; s3prl: <DIR>/<fold>/*.json")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="folder to write (must be new or empty)")
def folds_export(recipe: Path, overrides: tuple[str, ...], fmt: str, output: Path) -> None:
    """Write a recipe's folds as EmoBox or s3prl fold files (train lists = train + dev)."""
    from emoplug.data.loading import load_corpus_and_folds
    from emoplug.files import check_writable_folder
    from emoplug.foldfiles import check_new_or_empty, write_fold_files
    from emoplug.recipe import load_plan

    plan_ = _cache_checked(load_plan(recipe, overrides))
    check_writable_folder(output, "--output")
    check_new_or_empty(output)
    corpus, folds = load_corpus_and_folds(plan_.corpus_request())
    written = write_fold_files(fmt, corpus, folds, output)
    for fold in folds:
        click.echo(f"{fold.name} -> {written[fold.name]}: train {len(fold.train) + len(fold.dev)}"
                   f" (dev {len(fold.dev)} included), test {len(fold.test)}")


@main.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--audio", help="audio file of one utterance")
@click.option("--text", help="transcript of one utterance")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with columns id, audio, text: predict every row")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--device", default="auto", show_default=True,
              help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
def predict(model_dir: Path, audio: str | None, text: str | None, manifest: Path | None,
            as_json: bool, device: str, batch_size: int) -> None:
    """Predict the emotion of utterances with a saved model (see docs/predict.md)."""
    from emoplug.predict import format_prediction, load_model, read_rows

    if manifest is not None and (audio is not None or text is not None):
        raise EmoplugError("give either --manifest or --audio/--text, not both")
    if manifest is None and audio is None and text is None:
        raise EmoplugError("nothing to predict: give --audio and/or --text, or --manifest")
    rows = read_rows(manifest) if manifest is not None else None
    predictor = load_model(model_dir, device=device)
    if rows is None:
        result = predictor.predict(audio=audio, text=text)
        click.echo(json.dumps(result, indent=2) if as_json
                   else format_prediction(result, predictor.avd_scale))
        return
    predicted, bad = predictor.predict_many(rows, batch_size, progress=not as_json)
    if bad:
        first = "; ".join(f"{row.id or '(no id)'}: {reason}" for row, reason in bad[:3])
        message = f"{len(bad)} of {len(rows)} rows of {manifest} skipped ({first})"
        if not predicted:
            raise EmoplugError(f"no row could be predicted: {message}")
        click.echo(f"emoplug: {message}", err=True)
    if as_json:
        click.echo(json.dumps([{"id": row.id, **result} for row, result in predicted],
                              indent=2))
        return
    for row, result in predicted:
        click.echo(f"{row.id}\t{format_prediction(result, predictor.avd_scale, one_line=True)}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cell", required=True, help="cell id (or a unique prefix of it, or its label)")
@click.option("--fold", default="all", show_default=True,
              help="a fold name, or all (an ensemble of every fold's model)")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="model directory to create (default RUN_DIR/exports/<cell>-<fold>)")
@click.option("--refit", is_flag=True, help="train the cell again on all data instead")
@click.option("--seed", type=int, help="--refit: training seed (default the recipe's first)")
@click.option("--dev-fraction", default=0.1, show_default=True, type=float,
              help="--refit: share of each label held out for early stopping")
def export(run_dir: Path, cell: str, fold: str, output: Path | None, refit: bool,
           seed: int | None, dev_fraction: float) -> None:
    """Export a cell's trained models as a model directory for `emoplug predict`."""
    from emoplug import export as exporting
    from emoplug.files import check_writable_folder

    if output is not None:  # before a refit trains for minutes
        check_writable_folder(output, "--output")

    if refit:
        if fold != "all":
            raise EmoplugError("--refit trains on all folds' data; leave out --fold")
        folder, result = exporting.refit(run_dir, cell, output, seed, dev_fraction)
        scores = result["metrics"]["test"]
        detail = " ".join(f"{k.upper()}={scores[k]:.3f}" for k in ("ua", "wa") if k in scores)
        click.echo(f"refit {result['cell_label']}: dev {detail} -> {folder}")
        return
    if seed is not None:
        raise EmoplugError("--seed applies to --refit only")
    click.echo(f"exported -> {exporting.export_saved(run_dir, cell, fold, output)}")
