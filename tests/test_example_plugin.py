"""The example third-party plugin ``examples/emoplug-gated-fusion``, installed as a separate
distribution: it is listed, a recipe using it trains, blocking it fails validation, and its
own test suite passes. ``make test`` installs it; without it these tests fail (they do not
skip: a suite that passes must have run them). The tutorial shows its files verbatim."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from emoplug.cli import main
from emoplug.testing import TINY_AUDIO, TINY_DEMO, TINY_TEXT

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "emoplug-gated-fusion"
TUTORIAL_FILE = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)


def _installed() -> bool:
    try:
        distribution("emoplug-gated-fusion")
    except PackageNotFoundError:
        return False
    return True


@pytest.fixture
def installed() -> None:
    if not _installed():
        pytest.fail("the example plugin is not installed: run `make test` (or "
                    "pip install -e examples/emoplug-gated-fusion)", pytrace=False)

RECIPE = {
    "name": "gated-demo",
    "dataset": TINY_DEMO,
    "protocol": {"type": "loso"},
    "train": {"epochs": 2, "batch_size": 16, "patience": 2},
    "text": {"bert": TINY_TEXT},
    "audio": {"mfcc": TINY_AUDIO},
    "fusion": {"gated": {"type": "gated", "dim": 16, "hidden": 16}},
    "approach": {"direct": {"type": "direct"}},
    "grid": {"text": ["bert"], "audio": ["mfcc"], "fusion": ["gated"], "approach": ["direct"]},
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("EMOPLUG_DISABLE_PLUGINS", "EMOPLUG_TRACE_PLUGINS")}
    return {**env, **extra}


@pytest.mark.usefixtures("installed")
def test_listed_with_its_distribution():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    (line,) = [row for row in result.output.splitlines() if " gated " in row]
    assert line.split() == ["fusion", "gated", "gated", "emoplug-gated-fusion", "0.1.0"]


@pytest.mark.usefixtures("installed")
def test_recipe_with_gated_fusion_trains_on_the_demo_corpus(run_recipe, tmp_path):
    path = tmp_path / "gated.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    results = run_recipe(path, folds=1)
    assert [r["fold"] for r in results] == ["Ses01"]
    for result in results:
        assert result["status"] == "done"
        assert result["names"]["fusion"] == "gated"
        assert result["epochs_run"] >= 1 and result["sizes"]["test"] > 0
        assert 0.0 <= result["metrics"]["test"]["ua"] <= 1.0


@pytest.mark.usefixtures("installed")
def test_blocked_plugin_makes_the_recipe_invalid(tmp_path):
    path = tmp_path / "gated.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    assert CliRunner().invoke(main, ["validate", str(path)]).exit_code == 0
    run = subprocess.run(
        [sys.executable, "-c", "from emoplug.cli import main; main()", "validate", str(path)],
        capture_output=True, text=True, timeout=60,
        env=clean_env(EMOPLUG_DISABLE_PLUGINS="gated"))
    assert run.returncode == 2, run.stderr
    # the registry may add a close match, e.g. "(did you mean 'late'?)", before "; available"
    assert re.search(rf"^error: {re.escape(str(path))}: fusion\.gated\.type: unknown fusion "
                     r"'gated'( \(did you mean '\w+'\?\))?; available: attention, early, "
                     r"hybrid, late, none$", run.stderr, re.MULTILINE), run.stderr


@pytest.mark.usefixtures("installed")
def test_example_suite_passes(tmp_path, emoplug_cache_dir):
    """The example's own tests (outside ``testpaths``) run here, in a fresh pytest that
    reuses this session's demo corpus, tiny model and features."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'basetemp'}"],
        capture_output=True, text=True, timeout=300, cwd=EXAMPLE,
        env=clean_env(EMOPLUG_TEST_CACHE=str(emoplug_cache_dir)))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout


def test_tutorial_shows_the_example_files_verbatim():
    blocks = TUTORIAL_FILE.findall((ROOT / "docs" / "plugins" / "tutorial.md").read_text())
    assert {path for path, _ in blocks} == {
        "pyproject.toml", "src/emoplug_gated_fusion/__init__.py",
        "src/emoplug_gated_fusion/fusion.py", "src/emoplug_gated_fusion/module.py"}
    for path, code in blocks:
        assert code == (EXAMPLE / path).read_text(), f"tutorial.md is out of date for {path}"


def test_example_imports_only_the_public_api():
    """The example may import emoplug's top-level API, pydantic and torch, nothing else."""
    allowed = {"__future__", "collections", "typing", "pydantic", "torch", "emoplug",
               "emoplug_gated_fusion"}
    for path in (EXAMPLE / "src" / "emoplug_gated_fusion").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in allowed, f"{path.name} imports {module}"
                assert not module.startswith("emoplug."), f"{path.name} imports {module}"
