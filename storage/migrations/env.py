"""Alembic environment: runs migrations online against the URL set by :mod:`storage.migrate`."""

from alembic import context
from sqlalchemy import create_engine, pool

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
