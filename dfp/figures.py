"""Figures a reader of the paper recognises, drawn with matplotlib's non-interactive backend."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from dfp_engine.plots import panels as _panels
from dfp_engine.plots import pick_evenly as _pick
from dfp_engine.plots import rdf_by_layer
from dfp_engine.plots import rdf_line as _rdf_line
from dfp_engine.plots import style_rdf as _style_rdf
from dfp_engine.results import Checkpoint, ExperimentResult, LayerAnalysis, RunResult

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


# ------------------------------------------------------------ experiment figures
#
# Every figure below is a pure function of a stored ExperimentResult (or its JSON dict), so the
# CLI and the service draw the same pictures: `figure_names(result)` lists what applies and
# `render_figure(result, name)` returns PNG bytes.


def _as_result(result: ExperimentResult | Mapping[str, Any]) -> ExperimentResult:
    if isinstance(result, ExperimentResult):
        return result
    return ExperimentResult.model_validate(result)


def _sweep_field(result: ExperimentResult) -> str | None:
    sweep = result.spec.get("sweep")
    return sweep.get("field") if isinstance(sweep, dict) else None


def _run_label(result: ExperimentResult, run: RunResult) -> str:
    field = _sweep_field(result)
    if field is None:
        return str(result.spec.get("name", "run"))
    return f"{field.rsplit('.', 1)[-1]} = {run.sweep_value}"


def _unchanging(run: RunResult) -> bool:
    """Whether every analysed layer's RDF is the same at every checkpoint (only the input is
    analysed, say): panels per checkpoint would all look alike."""
    first = {la.layer: la.rdf for la in run.checkpoints[0].layers}
    return all(first.get(la.layer) == la.rdf for c in run.checkpoints[1:] for la in c.layers)


def _rdf_layers(result: ExperimentResult, run: RunResult) -> Figure:
    """One panel per checkpoint, one line per analysed layer: RDF against 1/δ."""
    title = f"RDF of each layer's effective target ({_run_label(result, run)})"
    if _unchanging(run):
        return rdf_by_layer(run.checkpoints[:1], f"{title}, the same at every checkpoint")
    return rdf_by_layer(run.checkpoints, title)


def _rdf_across_runs(result: ExperimentResult) -> Figure:
    """One panel per checkpoint epoch, one line per run: the summary layer's RDF."""
    layers = {row.sweep_value.__repr__(): row.layer for row in result.summary}
    epochs = sorted({c.epoch for run in result.runs for c in run.checkpoints})
    chosen = _pick(epochs)
    fig, axes = _panels(max(len(chosen), 1))
    cmap = plt.get_cmap("plasma")
    for ax, epoch in zip(axes, chosen, strict=False):
        for k, run in enumerate(result.runs):
            name = layers.get(run.sweep_value.__repr__())
            checkpoint = next((c for c in run.checkpoints if c.epoch == epoch), None)
            layer = _layer(checkpoint, name)
            if layer is not None:
                color = cmap(0.85 * k / max(len(result.runs) - 1, 1))
                _rdf_line(ax, layer, f"{_run_label(result, run)} ({layer.layer})", color)
        _style_rdf(ax, f"epoch {epoch}")
    if chosen:
        axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("RDF of the summary layer across runs")
    return fig


def _layer(checkpoint: Checkpoint | None, name: str | None) -> LayerAnalysis | None:
    if checkpoint is None or name is None:
        return None
    return next((la for la in checkpoint.layers if la.layer == name), None)


