"""The ``resimhub`` command line: run the hub (all-in-one or by part), migrate, train, evaluate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from typing import NoReturn

from storage.settings import Settings, SettingsError, load_settings

log = logging.getLogger("resimhub")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"resimhub: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _log_format(settings: Settings, default: str) -> str:
    return settings.log_format or default


def _logging(settings: Settings, default_format: str = "json") -> None:
    """Console lines for people at a terminal (``resimhub up``), JSON lines for everything a log
    pipeline collects; ``RESIMHUB_LOG_FORMAT`` overrides either."""
    from storage.logs import configure

    configure(settings.log_level, _log_format(settings, default_format))


def _refuse(message: str) -> NoReturn:
    print(f"resimhub: {message}", file=sys.stderr)
    raise SystemExit(2)


def _active_keys(settings: Settings) -> int:
    from storage import keys

    return _keys_run(keys.active_count, settings, failure="cannot reach the database to check API keys")


def _guard_bind(settings: Settings, host: str) -> Settings:
    """Refuse to serve a non-loopback address without keys; there, keys become required on every
    route (``auto`` resolves to ``required``)."""
    from api.auth import is_loopback

    if is_loopback(host):
        return settings
    if settings.auth == "off":
        _refuse(f"refusing to listen on {host} with RESIMHUB_AUTH=off: API keys are required off loopback")
    if _active_keys(settings) == 0:
        _refuse(f"refusing to listen on {host} without an API key; create one with "
                "`resimhub keys create --scope admin --name ops` (or listen on 127.0.0.1)")
    return settings.with_overrides(auth="required")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from storage.migrate import current, upgrade

    settings = _settings()
    _logging(settings)
    upgrade(settings, args.revision)
    print(f"database at revision {current(settings)}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Everything in one process: migrations, gateway, relay and a Dramatiq worker.

    Without ``RESIMHUB_BROKER_URL`` the broker is a queue in this process's memory; the process then
    holds its data directory alone and, before its worker starts, recovers what a crash of the
    previous one interrupted (actors/embedded.py).
    """
    from actors import embedded

    settings = _settings()
    _logging(settings, default_format="console")
    in_process = not settings.broker_url
    if in_process:  # first, so that a second hub on the data directory is refused at once
        try:
            embedded.hold_data_dir(settings.data_dir)  # released by the kernel when this process ends
        except embedded.DataDirInUse as exc:
            _refuse(str(exc))

    import uvicorn
    from dramatiq import Worker

    from actors.relay import Relay
    from actors.runtime import boot
    from api.app import create_app
    from storage.context import open_storage
    from storage.logs import dict_config
    from storage.migrate import upgrade

    upgrade(settings)
    settings = _guard_bind(settings, args.host)
    storage = open_storage(settings)
    runtime = boot(settings, storage=storage)
    runtime.broker.emit_after("process_boot")  # starts the time-limit watchdog, as the dramatiq CLI does
    if in_process:
        embedded.recover(storage, runtime.actors)
    relay = Relay(storage, runtime.broker, runtime.actors)  # before the worker: it adds a middleware
    worker = Worker(runtime.broker, worker_threads=settings.worker_threads, worker_timeout=100)
    worker.start()
    relay_thread = threading.Thread(target=relay.run, name="outbox-relay", daemon=True)
    relay_thread.start()
    mode = "RabbitMQ" if settings.broker_url else "embedded broker"
    log.info("ReSimHub up on http://%s:%d (%s, data in %s)", args.host, args.port, mode, settings.data_dir)
    try:
        # The gateway reports the in-process broker's queue depths (api/metrics/queues.py).
        uvicorn.run(create_app(storage, broker=runtime.broker), host=args.host, port=args.port,
                    log_level=settings.log_level.lower(), access_log=False,
                    log_config=dict_config(settings.log_level, _log_format(settings, "console")))
    finally:
        relay.stop()
        relay_thread.join(timeout=5)
        worker.stop(timeout=5000)
        try:
            relay.settle()  # what the worker finished while stopping; the rest is sent again next start
        except Exception as exc:  # noqa: BLE001 - the next start sends those events again
            log.warning("could not record the last handled events: %s", exc)
        runtime.close()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from storage.logs import dict_config

    settings = _settings()
    _logging(settings)
    # The factory reads its settings from the environment, in every worker process uvicorn starts.
    os.environ["RESIMHUB_AUTH"] = _guard_bind(settings, args.host).auth
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One private directory per gateway: the processes' HTTP metrics are summed from it, and
        # another gateway (or a previous run) must not add into the same files.
        metrics_dir = tempfile.mkdtemp(prefix="resimhub-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("api.gateway:create_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=settings.log_level.lower(), access_log=False,
                    log_config=dict_config(settings.log_level, _log_format(settings, "json"),
                                           access_log=not args.no_access_log))
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_relay(_args: argparse.Namespace) -> int:
    from actors.relay import Relay
    from actors.runtime import boot

    settings = _settings()
    _logging(settings)
    runtime = boot(settings)
    relay = Relay(runtime.storage, runtime.broker, runtime.actors)
    log.info("outbox relay running")
    try:
        relay.run()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run ``dramatiq actors.worker`` with the given processes, threads and queues."""
    settings = _settings()
    if not settings.broker_url:
        print("resimhub: `resimhub worker` needs RESIMHUB_BROKER_URL (embedded mode runs its worker inside "
              "`resimhub up`)", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "dramatiq", "actors.worker", "--processes", str(args.processes),
            "--threads", str(args.threads)]
    if args.queues:
        argv += ["--queues", *[settings.queue_prefix + q for q in args.queues]]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover - execv does not return


def _keys_run(fn, settings: Settings | None = None, *, failure: str = "database error"):
    """Run ``fn(session)`` against the database, turning a missing table into a one-line hint."""
    from sqlalchemy.exc import DBAPIError

    from storage.db import Database

    db = Database(settings or _settings(), pool_size=1)
    try:
        with db.session() as session:
            return fn(session)
    except DBAPIError as exc:
        if "api_keys" in str(exc.orig):  # a missing table, not the statement quoted in every error
            _refuse("the database has no api_keys table yet; run `resimhub db upgrade` first")
        _refuse(f"{failure}: {str(exc.orig or exc).splitlines()[0]}")
    finally:
        db.dispose()


def cmd_keys_create(args: argparse.Namespace) -> int:
    from api.errors import ApiError
    from api.schemas import ApiKeyPublic
    from api.services import keys

    def create(session):
        try:
            key, token = keys.create(session, args.name, args.scope)
        except ApiError as exc:
            _refuse(exc.message)
        return ApiKeyPublic.dump(key), token

    public, token = _keys_run(create)
    if args.json:
        print(json.dumps({**public, "key": token}))
    else:
        print(f"created key {public['id']} ({public['scope']}, {public['name']!r}); "
              "store it now, it is not shown again:", file=sys.stderr)
        print(token)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from api.schemas import ApiKeyPublic
    from api.services import keys

    rows = _keys_run(lambda s: [ApiKeyPublic.dump(k) for k in keys.list_all(s, include_revoked=not args.active)])
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'ID':<12}  {'SCOPE':<5}  {'STATE':<7}  {'PREFIX':<9}  {'CREATED':<20}  {'LAST USED':<20}  NAME")
    for row in rows:
        state = "active" if row["active"] else "revoked"
        print(f"{row['id']:<12}  {row['scope']:<5}  {state:<7}  {row['prefix']:<9}  {row['created_at'][:19]:<20}  "
              f"{(row['last_used_at'] or '-')[:19]:<20}  {row['name']}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from api.errors import NotFound
    from api.schemas import ApiKeyPublic
    from api.services import keys

    def revoke(session):
        try:
            return ApiKeyPublic.dump(keys.revoke(session, args.key_id))
        except NotFound:
            _refuse(f"no API key {args.key_id!r} (see `resimhub keys list`)")

    row = _keys_run(revoke)
    print(f"revoked key {row['id']} ({row['scope']}, {row['name']!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resimhub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole hub in one process (embedded by default)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="run only the HTTP gateway (cluster deployments)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="gateway processes")
    api.add_argument("--no-access-log", action="store_true")
    api.set_defaults(func=cmd_api)

    relay = sub.add_parser("relay", help="run only the outbox relay")
    relay.set_defaults(func=cmd_relay)

    worker = sub.add_parser("worker", help="run Dramatiq worker processes (RabbitMQ)")
    worker.add_argument("--processes", type=int, default=2)
    worker.add_argument("--threads", type=int, default=2)
    worker.add_argument("--queues", nargs="*", help="only these stages (e.g. training evaluation)")
    worker.set_defaults(func=cmd_worker)

    keys = sub.add_parser("keys", help="API keys for the HTTP API (required off loopback)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="mint a key; prints the secret once")
    create.add_argument("--scope", choices=("read", "write", "admin"), default="read",
                        help="read: GET routes; write: also POST/PATCH/DELETE; admin: also keys and webhooks")
    create.add_argument("--name", required=True, help="what the key is for, e.g. ci")
    create.add_argument("--json", action="store_true", help="print the key and its details as JSON")
    create.set_defaults(func=cmd_keys_create)
    list_keys = keys_sub.add_parser("list", help="list keys (never their secrets)")
    list_keys.add_argument("--active", action="store_true", help="only keys that are not revoked")
    list_keys.add_argument("--json", action="store_true")
    list_keys.set_defaults(func=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply Alembic migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)

    from actors.rl.cli import register as register_rl
    from analytics.cli import register as register_analytics

    register_rl(sub)
    register_analytics(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
