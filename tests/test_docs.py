"""The code in README.md and docs/ runs as written on a fresh install (issue 23.8).

Every fenced block is found, and what it is decides how it is checked:

- ``python``: the blocks of one page run in order as one script (later blocks may use
  earlier ones), in a folder holding a finished run at ``runs/quickstart`` with its report,
  as after ``make demo``. A page whose blocks define ``test_*`` functions is run by pytest,
  which is how those examples are meant to run. Two kinds of block are compiled only:
  signature excerpts (every function body is ``...``; a class excerpt's methods must exist
  on the ``emoplug`` class it names) and the example plugin's files (``<!-- file: PATH -->``
  before the block; ``test_example_plugin.py`` compares them with the files and runs them).
- ``bash``/``console``: every ``emoplug`` command line must parse (its subcommand, options and
  arguments exist); synopsis lines (``[--json]``, ``A|B``, ``RUN_DIR``) are left out. The
  ``emoplug plan``/``validate``/``plugins`` lines of ``bash`` blocks run, with the block's
  ``export``s, and must exit 0.

A block that cannot run here (external data, a model only a long run produces) has
``<!-- no-run: REASON -->`` on the line before it: it is compiled, not run. Keep these few.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

import emoplug
from emoplug.cli import main
from emoplug.report import write_report

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
BLOCK = re.compile(r"^(?:<!-- (?P<marker>[\w-]+):?\s*(?P<note>.*?) -->\n)?"
                   r"```(?P<lang>\w*)\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)
SYNOPSIS = re.compile(r"\[|\||<|\b[A-Z][A-Z_]{2,}\b")
RUNS = ("plan", "validate", "plugins")
COMMAND = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(?:emoplug|export)\s")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    body: str
    marker: str | None
    note: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [Block(page, text[:m.start("lang")].count("\n") + 1, m["lang"], m["body"],
                  m["marker"], m["note"]) for m in BLOCK.finditer(text)]


ALL = [b for page in PAGES for b in blocks(page)]


def is_signature_excerpt(tree: ast.Module) -> bool:
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    return bool(functions) and all(
        len(f.body) == 1 and isinstance(f.body[0], ast.Expr)
        and getattr(f.body[0].value, "value", None) is Ellipsis for f in functions)


def test_no_run_markers_are_few_and_give_a_reason():
    skipped = [b for b in ALL if b.marker == "no-run"]
    assert all(b.note for b in skipped), [b.where for b in skipped if not b.note]
    assert len(skipped) <= 5, [b.where for b in skipped]
    assert {b.marker for b in ALL} <= {None, "no-run", "file"}


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "python"],
                         ids=lambda b: b.where)
def test_python_blocks_compile_and_signature_excerpts_match_the_api(block):
    tree = ast.parse(block.body, block.where)
    if not is_signature_excerpt(tree):
        return
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        real = getattr(emoplug, cls.name)
        for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            assert callable(getattr(real, method.name, None)), f"{cls.name}.{method.name}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder as after ``make demo``: a finished run at runs/quickstart with its report."""
    from test_report import make_run

    root = tmp_path_factory.mktemp("docs")
    run = make_run(root / "made")
    shutil.move(str(run), root / "runs" / "quickstart")
    write_report(root / "runs" / "quickstart", None, ["csv"])
    return root


def runnable_pages() -> list[Path]:
    return [p for p in PAGES if any(b.lang == "python" and b.marker is None
                                    and not is_signature_excerpt(ast.parse(b.body))
                                    for b in blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, workdir, emoplug_cache_dir):
    parts = [textwrap.dedent(b.body) for b in blocks(page) if b.lang == "python"
             and b.marker is None and not is_signature_excerpt(ast.parse(b.body))]
    script = "\n\n".join(parts)
    defines_tests = re.search(r"^def test_", script, re.MULTILINE) is not None
    path = workdir / (f"test_doc_{page.stem}.py" if defines_tests else f"doc_{page.stem}.py")
    path.write_text(script)
    command = ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name,
                f"--basetemp={workdir / ('tmp-' + page.stem)}"]
               if defines_tests else [sys.executable, path.name])
    # the examples' tests reuse this session's demo corpus, tiny model and features
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": "",
                               "EMOPLUG_TEST_CACHE": str(emoplug_cache_dir)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def command_lines() -> list[tuple[Block, list[str], dict[str, str]]]:
    """(block, argv after ``emoplug``, environment) of every non-synopsis command line."""
    out = []
    for block in (b for b in ALL if b.lang in ("bash", "console")):
        env: dict[str, str] = {}
        for raw in block.body.replace("\\\n", " ").splitlines():
            if block.lang == "console" and not raw.startswith("$ "):
                continue  # output
            line = raw.removeprefix("$ ").strip()
            if not COMMAND.match(line):
                continue
            words = shlex.split(line, comments=True)
            if words[:1] == ["export"]:
                env.update(w.split("=", 1) for w in words[1:])
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                env.update([words.pop(0).split("=", 1)])
            if words[:1] == ["emoplug"] and not SYNOPSIS.search(line.split("#")[0]):
                out.append((block, words[1:], dict(env)))
    return out


COMMANDS = command_lines()


def ids(commands) -> list[str]:
    return [f"{b.where} {' '.join(argv)[:50]}" for b, argv, _ in commands]


@pytest.mark.parametrize("block, argv, env", COMMANDS, ids=ids(COMMANDS))
def test_documented_command_lines_parse(block, argv, env):
    ctx = click.Context(main, info_name="emoplug")
    command, name, args = main, "emoplug", list(argv)
    while isinstance(command, click.Group):
        name, command, args = command.resolve_command(ctx, args)
        ctx = click.Context(command, info_name=name, parent=ctx)
    command.make_context(name, args, parent=ctx.parent)  # raises on a bad option or argument


QUICK = [c for c in COMMANDS if c[0].lang == "bash" and c[1][0] in RUNS and c[0].marker is None]


@pytest.mark.parametrize("block, argv, env", QUICK, ids=ids(QUICK))
def test_documented_quick_commands_run(block, argv, env):
    done = subprocess.run(["emoplug", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env})
    assert done.returncode == 0, f"{block.where}: {done.stderr}"
