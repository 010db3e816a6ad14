from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from storage.migrate import current, upgrade
from storage.models import Base
from tests.support.hubs import settings_for
from tests.support.services import fresh_postgres_database


def _assert_schema_matches_models(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_sqlite_upgrade_is_idempotent_and_matches_models(tmp_path):
    settings = settings_for(tmp_path)
    upgrade(settings)
    upgrade(settings)
    assert current(settings) is not None
    _assert_schema_matches_models(settings.database_url)


def test_postgresql_upgrade_matches_models(tmp_path):
    with fresh_postgres_database() as url:
        settings = settings_for(tmp_path, RESIMHUB_DATABASE_URL=url)
        upgrade(settings)
        assert current(settings) is not None
        _assert_schema_matches_models(url)
