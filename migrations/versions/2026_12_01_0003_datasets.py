"""Uploaded datasets: checked .npy/.npz files per owner, their bytes in 1 MiB rows (PostgreSQL),
and the dataset a job reads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_kind", sa.String(8), nullable=False),
        sa.Column("arrays", json_type(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("owner", "sha256", name=op.f("uq_datasets_owner_sha256")),
    )
    op.create_index("ix_datasets_owner_created", "datasets", ["owner", "created_at", "id"])
    op.create_table(
        "dataset_chunks",
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_dataset_chunks_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "seq", name=op.f("pk_dataset_chunks")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dataset_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_dataset_id_datasets"),
            "datasets",
            ["dataset_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_jobs_dataset_id"), ["dataset_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_dataset_id"))
        batch.drop_constraint(op.f("fk_jobs_dataset_id_datasets"), type_="foreignkey")
        batch.drop_column("dataset_id")
    op.drop_table("dataset_chunks")
    op.drop_table("datasets")
