"""The ``resimhub`` command line: run the hub (all-in-one or by part), migrate, train, evaluate."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from storage.settings import Settings, SettingsError, load_settings

log = logging.getLogger("resimhub")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"resimhub: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from storage.migrate import current, upgrade

    settings = _settings()
    _logging(settings)
    upgrade(settings, args.revision)
    print(f"database at revision {current(settings)}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Everything in one process: migrations, gateway, relay and a Dramatiq worker."""
    import uvicorn
    from dramatiq import Worker

    from actors.relay import Relay
    from actors.runtime import boot, shutdown
    from api.app import create_app
    from storage.context import open_storage
    from storage.migrate import upgrade

    settings = _settings()
    _logging(settings)
    upgrade(settings)
    storage = open_storage(settings)
    runtime = boot(settings, storage=storage)
    runtime.broker.emit_after("process_boot")  # starts the time-limit watchdog, as the dramatiq CLI does
    worker = Worker(runtime.broker, worker_threads=settings.worker_threads, worker_timeout=100)
    worker.start()
    relay = Relay(storage, runtime.broker, runtime.actors)
    relay_thread = threading.Thread(target=relay.run, name="outbox-relay", daemon=True)
    relay_thread.start()
    mode = "RabbitMQ" if settings.broker_url else "embedded broker"
    log.info("ReSimHub up on http://%s:%d (%s, data in %s)", args.host, args.port, mode, settings.data_dir)
    try:
        uvicorn.run(create_app(storage), host=args.host, port=args.port, log_level=settings.log_level.lower())
    finally:
        relay.stop()
        relay_thread.join(timeout=5)
        worker.stop(timeout=5000)
        shutdown()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    _logging(settings)
    uvicorn.run("api.gateway:create_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=settings.log_level.lower(), access_log=not args.no_access_log)
    return 0


def cmd_relay(_args: argparse.Namespace) -> int:
    from actors.relay import Relay
    from actors.runtime import boot, shutdown

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
        shutdown()
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

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply Alembic migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)

    try:
        from actors.rl.cli import register as register_rl
    except ImportError:  # the RL engine's commands are optional while it is being built
        register_rl = None
    if register_rl is not None:
        register_rl(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
