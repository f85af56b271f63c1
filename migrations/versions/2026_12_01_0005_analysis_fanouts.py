"""Exact analyses fanned out over the workers: fan-outs, their row blocks, and the chunks of
their operands and partial sums (PostgreSQL store).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS_CHECK = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "analysis_fanouts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("run_attempt", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("plan", json_type(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_analysis_fanouts_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_fanouts")),
    )
    op.create_index(op.f("ix_analysis_fanouts_run_id"), "analysis_fanouts", ["run_id"])
    op.create_table(
        "analysis_blocks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fanout_id", sa.Uuid(), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_analysis_blocks_status")),
        sa.ForeignKeyConstraint(
            ["fanout_id"],
            ["analysis_fanouts.id"],
            name=op.f("fk_analysis_blocks_fanout_id_analysis_fanouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_blocks")),
        sa.UniqueConstraint("fanout_id", "block", name=op.f("uq_analysis_blocks_fanout_id_block")),
    )
    op.create_table(
        "fanout_chunks",
        sa.Column("fanout_id", sa.Uuid(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fanout_id"],
            ["analysis_fanouts.id"],
            name=op.f("fk_fanout_chunks_fanout_id_analysis_fanouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("fanout_id", "part", "seq", name=op.f("pk_fanout_chunks")),
    )


def downgrade() -> None:
    op.drop_table("fanout_chunks")
    op.drop_table("analysis_blocks")
    op.drop_index(op.f("ix_analysis_fanouts_run_id"), "analysis_fanouts")
    op.drop_table("analysis_fanouts")
