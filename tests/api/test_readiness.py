"""Readiness reports every dependency, but only the database takes the gateway out of rotation."""

from tests.support.hubs import running_hub, settings_for


def test_redis_and_broker_down_degrade_but_do_not_unready(tmp_path):
    settings = settings_for(tmp_path, RESIMHUB_REDIS_URL="redis://127.0.0.1:1/0",
                            RESIMHUB_BROKER_URL="amqp://guest:guest@127.0.0.1:1/%2F")
    with running_hub(settings, worker=False, relay=False) as hub:
        r = hub.client.get("/ready")
        body = r.json()
        assert r.status_code == 200 and body["ready"] is True
        assert body["degraded"] == ["broker", "redis"]
        assert body["checks"]["redis"]["ok"] is False and "Error" in body["checks"]["redis"]["error"]
        # and work is still accepted: the event waits in the outbox
        assert hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).status_code == 202


def test_database_down_is_not_ready(tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from storage.context import open_storage

    storage = open_storage(settings_for(tmp_path, RESIMHUB_DATABASE_URL="postgresql+psycopg2://nobody@127.0.0.1:1/x"))
    try:
        with TestClient(create_app(storage)) as client:
            r = client.get("/ready")
            assert r.status_code == 503 and r.json()["ready"] is False
            assert r.json()["checks"]["database"]["ok"] is False
            failed = client.get("/api/experiments")
            assert failed.status_code == 503 and failed.headers["retry-after"]
            assert failed.json()["error"]["code"] == "database_unavailable"
    finally:
        storage.close()
