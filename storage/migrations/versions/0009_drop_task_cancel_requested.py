"""Tasks lose ``cancel_requested``: it was written on cancel and never read; a cancel is the task's
``cancelled`` status, which the workers poll (actors/cancellation.py)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested")


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
    # What the column meant: set on every cancelled task.
    op.execute("UPDATE tasks SET cancel_requested = (status = 'cancelled')")
