"""The RDF-by-layer figure, drawn on plain matplotlib Figures (no pyplot, any backend).

Imported only when a figure is asked for: matplotlib is not needed to analyse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dfp_engine.results import Checkpoint, LayerAnalysis

# Panels per figure at most: long checkpoint schedules show evenly chosen epochs, ends included.
MAX_PANELS = 12


def pick_evenly(items: list[Any], limit: int = MAX_PANELS) -> list[Any]:
    """At most `limit` items spread evenly, first and last kept."""
    if len(items) <= limit:
        return items
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def panels(n: int, width: float = 4.0, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    """A figure with n axes, four to a row."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    # Fixed margins: a layout engine costs seconds on a 12-panel figure.
    fig.subplots_adjust(
        left=0.25 / cols,
        right=1 - 0.06 / cols,
        bottom=0.45 / (height * rows),
        top=1 - 0.8 / (height * rows),
        wspace=0.28,
        hspace=0.42 * 3.2 / height,
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def rdf_line(ax: Axes, layer: LayerAnalysis, label: str, color: Any = None) -> None:
    """One layer's RDF against 1/δ, with a dotted mark at its peak."""
    ax.plot(
        layer.rdf_inverse_deltas, layer.rdf, marker="o", ms=2.5, lw=1.2, label=label, color=color
    )
    if layer.peak_inverse_delta is not None:
        ax.axvline(layer.peak_inverse_delta, color=ax.lines[-1].get_color(), lw=0.6, ls=":")


def style_rdf(ax: Axes, title: str) -> None:
    """Log 1/δ axis, labels and a light grid."""
    ax.set(xscale="log", xlabel="1/δ", ylabel="RDF", title=title)
    ax.grid(alpha=0.3)


def rdf_by_layer(
    checkpoints: Sequence[Checkpoint], title: str, *, epoch_titles: bool = True
) -> Figure:
    """One panel per checkpoint, one line per analysed layer: RDF against 1/δ."""
    chosen = pick_evenly(list(checkpoints))
    fig, axes = panels(max(len(chosen), 1))
    cmap = matplotlib.colormaps["viridis"]
    for ax, checkpoint in zip(axes, chosen, strict=False):
        n = len(checkpoint.layers)
        for k, layer in enumerate(checkpoint.layers):
            rdf_line(ax, layer, layer.layer, cmap(k / max(n - 1, 1)))
        style_rdf(ax, f"epoch {checkpoint.epoch}" if epoch_titles else "")
    if chosen:
        axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    return fig
