"""Public shapes of the experiments API, shared by the server (responses) and the client."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from dfp_engine.results import ErrorInfo, RunResult, SummaryRow, Verdict
from dfp_engine.spec import ExperimentSpec
from dfp_engine.status import Status

SUBMISSION_FIELDS = frozenset({"tags", "callback_url"})

TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/=-]*$"
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TAG_PATTERN)]


class ExperimentCreate(ExperimentSpec):
    """An ExperimentSpec as the body, plus what the service keeps alongside it."""

    tags: list[Tag] = Field(default_factory=list, max_length=20, description="Labels to filter by.")
    callback_url: AnyHttpUrl | None = Field(
        None, description="Notified when the experiment reaches a terminal state."
    )

    def to_spec(self) -> ExperimentSpec:
        """The experiment spec alone: its fields and validators already ran on this body."""
        fields = {name: getattr(self, name) for name in ExperimentSpec.model_fields}
        spec = ExperimentSpec.model_construct(self.model_fields_set - SUBMISSION_FIELDS, **fields)
        if self.sweep is not None:
            # The run specs validation built travel along (cached_property keeps them in __dict__).
            spec.__dict__["run_specs"] = self.run_specs
        return spec


class PublicModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ProgressPublic(PublicModel):
    """Where an experiment stands: the fraction over all runs and the latest report of one."""

    fraction: float = Field(
        ...,
        ge=0.0,
        le=1.0,
        description="Share of the work done: runs that ran to their end (succeeded or failed) "
        "count whole, a cancelled or running run the share of its epochs it trained.",
    )
    runs_finished: int = Field(..., description="Runs that ran to their end.")
    n_runs: int
    run: int | None = Field(None, description="Index (from 0) of the run the message is about.")
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    train_loss: float | None = None
    message: str | None = None
    updated_at: datetime | None = None


class ReproducibilityPublic(PublicModel):
    """What is needed to reproduce the numbers: seed, versions, device and where it ran."""

    seed: int | None = None
    spec_hash: str
    dfp_version: str | None = None
    torch: str | None = None
    python: str | None = None
    numpy: str | None = None
    device: str | None = None
    worker_host: str | None = None


class RunPublic(PublicModel):
    index: int
    sweep_value: Any = None
    status: Status
    attempts: int
    epoch: int | None = None
    epochs: int | None = None
    fraction: float
    checkpoints: int = Field(0, description="Analysed checkpoints stored so far.")
    message: str | None = None
    error: ErrorInfo | None = None
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Links(PublicModel):
    self: str
    results: str
    results_csv: str
    cancel: str


class ExperimentSummary(PublicModel):
    """A job as listings show it: no spec, no curves."""

    id: str
    name: str
    status: Status
    is_terminal: bool
    tags: list[str]
    n_runs: int
    attempts: int
    error: ErrorInfo | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    links: Links


class ExperimentPublic(ExperimentSummary):
    """A job in full: progress, runs, the spec and reproducibility metadata."""

    cancel_requested: bool
    callback_url: str | None = None
    progress: ProgressPublic
    runs: list[RunPublic]
    reproducibility: ReproducibilityPublic
    spec: dict[str, Any]


class ExperimentsPublic(PublicModel):
    """One page of a listing, newest first; pass `next_cursor` as `cursor` for the next."""

    data: list[ExperimentSummary]
    count: int
    next_cursor: str | None = None


class HistoryPointPublic(PublicModel):
    """One logged training step; a non-finite loss (divergence) is reported as null."""

    epoch: int
    step: int
    train_loss: float | None = None
    test_loss: float | None = None
    train_accuracy: float | None = None
    test_accuracy: float | None = None


class RunResultPublic(RunResult):
    """The engine's RunResult as stored so far, with where and how it ran."""

    history: list[HistoryPointPublic] = Field(default_factory=list)  # type: ignore[assignment]
    environment: dict[str, Any] | None = None


class ResultsPublic(PublicModel):
    """The full result; while the experiment runs, whatever has been stored so far."""

    experiment_id: str
    status: Status
    is_terminal: bool
    partial: bool = Field(..., description="True until the experiment is terminal.")
    spec: dict[str, Any]
    runs: list[RunResultPublic]
    summary: list[SummaryRow] = Field(default_factory=list)
    verdicts: list[Verdict] = Field(
        default_factory=list, description="Whether the paper's claims hold in these results."
    )


class FigurePublic(PublicModel):
    name: str
    url: str


class FiguresPublic(PublicModel):
    """The figures that apply to an experiment's stored results."""

    data: list[FigurePublic]
