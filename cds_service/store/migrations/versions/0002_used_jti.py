"""CDS client token ids already used (jti replay guard shared by every replica).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds_service.store.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``cds_used_jti`` with its (iss, jti) unique constraint and an index for purging."""
    op.create_table(
        "cds_used_jti",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("iss", sa.String(255), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("iss", "jti", name="uq_cds_used_jti_iss_jti"),
    )
    op.create_index("ix_cds_used_jti_expires_at", "cds_used_jti", ["expires_at"])


def downgrade() -> None:
    """Drop the table."""
    op.drop_index("ix_cds_used_jti_expires_at", table_name="cds_used_jti")
    op.drop_table("cds_used_jti")
