"""PostgreSQL: NOTIFY the outbox channel from a trigger instead of an extra statement per request

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Kept in step with storage.outbox.NOTIFY_CHANNEL; a migration must not import application code
# whose later versions could change under it.
CHANNEL = "resimhub_outbox"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE OR REPLACE FUNCTION resimhub_outbox_notify() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER events_outbox_notify AFTER INSERT ON events
        FOR EACH STATEMENT EXECUTE FUNCTION resimhub_outbox_notify()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS events_outbox_notify ON events")
    op.execute("DROP FUNCTION IF EXISTS resimhub_outbox_notify()")
