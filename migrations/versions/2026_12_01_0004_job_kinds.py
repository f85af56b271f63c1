"""Job kinds: a job is an experiment (trains networks) or an analysis (of uploaded arrays).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="experiment")
        )
        batch.create_check_constraint("kind", "kind IN ('experiment', 'analysis')")
    op.create_index("ix_jobs_owner_kind_created", "jobs", ["owner", "kind", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_kind_created", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.drop_column("kind")
