"""The bundled report sections, registered through ``emoplug_register_report_sections`` like
a third party's: the core's registry registers this module as the plugin ``report``.

Light to import: the section builders (numpy, scipy) are imported when a report is built.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from emoplug import hookimpl


@hookimpl
def emoplug_register_report_sections(register: Any) -> None:
    from emoplug.report import (
        comparisons,
        cross_corpus,
        data,
        leakage,
        sections,
        speakers,
        stopping,
        transcripts,
        tuning,
    )

    grouped = comparisons.grouped_section
    for order, key, build in (
            (10, "results", sections.results_section),
            (20, "missing", sections.missing_section),
            (25, "data", data.data_section),
            (30, "protocol", leakage.protocol_section),
            (35, "cross_corpus", cross_corpus.cross_corpus_section),
            (40, "control", comparisons.control_section),
            (50, "stage1", sections.stage1_section),
            (60, "approach", comparisons.approach_section),
            (70, "modality", comparisons.modality_section),
            (75, "speakers", speakers.speakers_section),
            (80, "text_encoders", partial(
                grouped, axis="text", key="text_encoders", title="Transformer comparison",
                text="Cells with text (text only and multimodal), grouped by text encoder.")),
            (90, "audio_features", partial(
                grouped, axis="audio", key="audio_features", title="Audio feature comparison",
                text="Cells with audio (audio only and multimodal), grouped by audio "
                     "feature.")),
            (100, "fusion", partial(
                grouped, axis="fusion", key="fusion", title="Fusion comparison",
                text="Multimodal cells, grouped by fusion strategy.")),
            (110, "staged", comparisons.staged_section),
            (115, "transcripts", transcripts.transcripts_section),
            (120, "settings", comparisons.setting_section),
            (130, "ablation", comparisons.ablation_section),
            (140, "confusion", sections.confusion_section),
            (150, "stopping", stopping.stopping_section),
            (160, "tuning", tuning.tuning_section),
            (900, "compute", sections.compute_section)):
        register(key, build, order=order)
