import pytest

from tests.support.hubs import running_hub, settings_for


@pytest.fixture
def celery_reader():
    """A stock Celery client reading the result channel (the real Redis, db 11)."""
    from celery import Celery

    from tests.support.services import redis_url

    app = Celery("reader", backend=redis_url(), broker="memory://")
    yield app
    app.close()


@pytest.fixture
def hub(tmp_path):
    """An embedded hub (SQLite, in-process broker, worker and relay)."""
    with running_hub(settings_for(tmp_path)) as h:
        yield h