def _peaks(result: ExperimentResult, run: RunResult) -> Figure:
    """RDF peak position (1/δ) of every analysed layer over training."""
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    names = run.layer_names or [la.layer for la in run.checkpoints[0].layers]
    for k, name in enumerate(names):
        points = [
            (c.epoch, la.peak_inverse_delta)
            for c in run.checkpoints
            if (la := _layer(c, name)) is not None and la.peak_inverse_delta is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, label=name, color=cmap(k / max(len(names) - 1, 1)))
    ax.set(yscale="log", xlabel="epoch", ylabel="RDF peak 1/δ", title=_run_label(result, run))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _loss_curves(result: ExperimentResult) -> Figure:
    """Training (solid) and test (dashed) loss per run against epochs."""
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    cmap = plt.get_cmap("plasma")
    for k, run in enumerate(result.runs):
        color = cmap(0.85 * k / max(len(result.runs) - 1, 1))
        epochs = [h.epoch for h in run.history]
        ax.plot(
            epochs,
            [h.train_loss for h in run.history],
            color=color,
            lw=1.2,
            label=_run_label(result, run),
        )
        test = [(h.epoch, h.test_loss) for h in run.history if h.test_loss is not None]
        if test:
            xs, ys = zip(*test, strict=True)
            ax.plot(xs, ys, color=color, lw=1, ls="--")
    target = result.spec.get("training", {}).get("target_loss")
    if target is not None:
        ax.axhline(target, color="grey", lw=0.8, ls=":", label="target loss")
    ax.set(yscale="log", xlabel="epoch", ylabel="loss", title="Loss (train solid, test dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _steps_to_target(result: ExperimentResult) -> Figure:
    """Steps to the target loss against the swept value; runs that missed it sit on top."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    labels = [str(row.sweep_value) for row in result.summary]
    reached = [
        (i, row.steps_to_target)
        for i, row in enumerate(result.summary)
        if row.steps_to_target is not None
    ]
    missed = [i for i, row in enumerate(result.summary) if row.steps_to_target is None]
    if reached:
        xs, ys = zip(*reached, strict=True)
        ax.plot(xs, ys, marker="o", color="C0", label="reached")
    ceiling = max(
        [y for _, y in reached]
        + [max((r.history[-1].step for r in result.runs if r.history), default=1)]
    )
    if missed:
        ax.scatter(
            missed,
            [ceiling] * len(missed),
            marker="^",
            facecolors="none",
            edgecolors="C3",
            label="not reached",
        )
    ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0)
    field = _sweep_field(result) or "run"
    target = result.spec.get("training", {}).get("target_loss")
    note = _verdict_note(result, "deeper_is_faster") or _verdict_note(
        result, "lower_frequency_is_faster"
    )
    ax.set(xlabel=field, ylabel="steps to target", title=f"Steps to train loss {target}{note}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _filtering(result: ExperimentResult, run: RunResult) -> Figure:
    """e_low and e_high of the filtering test over epochs (columns) and δ (rows)."""
    layers = [la for c in run.checkpoints for la in c.layers if la.e_low is not None][:1]
    name = layers[0].layer if layers else "input"
    rows = [
        (c.epoch, la)
        for c in run.checkpoints
        if (la := _layer(c, name)) is not None and la.e_low is not None
    ]
    deltas = rows[0][1].deltas if rows else []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key in zip(axes, ("e_low", "e_high"), strict=True):
        grid = [[_nan(v) for v in (getattr(la, key) or [])] for _, la in rows]
        data = list(map(list, zip(*grid, strict=True))) if grid else [[math.nan]]
        image = ax.imshow(
            data, aspect="auto", origin="lower", cmap="magma", vmin=0.0, interpolation="nearest"
        )
        ticks = _pick(list(range(len(rows))), 10)
        ax.set_xticks(ticks, [str(rows[i][0]) for i in ticks])
        ax.set_yticks(range(len(deltas)), [f"{d:.3g}" for d in deltas])
        ax.set(xlabel="epoch", ylabel="δ", title=key)
        fig.colorbar(image, ax=ax, label=f"{key} (relative error)")
    fig.suptitle(f"Filtering test in input space ({_run_label(result, run)})")
    return fig


def _fourier(result: ExperimentResult, run: RunResult) -> Figure:
    """Relative error at the target's peaks over epochs (heat map) and spectra at checkpoints."""
    entries = run.fourier
    peaks = entries[-1].peaks if entries else []
    fig, (ax_heat, ax_spec) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    # (epochs, peaks) -> (peaks, epochs): one row per peak frequency, as the authors drew it
    grid = [list(col) for col in zip(*(e.relative_error_at_peaks for e in entries), strict=True)]
    image = ax_heat.imshow(
        grid or [[math.nan]],
        aspect="auto",
        origin="lower",
        cmap="hot",
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    ticks = _pick(list(range(len(entries))), 10)
    ax_heat.set_xticks(ticks, [str(entries[i].epoch) for i in ticks])
    ax_heat.set_yticks(range(len(peaks)), [f"{p:.3g}" for p in peaks])
    ax_heat.set(xlabel="epoch", ylabel="peak frequency", title="|ĥ − f̂| / |f̂| at the peaks")
    fig.colorbar(image, ax=ax_heat, label="relative error at the peak")
    if entries:
        top = max(peaks, default=entries[-1].frequencies[-1])
        limit = min(entries[-1].frequencies[-1], 2.0 * top if top > 0 else math.inf)
        ax_spec.plot(
            entries[0].frequencies, entries[0].target_amplitude, "k--", lw=1.5, label="target"
        )
        shown = _pick(entries, 3)
        colors = plt.get_cmap("viridis")([i / max(len(shown) - 1, 1) for i in range(len(shown))])
        for entry, color in zip(shown, colors, strict=True):
            ax_spec.plot(
                entry.frequencies,
                entry.output_amplitude,
                color=color,
                lw=1.2,
                label=f"output, epoch {entry.epoch}",
            )
        ax_spec.set_xlim(0, limit)
        ax_spec.legend(fontsize=8)
    ax_spec.set(xlabel="frequency", ylabel="|DFT| / n", title="Spectra")
    ax_spec.grid(alpha=0.3)
    note = _verdict_note(result, "fourier_low_frequency_first", run.index)
    fig.suptitle(f"Fourier view ({_run_label(result, run)}){note}")
    return fig


def _verdict_note(result: ExperimentResult, claim: str, run: int | None = None) -> str:
    """`: holds (value 1.00)` for the figure's claim, when the result carries its verdict."""
    for verdict in result.verdicts:
        if verdict.claim == claim and verdict.scope.get("run") == run:
            value = "" if verdict.value is None else f" (value {verdict.value:.2f})"
            return f": {verdict.outcome.replace('_', ' ')}{value}"
    return ""


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def _run_figures(result: ExperimentResult) -> dict[str, Callable[[], Figure]]:
    figures: dict[str, Callable[[], Figure]] = {}
    for run in result.runs:
        if not run.checkpoints:
            continue
        i = run.index
        figures[f"rdf_layers_run_{i}"] = partial(_rdf_layers, result, run)
        if not _unchanging(run):  # else the peaks are flat lines
            figures[f"rdf_peaks_run_{i}"] = partial(_peaks, result, run)
        if any(la.e_low is not None for c in run.checkpoints for la in c.layers):
            figures[f"filtering_run_{i}"] = partial(_filtering, result, run)
        if run.fourier:
            figures[f"fourier_run_{i}"] = partial(_fourier, result, run)
    return figures


def _catalogue(result: ExperimentResult) -> dict[str, Callable[[], Figure]]:
    figures: dict[str, Callable[[], Figure]] = {}
    if any(run.history for run in result.runs):
        figures["loss_curves"] = partial(_loss_curves, result)
    swept = _sweep_field(result) is not None
    analysed = [run for run in result.runs if run.checkpoints]
    if swept and len(analysed) > 1:
        figures["rdf_across_runs"] = partial(_rdf_across_runs, result)
    target = result.spec.get("training", {}).get("target_loss")
    if swept and target is not None and result.summary:
        figures["steps_to_target"] = partial(_steps_to_target, result)
    figures.update(_run_figures(result))
    return figures


def figure_names(result: ExperimentResult | Mapping[str, Any]) -> list[str]:
    """Names of the figures that apply to this result (URL-safe, without extension)."""
    return list(_catalogue(_as_result(result)))


def render_figure(result: ExperimentResult | Mapping[str, Any], name: str) -> bytes:
    """One figure of a stored result as PNG bytes; ValueError for a name that does not apply."""
    catalogue = _catalogue(_as_result(result))
    if name not in catalogue:
        raise ValueError(f"no figure '{name}' for this result; available: {', '.join(catalogue)}")
    fig = catalogue[name]()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_figures(result: ExperimentResult | Mapping[str, Any], folder: Path) -> list[Path]:
    """Every applicable figure as `<folder>/<name>.png`."""
    parsed = _as_result(result)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in figure_names(parsed):
        if not re.fullmatch(r"[a-z0-9_]+", name):  # pragma: no cover - names are ours
            raise ValueError(f"bad figure name {name!r}")
        path = folder / f"{name}.png"
        path.write_bytes(render_figure(parsed, name))
        paths.append(path)
    return paths


# --------------------------------------------------------------- analysis figures

ANALYSIS_FIGURES = ("rdf_layers",)


def analysis_figure_names(layers: list[LayerAnalysis]) -> list[str]:
    """The figures of an analysis's stored layers (none until one is done)."""
    return list(ANALYSIS_FIGURES) if layers else []


def render_analysis_figure(layers: list[LayerAnalysis], name: str, title: str) -> bytes:
    """`rdf_layers`: RDF against 1/δ, one line per analysed array, as PNG bytes."""
    if name not in analysis_figure_names(layers):
        raise ValueError(f"no figure '{name}' for this analysis")
    fig = rdf_by_layer([Checkpoint(epoch=0, step=0, layers=layers)], title, epoch_titles=False)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()
