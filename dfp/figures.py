"""Figures a reader of the paper recognises, drawn with matplotlib's non-interactive backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from dfp_engine.frequency import FrequencyResult


def plot_frequency(result: FrequencyResult, path: Path, *, title: str | None = None) -> Path:
    """LFR and RDF against 1/δ side by side, saved as PNG."""
    fig, (ax_lfr, ax_rdf) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_lfr.plot(result.inverse_deltas, result.lfr, marker="o", ms=3)
    ax_lfr.axhline(result.lfr_limit, color="grey", ls=":", lw=1, label="limit δ → ∞")
    ax_lfr.set(xlabel="1/δ", ylabel="LFR", title="Low frequency ratio")
    ax_lfr.legend(loc="lower right")
    ax_rdf.plot(result.rdf_inverse_deltas, result.rdf, marker="o", ms=3)
    if result.peak_inverse_delta is not None:
        ax_rdf.axvline(result.peak_inverse_delta, color="C3", ls="--", lw=1, label="peak")
        ax_rdf.legend(loc="upper right")
    ax_rdf.set(xlabel="1/δ", ylabel="RDF", title="Ratio density function")
    for ax in (ax_lfr, ax_rdf):
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"n = {result.n_samples}, d = {result.dim}, {result.normalization}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
