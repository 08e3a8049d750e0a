"""The README's commands leave nothing out (issue 23.9): ``make test`` installs what the suite
needs first, CI runs that same command, and ``benchmarks/front_door.py`` times it from a
fresh clone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import front_door  # noqa: E402


def dry_run(target: str) -> list[str]:
    done = subprocess.run(["make", "--dry-run", target], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return done.stdout.splitlines()


def test_make_test_installs_the_example_plugin_before_running_the_suite():
    steps = dry_run("test")
    example = [i for i, s in enumerate(steps) if "pip install" in s
               and "examples/emoplug-gated-fusion" in s]
    dev = [i for i, s in enumerate(steps) if re.search(r"pip install .*-e \"\.\[dev\]\"", s)]
    tests = [i for i, s in enumerate(steps) if "-m pytest" in s]
    assert example and dev and tests and max(example + dev) < tests[0]


def test_ci_and_readme_run_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "```bash\nmake test\n```" in readme
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith("#")]
    assert ci[-1].startswith("make ") and "test" in ci[-1].split()[1:]
    assert not any("pip install" in line for line in ci)  # make does every install


def test_front_door_clones_and_times_each_command(tmp_path):
    figures = front_door.measure(ROOT, tmp_path, ("make --dry-run test", "false"), venv=False)
    assert (tmp_path / "emoplug" / "Makefile").is_file()
    assert len(figures["clone"]["commit"]) == 40
    first, second = figures["results"]
    assert first["command"] == "make --dry-run test" and first["returncode"] == 0
    assert any("-m pytest" in line for line in first["output_tail"])
    assert second["returncode"] == 1 and second["seconds"] >= 0
