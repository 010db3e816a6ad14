"""Models keep what the uploader stated about the file (layer stack prefix, action scaling,
observation normalisation), so every later evaluation reads the file the same way

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("options", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()),
                                                                   "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("options")
