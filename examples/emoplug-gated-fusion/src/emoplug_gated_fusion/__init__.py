"""A gated multimodal unit (GMU) fusion for emoplug, shipped as a separate distribution.

emoplug loads this module through the ``emoplug`` entry point declared in ``pyproject.toml``
and calls the hook below once. The module stays light to import: torch loads only when a
fusion is built (see :mod:`emoplug_gated_fusion.fusion`).
"""

from __future__ import annotations

from emoplug import hookimpl

__version__ = "0.1.0"


@hookimpl
def emoplug_register_fusions(register):
    from emoplug_gated_fusion.fusion import GatedFusion

    register(GatedFusion)
