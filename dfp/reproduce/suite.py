"""Running the reproduction suite: every chosen claim's experiment, its verdict and figures."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfp.reproduce.claims import CLAIMS, EXAMPLES, SMOKE, Claim, Scale, combined, decisive
from dfp_engine.results import ExperimentResult, Outcome, Verdict
from dfp_engine.spec import ExperimentSpec, apply_overrides, read_spec_data
from dfp_engine.thresholds import VerdictThresholds
from dfp_engine.verdicts import spearman

# Rough laptop-scale seconds per claim on 2 cores, to weight the progress bar.
WEIGHTS = {
    "sin_lfr_figure": 5,
    "deeper_is_faster": 50,
    "lower_frequency_is_faster": 20,
    "within_network_depth_ordering": 45,
    "across_network_depth_ordering": 40,
    "low_frequency_first": 15,
    "fourier_low_frequency_first": 10,
}
# The figures of each claim shown in the report (the rest are written next to result.json).
SHOWN = {
    "deeper_is_faster": ["steps_to_target", "loss_curves"],
    "lower_frequency_is_faster": ["steps_to_target", "loss_curves"],
    "within_network_depth_ordering": ["rdf_layers_run_0", "rdf_peaks_run_0"],
    "across_network_depth_ordering": ["rdf_across_runs"],
    "low_frequency_first": ["filtering_run_0"],
    "fourier_low_frequency_first": ["fourier_run_0"],
}
SIN_KS = (1, 5, 9, 13)

Update = Callable[[float, str], None]


@dataclass
class ClaimOutcome:
    """What one claim's section of the report holds."""

    claim: Claim
    outcome: Outcome
    measured: dict[str, Any]
    spec: dict[str, Any]
    figures: dict[str, bytes]
    verdicts: list[Verdict]
    seconds: float


def claim_spec(claim: Claim, scale: Scale, seeds: int) -> ExperimentSpec:
    """The experiment spec of `claim` at `scale`, with `seeds` repeats."""
    source = claim.specs["paper" if scale == "paper" else "laptop"]
    data = read_spec_data(EXAMPLES / source) if isinstance(source, str) else dict(source)
    overrides = list(SMOKE.get(claim.id, [])) if scale == "smoke" else []
    data = apply_overrides(data, [*overrides, f"repeats={seeds}"])
    return ExperimentSpec.model_validate(data)


def run_claim(
    claim: Claim,
    scale: Scale,
    seeds: int,
    thresholds: VerdictThresholds,
    out: Path,
    progress: Callable[[float], None],
) -> ClaimOutcome:
    """Run one claim's experiment, write its files under `out/<id>/` and judge it."""
    started = time.perf_counter()
    folder = out / claim.id
    folder.mkdir(parents=True, exist_ok=True)
    if not claim.specs:
        figure = sin_lfr_figure(scale, thresholds)
        (folder / "measured.json").write_text(json.dumps(figure.measured, indent=1) + "\n")
        for name, png in figure.figures.items():
            (folder / f"{name}.png").write_bytes(png)
        figure.seconds = time.perf_counter() - started
        return figure
    from dfp.figures import figure_names, render_figure
    from dfp_engine.runner import run_experiment

    spec = claim_spec(claim, scale, seeds)
    result = run_experiment(spec, on_progress=lambda p: progress(p.fraction), thresholds=thresholds)
    (folder / "result.json").write_text(result.model_dump_json(indent=1) + "\n")
    available = figure_names(result)
    figures = {name: render_figure(result, name) for name in SHOWN[claim.id] if name in available}
    return judge(claim, result, figures, folder, time.perf_counter() - started)


def judge(
    claim: Claim,
    result: ExperimentResult,
    figures: dict[str, bytes],
    folder: Path,
    seconds: float,
) -> ClaimOutcome:
    """The claim's outcome from the verdicts of its stored result; its spec and figures written
    into `folder`."""
    (folder / "spec.json").write_text(json.dumps(result.spec, indent=1) + "\n")
    for name, png in figures.items():
        (folder / f"{name}.png").write_bytes(png)
    verdicts = decisive(result, claim)
    measured: dict[str, Any] = {
        "statistic": [
            {"scope": v.scope, "statistic": v.statistic, "value": v.value, "outcome": v.outcome}
            for v in verdicts
        ],
        "detail": [v.detail for v in verdicts],
    }
    if result.summary:
        measured["runs"] = [
            {
                "sweep_value": row.sweep_value,
                "steps_to_target": row.steps_to_target,
                "final_train_loss": row.final_train_loss,
            }
            for row in result.summary
        ]
    if result.status != "succeeded":
        measured["status"] = result.status
    return ClaimOutcome(
        claim, combined(verdicts), measured, result.spec, figures, verdicts, seconds
    )


