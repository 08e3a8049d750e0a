"""The report's figures: grouped bars, forest plots of paired differences, confusion matrices,
score matrices (cross-corpus train × test).

Each chart is a small dataclass holding its data; ``save_chart`` draws it with matplotlib's
Agg canvas (headless, no pyplot state) and writes ``<stem>.png`` and ``<stem>.svg``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoplug.report.stats import PairedTest, Summary

DPI = 120


@dataclass
class BarChart:
    """Bars of means with ±std error bars: one bar per series inside each x group."""

    title: str
    groups: list[str]
    series: dict[str, list[Summary]]
    ylabel: str

    def size(self) -> tuple[float, float]:
        width = 1.2 + 0.35 * len(self.groups) * max(1, len(self.series))
        return min(max(width, 6.0), 14.0), 3.8 + 0.2 * len(self.series)

    def draw(self, fig: Any) -> None:
        ax = fig.add_subplot()
        count = max(1, len(self.series))
        width = 0.8 / count
        x = np.arange(len(self.groups))
        for i, (name, values) in enumerate(self.series.items()):
            means = [v.mean for v in values]
            errors = [0.0 if math.isnan(v.std) else v.std for v in values]
            ax.bar(x + (i - (count - 1) / 2) * width, means, width, yerr=errors, capsize=3,
                   label=name)
        ax.set_xticks(x, self.groups, rotation=20 if len(self.groups) > 4 else 0, ha="right"
                      if len(self.groups) > 4 else "center")
        ax.set_ylabel(self.ylabel)
        ax.grid(axis="y", alpha=0.3)
        fig.suptitle(self.title)
        one_row = sum(len(name) for name in self.series) * 0.075 < self.size()[0]
        fig.legend(loc="outside lower center", ncols=len(self.series) if one_row else 1,
                   fontsize="small")


@dataclass
class ForestPlot:
    """Mean paired differences with their 95% confidence intervals, one row per comparison."""

    title: str
    labels: list[str]
    tests: list[PairedTest]
    xlabel: str

    def size(self) -> tuple[float, float]:
        return 9.0, 1.5 + 0.45 * len(self.labels)

    def draw(self, fig: Any) -> None:
        ax = fig.add_subplot()
        y = np.arange(len(self.labels))[::-1]
        means = np.array([t.mean_diff for t in self.tests])
        low = np.array([t.ci_low for t in self.tests])
        high = np.array([t.ci_high for t in self.tests])
        has_ci = np.isfinite(low) & np.isfinite(high)
        errors = np.vstack([np.where(has_ci, means - low, 0.0), np.where(has_ci, high - means, 0)])
        ax.errorbar(means, y, xerr=errors, fmt="o", capsize=4, color="tab:blue")
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(y, self.labels)
        ax.set_ylim(-0.6, len(self.labels) - 0.4)
        ax.set_xlabel(self.xlabel)
        fig.suptitle(self.title)
        ax.grid(axis="x", alpha=0.3)


@dataclass
class ConfusionGrid:
    """Row-normalised confusion matrices side by side (cell annotations in %)."""

    title: str
    labels: list[str]
    panels: list[tuple[str, np.ndarray]] = field(default_factory=list)
    #: "compressed" packs square panels under the title (no empty band between them)
    layout: str = "compressed"

    def size(self) -> tuple[float, float]:
        """Square panels with room for tick labels, and a height that matches them, so that
        no empty band opens under the title (a panel shrinks to the narrower side)."""
        matrix = 0.5 * len(self.labels)
        panel = matrix + 1.2  # y tick labels and the y label beside each matrix
        scale = min(1.0, 18.0 / (panel * len(self.panels) + 1.0))
        return (panel * len(self.panels) + 1.0) * scale, matrix * scale + 1.9

    def draw(self, fig: Any) -> None:
        axes = fig.subplots(1, len(self.panels), squeeze=False)[0]
        ticks = np.arange(len(self.labels))
        for ax, (name, matrix) in zip(axes, self.panels, strict=True):
            image = ax.imshow(100 * matrix, cmap="Blues", vmin=0.0, vmax=100.0)
            for (row, col), value in np.ndenumerate(matrix):
                ax.text(col, row, "" if math.isnan(value) else f"{100 * value:.0f}",
                        ha="center", va="center", fontsize="small",
                        color="white" if value > 0.6 else "black")
            ax.set_xticks(ticks, self.labels, rotation=45, ha="right")
            ax.set_yticks(ticks, self.labels)
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.set_title(name, fontsize="small")
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="% of the gold class")
        fig.suptitle(self.title)


@dataclass
class LineChart:
    """Lines over a shared integer x axis (e.g. the best objective after each tuning trial),
    one per series."""

    title: str
    series: dict[str, list[float]]
    xlabel: str
    ylabel: str

    def size(self) -> tuple[float, float]:
        return 7.0, 3.8 + 0.2 * len(self.series)

    def draw(self, fig: Any) -> None:
        ax = fig.add_subplot()
        for name, values in self.series.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3,
                    label=name)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(self.xlabel)
        ax.set_ylabel(self.ylabel)
        ax.grid(alpha=0.3)
        fig.suptitle(self.title)
        fig.legend(loc="outside lower center", ncols=1, fontsize="small")


@dataclass
class ScoreMatrix:
    """Heatmaps of a score in % side by side, one per panel: ``(name, row labels, column
    labels, values)`` with ``values[row, col]`` in [0, 1] (``nan`` = not run, left blank).
    The last ``reference_rows`` rows of each panel (e.g. in-corpus scores) are set apart by a
    line."""

    title: str
    panels: list[tuple[str, list[str], list[str], np.ndarray]]
    label: str
    reference_rows: int = 0
    layout: str = "compressed"

    def size(self) -> tuple[float, float]:
        rows = max(len(r) for _, r, _, _ in self.panels)
        cols = max(len(c) for _, _, c, _ in self.panels)
        panel = 0.9 * cols + 2.0  # row labels beside each matrix
        scale = min(1.0, 18.0 / (panel * len(self.panels) + 1.0))
        return (panel * len(self.panels) + 1.0) * scale, (0.6 * rows + 2.2) * scale

    def draw(self, fig: Any) -> None:
        axes = fig.subplots(1, len(self.panels), squeeze=False)[0]
        for ax, (name, rows, cols, values) in zip(axes, self.panels, strict=True):
            image = ax.imshow(100 * values, cmap="viridis", vmin=0.0, vmax=100.0,
                              aspect="auto")
            for (row, col), value in np.ndenumerate(values):
                if not math.isnan(value):
                    ax.text(col, row, f"{100 * value:.1f}", ha="center", va="center",
                            fontsize="small", color="black" if value > 0.6 else "white")
            if self.reference_rows:
                ax.axhline(len(rows) - self.reference_rows - 0.5, color="white", linewidth=3)
            ax.set_xticks(np.arange(len(cols)), cols, rotation=30, ha="right")
            ax.set_yticks(np.arange(len(rows)), rows)
            ax.set_xlabel("test corpus")
            ax.set_ylabel("trained on")
            ax.set_title(name, fontsize="small")
        fig.colorbar(image, ax=list(axes), shrink=0.8, label=self.label)
        fig.suptitle(self.title)


Chart = BarChart | ForestPlot | ConfusionGrid | LineChart | ScoreMatrix


def save_chart(chart: Chart, folder: Path, stem: str) -> dict[str, Path]:
    """Draw ``chart`` headless and write ``folder/<stem>.png`` and ``.svg``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"png": folder / f"{stem}.png", "svg": folder / f"{stem}.svg"}
    with matplotlib.rc_context({"svg.hashsalt": "emoplug", "font.size": 9}):
        fig = Figure(figsize=chart.size(), layout=getattr(chart, "layout", "constrained"))
        FigureCanvasAgg(fig)
        chart.draw(fig)
        fig.savefig(paths["png"], dpi=DPI, metadata={"Software": None})
        fig.savefig(paths["svg"], metadata={"Date": None})
    return paths
