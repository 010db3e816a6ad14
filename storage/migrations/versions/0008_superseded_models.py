"""A trained model records that a later training of its experiment replaced it (a retrain), so it is
shown as superseded and its run no longer counts on leaderboards

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("superseded_by_task_id", sa.String(length=36), nullable=True))
    # Experiments retrained before this revision: every trained model but those of the experiment's
    # latest completed training task is superseded by that task.
    op.execute("""
        UPDATE models SET superseded_by_task_id = (
            SELECT t.id FROM tasks t JOIN training_runs r ON r.task_id = t.id
            WHERE r.experiment_id = models.experiment_id AND t.status = 'succeeded'
            ORDER BY t.finished_at DESC, t.created_at DESC LIMIT 1),
          superseded_at = CURRENT_TIMESTAMP
        WHERE source = 'training' AND experiment_id IS NOT NULL AND task_id IS NOT NULL
          AND EXISTS (
            SELECT 1 FROM tasks t JOIN training_runs r ON r.task_id = t.id
            WHERE r.experiment_id = models.experiment_id AND t.status = 'succeeded'
              AND t.id <> models.task_id AND t.created_at > (SELECT created_at FROM tasks WHERE id = models.task_id))
    """)


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("superseded_by_task_id")
        batch_op.drop_column("superseded_at")
