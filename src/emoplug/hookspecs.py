"""The plugin contract: every hook emoplug calls, each documented here.

A plugin implements any subset of these with ``@emoplug.hookimpl`` and is found through the
``emoplug`` entry-point group. The registration hooks are called once, the first time a
command needs components; each receives a ``register`` callback that accepts either a
component class (with ``name`` and ``Config``) or ``register(name, factory, config_model)``.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("emoplug")


@hookspec
def emoplug_register_text_encoders(register: Any) -> None:
    """Register text encoders (subclasses of :class:`emoplug.TextEncoder`).

    Called once when the registry first loads. ``register(cls)`` adds one component;
    return nothing. A recipe selects one with ``text: {NAME: {type: <name>, ...}}``.
    """


@hookspec
def emoplug_register_audio_featurizers(register: Any) -> None:
    """Register audio featurizers (subclasses of :class:`emoplug.AudioFeaturizer`).

    Called once when the registry first loads. Each featurizer is a deterministic
    waveform -> ``[frames, dim]`` function plus its default trainable encoder.
    """


@hookspec
def emoplug_register_fusions(register: Any) -> None:
    """Register fusion strategies (subclasses of :class:`emoplug.Fusion`).

    Called once when the registry first loads. A fusion's module maps
    ``{modality: Encoded}`` to ``[B, out_dim]``.
    """


@hookspec
def emoplug_register_approaches(register: Any) -> None:
    """Register decision approaches (subclasses of :class:`emoplug.Approach`).

    Called once when the registry first loads. An approach sets the output size, the loss
    and how outputs become predictions.
    """


@hookspec
def emoplug_register_datasets(register: Any) -> None:
    """Register datasets (subclasses of :class:`emoplug.Dataset`).

    Called once when the registry first loads. A dataset's ``load`` returns a
    :class:`emoplug.Corpus`.
    """


@hookspec
def emoplug_register_protocols(register: Any) -> None:
    """Register evaluation protocols (subclasses of :class:`emoplug.Protocol`).

    Called once when the registry first loads. A protocol's ``folds`` splits a corpus into
    train/dev/test folds.
    """


@hookspec
def emoplug_register_speech_recognisers(register: Any) -> None:
    """Register speech recognisers (subclasses of :class:`emoplug.SpeechRecogniser`).

    Called once when the registry first loads. A text encoder with ``source: asr`` encodes
    the transcripts its ``asr: {type: <name>, ...}`` recogniser makes from the audio.
    """


@hookspec
def emoplug_register_report_sections(register: Any) -> None:
    """Register sections of ``emoplug report``.

    Called once when a report is built. ``register(key, build, order=500)`` adds one
    section: ``build(run)`` takes the run's records (:class:`emoplug.report.RunData`) and
    returns an :class:`emoplug.report.Section`; sections appear by ``order`` (the bundled
    ones use 10 to 140, the compute summary 900), then by key. A section whose ``build``
    raises is shown with the error, and the other sections are unaffected.
    """


@hookspec
def emoplug_job_finished(job: Any, result: dict) -> None:
    """Called in the process that ran a job, after its ``result.json`` was written.

    ``job`` is the :class:`emoplug.recipe.Job`; ``result`` the dict written to
    ``result.json`` (``status`` is ``done`` or ``failed``). Use it for trackers and
    notifiers; an exception raised here is reported and ignored.
    """


@hookspec
def emoplug_run_finished(run: Any) -> None:
    """Called once per process when ``emoplug run`` has gone through its jobs.

    ``run`` is a :class:`emoplug.train.run_summary.RunSummary` (``output_dir``, ``done``,
    ``failed``, ``skipped``: this process's jobs; on the main process ``totals`` also counts
    the whole run's, every process's, from disk; ``executor``: ``local`` or ``ray``). Every
    process of a run (each of ``--workers``, each rank; under ``--executor ray`` the driver
    only, as for ``emoplug_job_finished``) calls it once, after the run's jobs are all
    recorded (not when a signal stops it). An exception raised here is reported and ignored.
    """
