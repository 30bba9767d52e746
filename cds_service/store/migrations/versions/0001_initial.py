"""Initial schema: screening reports behind link tokens, and CDS Hooks feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds_service.store.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the two tables and their indexes."""
    op.create_table(
        "screening_report",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("screening", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_screening_report_expires_at", "screening_report", ["expires_at"])
    op.create_table(
        "cds_feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("override_reason_code", sa.String(128), nullable=True),
        sa.Column("override_reason_system", sa.String(512), nullable=True),
        sa.Column("override_comment", sa.Text(), nullable=True),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("outcome_timestamp", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_cds_feedback_idempotency_key"),
    )
    op.create_index("ix_cds_feedback_service_outcome_ts", "cds_feedback", ["service_id", "outcome_timestamp"])
    op.create_index("ix_cds_feedback_card_uuid", "cds_feedback", ["card_uuid"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_cds_feedback_card_uuid", table_name="cds_feedback")
    op.drop_index("ix_cds_feedback_service_outcome_ts", table_name="cds_feedback")
    op.drop_table("cds_feedback")
    op.drop_index("ix_screening_report_expires_at", table_name="screening_report")
    op.drop_table("screening_report")
