"""Initial schema: results, jobs, permalinks.

Revision ID: 0001
Revises:
Create Date: 2025-11-23 00:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three tables of the cache with their indexes and constraints."""
    op.create_table(
        "results",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("slug", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('analysis', 'ablation', 'circuit')", name=op.f("ck_results_kind")),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["results.id"], name=op.f("fk_results_parent_id_results"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("slug", name=op.f("uq_results_slug")),
    )
    op.create_index(op.f("ix_results_key"), "results", ["key"], unique=True)
    op.create_index(op.f("ix_results_parent_id"), "results", ["parent_id"], unique=False)
    op.create_index("ix_results_kind_created_at", "results", ["kind", "created_at"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=64), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result_id", sa.String(length=32), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name=op.f("ck_jobs_status")
        ),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name=op.f("ck_jobs_progress")),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name=op.f("fk_jobs_result_id_results"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_key"), "jobs", ["key"], unique=False)

    op.create_table(
        "permalinks",
        sa.Column("slug", sa.String(length=16), nullable=False),
        sa.Column("result_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name=op.f("fk_permalinks_result_id_results"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("slug", name=op.f("pk_permalinks")),
    )
    op.create_index(op.f("ix_permalinks_result_id"), "permalinks", ["result_id"], unique=False)


def downgrade() -> None:
    """Drop the three tables (children first)."""
    op.drop_index(op.f("ix_permalinks_result_id"), table_name="permalinks")
    op.drop_table("permalinks")
    op.drop_index(op.f("ix_jobs_key"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_results_kind_created_at", table_name="results")
    op.drop_index(op.f("ix_results_parent_id"), table_name="results")
    op.drop_index(op.f("ix_results_key"), table_name="results")
    op.drop_table("results")
