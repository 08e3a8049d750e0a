"""Bundled fusion strategies: early, late, hybrid, attention and none (one modality).

Each strategy is an :class:`emoplug.Fusion` in :mod:`emoplug_fusion.strategies`; its
``build`` returns an ``nn.Module`` from :mod:`emoplug_fusion.modules` mapping
``{modality: Encoded}`` to ``[B, out_dim]``. Shared layers live in :mod:`emoplug_fusion.layers`.
"""

from __future__ import annotations

from emoplug import hookimpl


@hookimpl
def emoplug_register_fusions(register):
    from emoplug_fusion.strategies import (
        AttentionFusion,
        EarlyFusion,
        HybridFusion,
        LateFusion,
        NoFusion,
    )

    for cls in (EarlyFusion, LateFusion, HybridFusion, AttentionFusion, NoFusion):
        register(cls)
