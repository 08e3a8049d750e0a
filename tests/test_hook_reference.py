"""docs/plugins/hooks.md documents every hook of ``emoplug.hookspecs`` with its exact signature.

Each hook has a section headed ``## `<hook name>` `` whose first ``python`` block is the
signature (``def <hook>(<params>) -> <return>: ...``), and which says when it is called and
what it returns.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from emoplug import hookspecs

HOOKS_MD = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "hooks.md"
SECTION = re.compile(r"^## `(emoplug_\w+)`\s*$", re.MULTILINE)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)

Signature = tuple[tuple[tuple[str, str, str | None], ...], str | None]


def spec_hooks() -> dict[str, object]:
    return {name: fn for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, "emoplug_spec")}


def _normalise(annotation: object) -> str | None:
    if annotation is inspect.Parameter.empty or annotation is None:
        return None
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return ast.unparse(ast.parse(text, mode="eval"))


def spec_signature(fn: object) -> Signature:
    sig = inspect.signature(fn)
    params = tuple((p.name, p.kind.name, _normalise(p.annotation))
                   for p in sig.parameters.values())
    return params, _normalise(sig.return_annotation)


def doc_signature(code: str, name: str) -> Signature | None:
    """The signature of ``def <name>`` in a documented code block, or None if absent."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            args = node.args
            kinds = ([(a, "POSITIONAL_ONLY") for a in args.posonlyargs]
                     + [(a, "POSITIONAL_OR_KEYWORD") for a in args.args]
                     + ([(args.vararg, "VAR_POSITIONAL")] if args.vararg else [])
                     + [(a, "KEYWORD_ONLY") for a in args.kwonlyargs]
                     + ([(args.kwarg, "VAR_KEYWORD")] if args.kwarg else []))
            params = tuple((a.arg, kind, ast.unparse(a.annotation) if a.annotation else None)
                           for a, kind in kinds)
            return params, ast.unparse(node.returns) if node.returns else None
    return None


def reference_problems(markdown: str) -> list[str]:
    """Everything wrong with ``markdown`` as the reference of the hooks in ``hookspecs``."""
    problems = []
    headings = list(SECTION.finditer(markdown))
    sections = {}
    for i, match in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(markdown)
        if match.group(1) in sections:
            problems.append(f"{match.group(1)}: documented twice")
        sections[match.group(1)] = markdown[match.end():end]
    hooks = spec_hooks()
    for name in sorted(set(sections) - set(hooks)):
        problems.append(f"{name}: documented but not a hook in emoplug.hookspecs")
    for name, fn in sorted(hooks.items()):
        if name not in sections:
            problems.append(f"{name}: no '## `{name}`' section")
            continue
        block = PYTHON_BLOCK.search(sections[name])
        documented = doc_signature(block.group(1), name) if block else None
        if documented is None:
            problems.append(f"{name}: the section's first python block has no 'def {name}'")
        elif documented != spec_signature(fn):
            problems.append(f"{name}: documented as {documented}, hookspec is "
                            f"{spec_signature(fn)}")
        for word in ("**Called:**", "**Returns:**"):
            if word not in sections[name]:
                problems.append(f"{name}: the section does not say {word}")
    return problems


def test_every_hook_is_documented_with_its_signature():
    assert reference_problems(HOOKS_MD.read_text(encoding="utf-8")) == []


def test_registration_hooks_are_the_registry_kinds_and_the_report_sections():
    from emoplug.registry import KINDS

    registration = {name for name in spec_hooks() if name.startswith("emoplug_register_")}
    assert registration == {kind.hook for kind in KINDS.values()} | {
        "emoplug_register_report_sections"}


def test_checker_catches_missing_stale_and_wrong_signatures():
    good = HOOKS_MD.read_text(encoding="utf-8")
    renamed = good.replace("def emoplug_register_fusions(register: Any)",
                           "def emoplug_register_fusions(registry: Any)")
    assert any("emoplug_register_fusions: documented as" in p
               for p in reference_problems(renamed))
    retyped = good.replace("def emoplug_job_finished(job: Any, result: dict)",
                           "def emoplug_job_finished(job: Any, result: list)")
    assert any(p.startswith("emoplug_job_finished: documented as")
               for p in reference_problems(retyped))
    dropped = good.replace("## `emoplug_run_finished`", "## Run finished")
    assert "emoplug_run_finished: no '## `emoplug_run_finished`' section" in \
        reference_problems(dropped)
    stale = good + "\n## `emoplug_old_hook`\n\n```python\ndef emoplug_old_hook(): ...\n```\n"
    assert "emoplug_old_hook: documented but not a hook in emoplug.hookspecs" in \
        reference_problems(stale)
