"""Bundled decision approaches: direct classification, two-stage (AVD -> category), joint.

Each approach is an :class:`emoplug.Approach`: it sets the network's output size, its loss and
how outputs become predictions. The modules here import torch, numpy and scikit-learn only
inside methods, so registering them stays cheap.
"""

from __future__ import annotations

from emoplug import hookimpl


@hookimpl
def emoplug_register_approaches(register):
    from emoplug_approaches.direct import DirectApproach
    from emoplug_approaches.joint import JointApproach
    from emoplug_approaches.two_stage import TwoStageApproach

    for cls in (DirectApproach, TwoStageApproach, JointApproach):
        register(cls)
