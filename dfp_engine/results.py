"""Result records of an experiment: plain pydantic models that serialise to JSON."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dfp_engine.status import Status

if TYPE_CHECKING:
    from dfp_engine.frequency import FrequencyResult

Outcome = Literal["holds", "does_not_hold", "inconclusive"]


class ResultModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorInfo(ResultModel):
    code: str = Field(..., description="Stable machine-readable reason, e.g. 'diverged'.")
    message: str


class LayerAnalysis(ResultModel):
    """Frequency content of one layer's effective target function at one checkpoint."""

    layer: str
    dim: int
    normalization: str
    deltas: list[float]
    inverse_deltas: list[float]
    lfr: list[float]
    rdf_inverse_deltas: list[float]
    rdf: list[float]
    peak_inverse_delta: float | None
    mean_inverse_delta: float | None
    lfr_limit: float | None = Field(None, description="LFR as δ → ∞: |mean y|² / mean |y|².")
    n_samples: int | None = None
    e_low: list[float] | None = None
    e_high: list[float] | None = None
    estimator: Literal["exact", "row_sampled"] = "exact"
    rows_evaluated: int | None = Field(None, description="Rows whose kernel row was evaluated.")
    lfr_ci_half_width: list[float] | None = Field(None, description="95 % half-width per δ.")
    rdf_ci_half_width: list[float] | None = Field(None, description="95 % half-width per RDF.")

    @classmethod
    def from_frequency(cls, layer: str, result: FrequencyResult) -> LayerAnalysis:
        """The stored record of one layer's FrequencyResult."""
        return cls(
            layer=layer,
            dim=result.dim,
            normalization=result.normalization,
            deltas=result.deltas,
            inverse_deltas=result.inverse_deltas,
            lfr=result.lfr,
            rdf_inverse_deltas=result.rdf_inverse_deltas,
            rdf=result.rdf,
            peak_inverse_delta=result.peak_inverse_delta,
            mean_inverse_delta=result.mean_inverse_delta,
            lfr_limit=result.lfr_limit,
            n_samples=result.n_samples,
            e_low=_finite_or_none(result.e_low),  # type: ignore[arg-type]
            e_high=_finite_or_none(result.e_high),  # type: ignore[arg-type]
            estimator=result.estimator,  # type: ignore[arg-type]
            rows_evaluated=result.rows_evaluated,
            lfr_ci_half_width=result.lfr_ci_half_width,
            rdf_ci_half_width=result.rdf_ci_half_width,
        )


def _finite_or_none(values: list[float | None] | None) -> list[float | None] | None:
    if values is None:
        return None
    return [v if v is not None and math.isfinite(v) else None for v in values]


class FourierAnalysis(ResultModel):
    """Spectra of the target and the network's output at one checkpoint (docs/method.md).

    Frequencies are angular, in the units of the input: sin(k·x) sits at k."""

    epoch: int
    method: Literal["dft", "nudft"] = Field(
        ..., description="dft on a uniform 1-D grid, else the non-uniform transform."
    )
    direction: list[float] = Field(..., description="Unit direction the inputs are projected on.")
    frequencies: list[float]
    target_amplitude: list[float] = Field(..., description="|f̂(k)|, normalised by n.")
    output_amplitude: list[float] = Field(..., description="|ĥ(k)|, normalised by n.")
    peaks: list[float] = Field(..., description="Frequencies of the target's peaks, ascending.")
    peak_indices: list[int]
    relative_error_at_peaks: list[float] = Field(..., description="|ĥ(k) − f̂(k)| / |f̂(k)|.")


class Checkpoint(ResultModel):
    epoch: int
    step: int
    layers: list[LayerAnalysis]


class HistoryPoint(ResultModel):
    """Losses at `epoch`: test values after that many epochs; train values at epoch > 0 average
    the epoch's batch losses, each computed before its update (epoch 0: at initialisation)."""

    epoch: int
    step: int
    train_loss: float
    test_loss: float | None = None
    train_accuracy: float | None = None
    test_accuracy: float | None = None


class RunResult(ResultModel):
    """One training run (one sweep value) with its history and per-checkpoint analyses.

    The engine ends every run succeeded, failed or cancelled; a stored run read back while its
    experiment goes on may still be queued or running."""

    index: int
    sweep_value: Any = None
    status: Status
    error: ErrorInfo | None = None
    steps_to_target: int | None = None
    epochs_to_target: int | None = None
    n_train: int = 0
    n_test: int = 0
    n_analysis: int = 0
    analysis_subset_sha256: str | None = Field(
        None, description="Hash of the analysed sample indices (the same at every checkpoint)."
    )
    stop_reason: str | None = Field(
        None, description="epochs, target_reached or max_steps for a finished run."
    )
    layer_names: list[str] = Field(default_factory=list)
    history: list[HistoryPoint] = Field(default_factory=list)
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    elapsed_seconds: float = 0.0
    analysis_seconds: float = 0.0
    fourier: list[FourierAnalysis] = Field(
        default_factory=list, description="With analysis.fourier: one entry per checkpoint."
    )
    repeat: int = Field(0, description="Which of the spec's `repeats` of this sweep value.")
    seed: int | None = Field(None, description="training.seed of this run.")


class SummaryRow(ResultModel):
    """One sweep value against time-to-target and the summary layer's RDF peak per checkpoint."""

    sweep_value: Any = None
    status: Status
    steps_to_target: int | None = None
    epochs_to_target: int | None = None
    final_train_loss: float | None = None
    layer: str | None = None
    peak_inverse_delta_by_checkpoint: dict[str, float | None] = Field(default_factory=dict)


class Environment(ResultModel):
    seed: int
    torch: str
    device: str
    dfp_version: str
    spec_hash: str
    python: str | None = None
    numpy: str | None = None


class Verdict(ResultModel):
    """Whether one of the paper's claims holds in what was measured (docs/method.md, Verdicts)."""

    claim: str
    scope: dict[str, Any] = Field(..., description="Which run, checkpoint, sweep or seeds.")
    statistic: str
    value: float | None
    threshold: float
    outcome: Outcome
    detail: str


class ExperimentResult(ResultModel):
    spec: dict[str, Any]
    status: Status
    error: ErrorInfo | None = None
    environment: Environment
    runs: list[RunResult]
    summary: list[SummaryRow] = Field(default_factory=list)
    verdicts: list[Verdict] = Field(default_factory=list)
