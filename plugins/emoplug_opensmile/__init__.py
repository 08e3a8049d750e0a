"""Bundled openSMILE featurizers: ``egemaps`` (eGeMAPSv02) and ``compare`` (ComParE 2016).

They need the ``opensmile`` package (the optional extra ``emoplug[opensmile]``), which is
imported only when features are computed: without it this plugin still loads, and the
featurizers report themselves unavailable (``Component.unavailable_reason``). openSMILE is
free for research and education only; see docs/audio-features.md for its licence.
"""

from __future__ import annotations

from emoplug import hookimpl


@hookimpl
def emoplug_register_audio_featurizers(register):
    from emoplug_opensmile.featurizers import Compare, Egemaps

    for cls in (Egemaps, Compare):
        register(cls)
