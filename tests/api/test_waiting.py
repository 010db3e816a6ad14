"""Clients waiting on tasks (``?wait=``) hold no thread, so they never starve other requests."""

import asyncio
import time

import httpx

from api.app import THREADPOOL_SIZE
from tests.support.hubs import running_hub, settings_for


def test_many_waiting_pollers_do_not_block_submissions(tmp_path):
    with running_hub(settings_for(tmp_path), worker=False, relay=False) as hub:
        # No worker: the verification stays queued, so every poller waits its full time.
        task_id = hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"]
        app = hub.client.app

        async def scenario():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                waiters = [asyncio.create_task(client.get(f"/api/tasks/{task_id}", params={"wait": 3}))
                           for _ in range(max(THREADPOOL_SIZE, 40) + 10)]  # more than any thread pool
                await asyncio.sleep(0.3)
                start = time.monotonic()
                quick = await client.get("/api/environments")
                answered_in = time.monotonic() - start
                results = await asyncio.gather(*waiters)
                return quick, answered_in, results

        quick, answered_in, results = asyncio.run(scenario())
        assert quick.status_code == 200 and answered_in < 1.0, f"blocked for {answered_in:.2f}s"
        assert all(r.status_code == 200 and r.json()["status"] == "queued" for r in results)


def test_a_poll_answers_while_a_writer_holds_the_sqlite_write_lock(tmp_path):
    """Polls read without taking SQLite's write lock (a deferred BEGIN in WAL mode), so a long write
    transaction, or a crowd of pollers, never makes a poll or a writer wait on the other."""
    import sqlite3

    with running_hub(settings_for(tmp_path), worker=False, relay=False) as hub:
        task_id = hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"]
        writer = sqlite3.connect(hub.settings.database_url.removeprefix("sqlite:///"), timeout=1)
        try:
            writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a long transaction would
            start = time.monotonic()
            poll = hub.client.get(f"/api/tasks/{task_id}")
            assert poll.status_code == 200 and poll.json()["status"] == "queued"
            assert time.monotonic() - start < 1.0
        finally:
            writer.rollback()
            writer.close()
