"""The SQLite database holds webhook secrets and API key hashes: it, its -wal/-shm companions and the
data directory are created readable by their owner only, whatever the umask."""

from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager

from sqlalchemy import text

from storage.context import open_storage
from storage.db import private_sqlite_file
from storage.migrate import upgrade
from tests.support.hubs import running_hub, settings_for


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_hub_creates_its_data_dir_and_database_private(tmp_path):
    settings = settings_for(tmp_path)
    with umask(0o000), running_hub(settings, worker=False, relay=False) as hub:
        assert hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).status_code == 202
        data = settings.data_dir
        db = data / "resimhub.db"
        assert mode(data) == 0o700
        assert mode(db) == 0o600
        for companion in ("resimhub.db-wal", "resimhub.db-shm"):
            assert (data / companion).exists(), sorted(p.name for p in data.iterdir())
            assert mode(data / companion) == 0o600, companion


def test_open_storage_alone_and_a_database_outside_the_data_dir(tmp_path):
    elsewhere = tmp_path / "db" / "nested" / "hub.sqlite"
    settings = settings_for(tmp_path, RESIMHUB_DATABASE_URL=f"sqlite:///{elsewhere}")
    with umask(0o002):
        storage = open_storage(settings)
        try:
            with storage.db.engine.begin() as conn:
                conn.execute(text("create table t (x int)"))
        finally:
            storage.close()
    assert mode(settings.data_dir) == 0o700
    assert mode(elsewhere.parent) == 0o700 and mode(elsewhere) == 0o600


def test_migrations_create_the_file_private_before_alembic_opens_it(tmp_path):
    settings = settings_for(tmp_path)
    with umask(0o022):
        upgrade(settings)
    assert mode(settings.data_dir) == 0o700 and mode(settings.data_dir / "resimhub.db") == 0o600


def test_a_database_left_readable_by_an_older_version_is_tightened(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = data / "resimhub.db"
    for path in (db, data / "resimhub.db-wal"):
        path.write_bytes(b"")
        os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="storage.db"):
        private_sqlite_file(f"sqlite:///{db}")
    assert mode(db) == 0o600 and mode(data / "resimhub.db-wal") == 0o600
    assert "readable by other users" in caplog.text
    # An existing directory is the operator's choice (a shared volume in a cluster): left as it is.
    assert mode(data) == 0o755


def test_in_memory_databases_are_left_alone(tmp_path):
    for url in ("sqlite://", "sqlite:///:memory:"):
        private_sqlite_file(url)
    assert list(tmp_path.iterdir()) == []
