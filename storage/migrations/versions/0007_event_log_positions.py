"""The event log's order is a position assigned after commit, not the insertion number

``seq`` comes from a sequence at INSERT, so on PostgreSQL a transaction can commit seq 748 while 747
is still in flight, and a reader paging by seq passes 747 for good. ``position`` is given to rows
only once they are committed, by one sequencer at a time (storage/outbox.py), and is the cursor of
the event log from now on. Existing rows, all committed when this runs (PostgreSQL's ALTER TABLE
waits for every writer of the table), keep their seq as their position, so cursors handed out
before the upgrade stay valid.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
    op.execute("UPDATE events SET position = seq")
    op.drop_index("ix_events_unpublished", table_name="events")
    op.drop_index("ix_events_type_seq", table_name="events")
    op.drop_index("ix_events_subject_seq", table_name="events")
    op.create_index("ix_events_position", "events", ["position"], unique=True)
    op.create_index("ix_events_unsequenced", "events", ["seq"], postgresql_where=sa.text("position IS NULL"),
                    sqlite_where=sa.text("position IS NULL"))
    op.create_index("ix_events_unpublished", "events", ["position"], postgresql_where=sa.text("published_at IS NULL"),
                    sqlite_where=sa.text("published_at IS NULL"))
    op.create_index("ix_events_type_position", "events", ["type", "position"])
    op.create_index("ix_events_subject_position", "events", ["subject", "position"])


def downgrade() -> None:
    for name in ("ix_events_subject_position", "ix_events_type_position", "ix_events_unpublished",
                 "ix_events_unsequenced", "ix_events_position"):
        op.drop_index(name, table_name="events")
    op.create_index("ix_events_unpublished", "events", ["published_at", "seq"])
    op.create_index("ix_events_type_seq", "events", ["type", "seq"])
    op.create_index("ix_events_subject_seq", "events", ["subject", "seq"])
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("position")
