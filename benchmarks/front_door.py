"""Time the README's front door from a fresh clone: ``make test`` and ``make demo``.

The repository is cloned (``git clone``: committed files only) into a temporary folder with
a new virtual environment, and each command runs there as a new user would type it, its
install step included. Writes ``benchmarks/results/front_door.json`` with each command, its
exit code and seconds. Takes as long as the commands (about 7 + 5 minutes on a quiet 2-core
machine, plus the installs): ``python benchmarks/front_door.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_report  # noqa: E402

COMMANDS = ("make test", "make demo")


def run_timed(command: str, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``command`` in a shell; its exit code, seconds and last output lines."""
    start = time.monotonic()
    done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True,
                          text=True)
    seconds = round(time.monotonic() - start, 1)
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    print(f"{command}: exit {done.returncode} in {seconds} s")
    return {"command": command, "returncode": done.returncode, "seconds": seconds,
            "output_tail": tail}


def measure(repo: Path, work: Path, commands: tuple[str, ...] = COMMANDS,
            venv: bool = True) -> dict[str, Any]:
    """Clone ``repo`` into ``work/emoplug``, make a virtual environment there (``venv``),
    and time each command in the clone with that environment first on ``PATH``."""
    clone = work / "emoplug"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True,
                            capture_output=True, text=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    setup = []
    if venv:
        setup.append(run_timed(f"{sys.executable} -m venv .venv", clone, env))
        env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(clone / ".venv")
        env["PYTHON"] = str(clone / ".venv" / "bin" / "python")
    return {"clone": {"from": str(repo), "commit": commit}, "setup": setup,
            "results": [run_timed(c, clone, env) for c in commands]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="repository to clone")
    parser.add_argument("--out", help="report path (default benchmarks/results/front_door.json)")
    args = parser.parse_args()
    before = machine()
    with tempfile.TemporaryDirectory(prefix="emoplug-front-door-") as work:
        figures = measure(args.repo, Path(work))
    write_report("front_door", args.out, machine=before, load_average_after=machine()[
        "load_average_1min"], **figures)
    if any(r["returncode"] for r in figures["results"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
