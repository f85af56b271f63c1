"""Tables: API keys, experiments (jobs) with their tags, runs, checkpoints and per-layer curves,
uploaded datasets.

A job is one submitted experiment; each sweep value is a run, executed by its own task. The job
row holds the aggregate state the API lists and filters on; runs hold what workers write. Curves
(δ grid, LFR, RDF, e_low/e_high) live as JSON in `layer_curves` and are only read by results
queries, never by listings.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dfp.storage.types import JSONType, UTCDateTime, utcnow
from dfp_engine.status import Status

JOB_KINDS = ("experiment", "analysis")

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The text the first migration created: "status IN ('queued', 'running', ...)", in Status order.
_STATUS_CHECK = f"status IN ({', '.join(repr(status.value) for status in Status)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class ApiKey(Base):
    """A bearer key: `dfp_<id>_<secret>`; only the SHA-256 of the whole key is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Job(Base):
    """One submitted experiment and its aggregate state."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_owner_status", "owner", "status"),
        Index("ix_jobs_owner_kind_created", "owner", "kind", "created_at", "id"),
        CheckConstraint(_STATUS_CHECK, name="status"),
        CheckConstraint("kind IN ('experiment', 'analysis')", name="kind"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(100))
    # An experiment trains networks; an analysis analyses uploaded arrays (one run each).
    kind: Mapped[str] = mapped_column(String(16), default="experiment", server_default="experiment")
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED.value)
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    # Hash of everything the submission said, to tell a replay from a conflicting reuse of a key.
    request_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    # The uploaded dataset the job reads, so it cannot be deleted while the job is unfinished.
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True
    )
    queue: Mapped[str] = mapped_column(String(16))
    n_runs: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    tags: Mapped[list[JobTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="JobTag.tag"
    )
    runs: Mapped[list[Run]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Run.index"
    )


class JobTag(Base):
    __tablename__ = "job_tags"
    __table_args__ = (Index("ix_job_tags_tag", "tag", "job_id"),)

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class Run(Base):
    """One sweep value of a job: the unit a worker claims, heartbeats and finishes."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_runs_status_enqueued", "status", "enqueued_at"),
        CheckConstraint(_STATUS_CHECK, name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    sweep_value: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED.value)
    queue: Mapped[str] = mapped_column(String(16))
    # Claims so far; a claim is valid only while `attempts` still equals the claimer's number.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    enqueues: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    progress_epoch: Mapped[int | None]
    progress_epochs: Mapped[int | None]
    progress_step: Mapped[int | None]
    progress_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(String(500))
    progress_train_loss: Mapped[float | None] = mapped_column(Float)
    progress_updated_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    steps_to_target: Mapped[int | None]
    epochs_to_target: Mapped[int | None]
    n_train: Mapped[int] = mapped_column(Integer, default=0)
    n_test: Mapped[int] = mapped_column(Integer, default=0)
    n_analysis: Mapped[int] = mapped_column(Integer, default=0)
    layer_names: Mapped[list[Any]] = mapped_column(default=list)
    # The loss history as float64 columns (dfp.experiments.curves); loaded only for results.
    history: Mapped[bytes] = mapped_column(LargeBinary, default=b"", deferred=True)
    history_fields: Mapped[list[Any]] = mapped_column(default=list, deferred=True)
    environment: Mapped[dict[str, Any] | None]
    # Every other RunResult field (e.g. the analysis subset's hash), so new ones need no migration.
    details: Mapped[dict[str, Any] | None] = mapped_column(deferred=True)
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    analysis_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class RunCheckpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)


class LayerCurve(Base):
    """The frequency content of one layer at one checkpoint (see dfp.experiments.curves)."""

    __tablename__ = "layer_curves"
    __table_args__ = (UniqueConstraint("checkpoint_id", "layer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    layer: Mapped[str] = mapped_column(String(100))
    dim: Mapped[int] = mapped_column(Integer)
    normalization: Mapped[str] = mapped_column(String(32))
    peak_inverse_delta: Mapped[float | None] = mapped_column(Float)
    mean_inverse_delta: Mapped[float | None] = mapped_column(Float)
    # δ, 1/δ, LFR, RDF, e_low, e_high... as float64, in the order `curves["layout"]` lists.
    arrays: Mapped[bytes] = mapped_column(LargeBinary)
    curves: Mapped[dict[str, Any]]


class Dataset(Base):
    """An uploaded .npy/.npz file of one owner, checked on upload; its bytes live in a blob store
    (`dfp.datasets.blobs`). Content-addressed: one row per owner and SHA-256."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("owner", "sha256"),
        Index("ix_datasets_owner_created", "owner", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_kind: Mapped[str] = mapped_column(String(8))
    # One entry per array: name, shape, dtype, finite (dfp.datasets.arrays.ArrayInfo).
    arrays: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetChunk(Base):
    """1 MiB of a dataset's bytes, in order (the PostgreSQL blob store)."""

    __tablename__ = "dataset_chunks"

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class WebhookDelivery(Base):
    """One webhook event for one experiment (the transactional outbox of its callback_url).

    The row is written in the transaction that makes the experiment terminal; webhook workers
    send it, retry it with backoff, and record the outcome. Its id is the event's id."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2048))
    event_type: Mapped[str] = mapped_column(String(64))
    # The exact JSON that is signed and sent, identical on every attempt.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When a task was last sent for it; a delivery sent long ago and still pending was lost.
    dispatched_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class AnalysisFanout(Base):
    """One exact analysis of one run's attempt, split into row blocks that any worker computes
    (dfp.fanout). Its operand (the normalised representation and the target values) and the
    blocks' partial sums live in the fan-out store; the rows stay as the record of who computed
    what once those bytes are removed."""

    __tablename__ = "analysis_fanouts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    # The run's attempt that made it: blocks are worth computing only while it still holds.
    run_attempt: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    n: Mapped[int] = mapped_column(Integer)
    # What every block computes with, so any worker's block is the same bits (dfp.fanout).
    plan: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    blocks: Mapped[list[AnalysisBlock]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="AnalysisBlock.block"
    )


class AnalysisBlock(Base):
    """One row block of a fan-out: claimed, heartbeated and finished like a run."""

    __tablename__ = "analysis_blocks"
    __table_args__ = (
        UniqueConstraint("fanout_id", "block"),
        CheckConstraint(_STATUS_CHECK, name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fanout_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_fanouts.id", ondelete="CASCADE")
    )
    block: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)


class FanoutChunk(Base):
    """1 MiB of one part of a fan-out (operand or a block's partial sums), in order
    (the PostgreSQL fan-out store)."""

    __tablename__ = "fanout_chunks"

    fanout_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_fanouts.id", ondelete="CASCADE"), primary_key=True
    )
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
