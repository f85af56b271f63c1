"""Public shapes of the analyses API: the request (stored as the job's spec) and the results."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from dfp.experiments.schemas import ExperimentPublic, ExperimentsPublic, PublicModel, Tag
from dfp_engine.deltas import validate_deltas
from dfp_engine.normalization import NormalizationMode
from dfp_engine.results import ErrorInfo, LayerAnalysis
from dfp_engine.spec import PlainText, SpecModel, field_error
from dfp_engine.spec.datasets import ArrayName

MAX_LAYERS = 64
MAX_GRID = 1000
DEFAULT_AUTO_DELTAS = 20
REQUEST_ONLY_FIELDS = frozenset({"tags", "callback_url"})


class AnalysisRequest(SpecModel):
    """What to analyse: arrays of an uploaded dataset, one feature array per layer, against
    one target array, on one δ grid. Stored as the analysis job's spec."""

    name: PlainText = Field("analysis", min_length=1, max_length=200)
    dataset_id: uuid.UUID = Field(..., description="An upload's id (POST /v1/datasets).")
    features: list[ArrayName] = Field(
        ...,
        min_length=1,
        max_length=MAX_LAYERS,
        description="Feature arrays (n, ...), one per layer.",
    )
    targets: ArrayName = Field(
        ..., description="1-D integers = classes (one-hot inside); floats (n,) / (n, c) = real."
    )
    deltas: list[float] | None = Field(None, min_length=2, max_length=MAX_GRID)
    inverse_deltas: list[float] | None = Field(None, min_length=2, max_length=MAX_GRID)
    auto_deltas: int | None = Field(None, ge=2, le=MAX_GRID, description="Default: 20 values.")
    normalization: NormalizationMode = "max_abs_per_dim"
    predictions: ArrayName | None = Field(
        None, description="Network outputs shaped like the (one-hot) targets: filtering test."
    )
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:[0-9]{1,2})?)$")] = Field(
        "cpu", description="cpu, or cuda[:N] (queued for the GPU workers)."
    )
    ci: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Estimate LFR from sampled rows until its 95 % half-width is at most this "
        "at every δ (exact when that needs half the rows); not with predictions.",
    )

    @field_validator("deltas", "inverse_deltas")
    @classmethod
    def _bandwidths(cls, values: list[float] | None) -> list[float] | None:
        return None if values is None else validate_deltas(values, name="the grid")

    @field_validator("features")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("names an array twice")
        return names

    @model_validator(mode="after")
    def _ci_without_predictions(self) -> AnalysisRequest:
        if self.ci is not None and self.predictions is not None:
            field_error(("ci",), "the row-sampled estimator does not run the filtering test", 1)
        return self

    @model_validator(mode="after")
    def _one_grid(self) -> AnalysisRequest:
        given = [n for n in ("deltas", "inverse_deltas", "auto_deltas") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give only one of deltas, inverse_deltas and auto_deltas ({given})")
        return self

    def grid(self) -> dict[str, Any]:
        """The δ grid as analyze_frequency's keyword arguments."""
        if self.deltas is not None:
            return {"deltas": self.deltas}
        if self.inverse_deltas is not None:
            return {"inverse_deltas": self.inverse_deltas}
        return {"auto_deltas": self.auto_deltas or DEFAULT_AUTO_DELTAS}


class AnalysisCreate(AnalysisRequest):
    """The body of POST /v1/analyses: the analysis plus what the service keeps alongside it."""

    tags: list[Tag] = Field(default_factory=list, max_length=20, description="Labels to filter by.")
    callback_url: AnyHttpUrl | None = Field(
        None, description="Notified when the analysis reaches a terminal state."
    )

    def to_request(self) -> AnalysisRequest:
        return AnalysisRequest.model_validate(self.model_dump(exclude=set(REQUEST_ONLY_FIELDS)))


class AnalysisPublic(ExperimentPublic):
    """An analysis: status, progress (fraction over its layers), its request as `spec`."""


class AnalysesPublic(ExperimentsPublic):
    """One page of analyses, newest first; pass `next_cursor` as `cursor` for the next."""


class AnalysisResultsPublic(PublicModel):
    """Per layer (feature array, in request order): δ grid, LFR, RDF, peaks, LFR limit and,
    with predictions, e_low/e_high. Partial while running: the layers done so far."""

    analysis_id: str
    status: str
    is_terminal: bool
    partial: bool
    error: ErrorInfo | None = None
    n_samples: int | None = None
    elapsed_seconds: float | None = None
    layers: list[LayerAnalysis]
