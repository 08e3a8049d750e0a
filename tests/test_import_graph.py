"""The import graph of ``emoplug.train`` (built by grimp) has no circle."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

import grimp


def test_no_import_circle_inside_train():
    graph = grimp.build_graph("emoplug", cache_dir=None)
    train = {m for m in graph.modules if m.startswith("emoplug.train.")}
    imports = {m: graph.find_modules_directly_imported_by(m) & train for m in train}
    try:
        TopologicalSorter(imports).prepare()
    except CycleError as circle:  # today: runner <-> workers, text_stage -> saving -> ...
        raise AssertionError(f"import circle in emoplug.train: {circle.args[1]}") from None