def sin_lfr_figure(scale: Scale, thresholds: VerdictThresholds) -> ClaimOutcome:
    """Fig. 2: LFR and RDF of sin(kπx) on [-5, 5] for k = 1, 5, 9, 13 (no training)."""
    from dfp_engine.frequency import analyze_frequency

    n_points = 2001  # the paper's grid; smoke scale only thins the 1/δ grid
    step = 50.0 if scale == "smoke" else 10.0
    inverse = [float(u) for u in np.arange(step, 2500.0 + step / 2, step)]
    x = np.linspace(-5.0, 5.0, n_points)[:, None]
    curves: dict[int, Any] = {}
    for k in SIN_KS:
        y = np.sin(k * math.pi * x)
        curves[k] = analyze_frequency(x, y, inverse_deltas=inverse, normalization="none")
    peaks = [curves[k].peak_inverse_delta for k in SIN_KS]
    lfr_at_end = {k: curves[k].lfr[-1] for k in SIN_KS}
    rho = spearman([float(k) for k in SIN_KS], [p if p is not None else math.nan for p in peaks])
    rho = None if rho is None else round(rho, 6)
    outcome: Outcome = (
        "inconclusive" if rho is None else "holds" if rho >= thresholds.rho else "does_not_hold"
    )
    listing = ", ".join(f"k = {k}: {p:.4g}" for k, p in zip(SIN_KS, peaks, strict=True) if p)
    detail = f"RDF peaks at 1/δ {listing}; ρ(k, peak) = {rho if rho is None else round(rho, 2)}"
    verdict = Verdict(
        claim="sin_lfr_figure",
        scope={"k": list(SIN_KS)},
        statistic="spearman_rho(k, RDF peak 1/δ)",
        value=rho,
        threshold=thresholds.rho,
        outcome=outcome,
        detail=detail,
    )
    measured = {
        "peak_inverse_delta": dict(zip(map(str, SIN_KS), peaks, strict=True)),
        "lfr_at_inverse_delta_2500": {str(k): round(v, 4) for k, v in lfr_at_end.items()},
        "statistic": [{"statistic": verdict.statistic, "value": rho, "outcome": outcome}],
        "detail": [detail],
    }
    spec = {"x": f"{n_points} points of [-5, 5]", "y": "sin(kπx)", "k": list(SIN_KS),
            "inverse_deltas": f"{step:g} … 2500 step {step:g}", "normalize": "none"}  # fmt: skip
    figure = _sin_figure(curves)
    claim = next(c for c in CLAIMS if c.id == "sin_lfr_figure")
    return ClaimOutcome(claim, outcome, measured, spec, {"rdf_sin": figure}, [verdict], 0.0)


def _sin_figure(curves: dict[int, Any]) -> bytes:
    import io

    import matplotlib.pyplot as plt

    import dfp.figures  # noqa: F401  (selects matplotlib's non-interactive backend)

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for k, curve in curves.items():
        rdf = np.asarray(curve.rdf)
        top = np.abs(rdf).max() or 1.0
        ax.plot(curve.rdf_inverse_deltas, rdf / top, label=f"k = {k}")
    ax.set(xlabel="1/δ", ylabel="RDF / max (display only)", title="RDF of sin(kπx) on [-5, 5]")
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def environment(scale: Scale, seeds: int, thresholds: VerdictThresholds) -> dict[str, Any]:
    """Where and how the suite ran."""
    import torch

    from dfp_engine import __version__

    return {
        "scale": scale,
        "seeds": seeds,
        "dfp_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "thresholds": thresholds.__dict__,
    }


def run_suite(
    claim_ids: list[str],
    scale: Scale,
    seeds: int,
    thresholds: VerdictThresholds,
    out: Path,
    update: Update,
) -> list[ClaimOutcome]:
    """Every chosen claim in the paper's order, driving `update(fraction, text)`."""
    chosen = [claim for claim in CLAIMS if claim.id in claim_ids]
    total = sum(WEIGHTS[c.id] for c in chosen)
    done = 0.0
    outcomes = []
    for claim in chosen:
        weight = WEIGHTS[claim.id]

        def progress(
            fraction: float, base: float = done, weight: float = weight, name: str = claim.id
        ) -> None:
            update((base + weight * fraction) / total, name)

        progress(0.0)
        outcomes.append(run_claim(claim, scale, seeds, thresholds, out, progress))
        done += weight
    update(1.0, "report")
    return outcomes
