"""The Celery-compatible channel, read back by a real Celery client."""

import pytest
from celery import Celery
from celery.exceptions import TaskRevokedError

from storage import tasks
from storage.context import open_storage
from storage.migrate import upgrade
from tests.support.hubs import settings_for
from tests.support.services import redis_url


@pytest.fixture
def storage(tmp_path):
    settings = settings_for(tmp_path, RESIMHUB_REDIS_URL=redis_url(), RESIMHUB_RESULT_TTL="600")
    upgrade(settings)
    s = open_storage(settings)
    yield s
    s.close()


@pytest.fixture
def celery_app():
    app = Celery("reader", backend=redis_url(), broker="memory://")
    yield app
    app.close()


def _new_task(storage):
    with storage.db.session() as session:
        task = tasks.create(session, "test")
        session.commit()
    return task.id


def _update(storage, task_id, fn, *args):
    with storage.db.session() as session:
        fn(session, tasks.get(session, task_id), *args)
        session.commit()


def test_success_is_readable_by_celery(storage, celery_app):
    task_id = _new_task(storage)
    assert celery_app.AsyncResult(task_id).state == "PENDING"
    _update(storage, task_id, tasks.mark_running)
    assert celery_app.AsyncResult(task_id).state == "STARTED"
    _update(storage, task_id, tasks.set_progress, {"fraction": 0.5, "episodes": 3})
    res = celery_app.AsyncResult(task_id)
    assert res.state == "PROGRESS" and res.info == {"fraction": 0.5, "episodes": 3}
    _update(storage, task_id, tasks.succeed, {"mean_reward": 500.0})
    assert celery_app.AsyncResult(task_id).get(timeout=5) == {"mean_reward": 500.0}
    assert celery_app.AsyncResult(task_id).date_done is not None


def test_get_waits_on_the_pubsub_channel(storage, celery_app):
    import threading
    import time

    task_id = _new_task(storage)

    def finish_later():
        time.sleep(0.5)
        _update(storage, task_id, tasks.succeed, {"answer": 42})

    threading.Thread(target=finish_later).start()
    assert celery_app.AsyncResult(task_id).get(timeout=10) == {"answer": 42}


def test_failure_rebuilds_as_an_exception(storage, celery_app):
    task_id = _new_task(storage)
    try:
        raise KeyError("no such agent")
    except KeyError as exc:
        error = tasks.error_document(exc, code="bad_agent")
    _update(storage, task_id, tasks.fail, error)
    res = celery_app.AsyncResult(task_id)
    with pytest.raises(LookupError) as info:
        res.get(timeout=5)
    assert "no such agent" in str(info.value)
    assert res.state == "FAILURE" and res.traceback


def test_cancel_is_revoked(storage, celery_app):
    task_id = _new_task(storage)
    _update(storage, task_id, tasks.cancel)
    with pytest.raises(TaskRevokedError):
        celery_app.AsyncResult(task_id).get(timeout=5)


def test_redis_down_never_breaks_the_database_write(tmp_path):
    settings = settings_for(tmp_path, RESIMHUB_REDIS_URL="redis://127.0.0.1:1/0")
    upgrade(settings)
    s = open_storage(settings)
    try:
        task_id = _new_task(s)
        _update(s, task_id, tasks.succeed, {"ok": True})
        with s.db.session() as session:
            assert tasks.get(session, task_id).status == "succeeded"
    finally:
        s.close()



def test_the_catch_up_goes_as_soon_as_redis_answers_again(tmp_path):
    """A process waiting out its catch-up backoff (up to max_retry_interval) catches up at once when
    Redis answers it again, e.g. its readiness probe's ping."""
    import json
    import time

    import redis

    from storage.result_channel import KEY_PREFIX
    from tests.support.services import REDIS_HOSTPORT
    from tests.support.tcpproxy import TcpProxy

    proxy = TcpProxy(*REDIS_HOSTPORT).up()
    settings = settings_for(tmp_path, RESIMHUB_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/11")
    upgrade(settings)
    storage = open_storage(settings)
    direct = redis.Redis.from_url(redis_url())
    try:
        storage.channel.retry_interval = storage.channel.max_retry_interval = 60.0
        proxy.down()
        task_id = _new_task(storage)
        assert storage.channel.missed == 1 and direct.get(KEY_PREFIX + task_id) is None
        proxy.up()
        storage.channel.ping()
        deadline = time.monotonic() + 5
        while storage.channel.missed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert storage.channel.missed == 0, "the catch-up waited for its backoff"
        assert json.loads(direct.get(KEY_PREFIX + task_id))["status"] == "PENDING"
    finally:
        direct.close()
        storage.close()
        proxy.down()
