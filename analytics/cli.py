"""``resimhub analytics …``: the batch jobs over the snapshot folder.

``report``, ``compact``, ``leaderboard`` and ``datasets`` need only the folder (``--snapshots``, or
``$RESIMHUB_DATA_DIR/snapshots``): no database, no broker, so an analyst can run them on a copy.
``snapshot`` rebuilds the folder from the database.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"resimhub analytics: error: {message}", file=sys.stderr)
    return code


def _settings():
    from storage.settings import load_settings

    return load_settings()


def _snapshots_dir(args: argparse.Namespace) -> Path:
    if args.snapshots:
        return Path(args.snapshots)
    return _settings().snapshots_dir


def _since(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO 8601 date or time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _progress(args: argparse.Namespace, label: str):
    from analytics.progress import Progress

    return Progress(label, enabled=not args.quiet)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from analytics.compaction import compact
    from analytics.rebuild import rebuild
    from storage.db import Database

    settings = _settings()
    target = Path(args.snapshots) if args.snapshots else settings.snapshots_dir
    db = Database(settings, pool_size=2)
    try:
        with _progress(args, "snapshot") as progress:
            result = rebuild(db, target, clean=not args.keep_stale, progress=progress)
    finally:
        db.dispose()
    merged = []
    if not args.no_compact:
        with _progress(args, "compact") as progress:
            merged = compact(target, wait=True, progress=progress)
    print(json.dumps({"snapshots": str(target), "experiments": result.experiments,
                      "benchmark_evaluations": result.benchmark_evaluations, "rows": result.rows,
                      "files_written": result.files_written, "files_removed": result.files_removed,
                      "partitions_compacted": len(merged)}))
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    from analytics.compaction import compact

    target = _snapshots_dir(args)
    with _progress(args, "compact") as progress:
        results = compact(target, args.dataset or None, min_files=args.min_files, min_age_s=args.min_age,
                          wait=args.wait, progress=progress)
    for r in results:
        print(json.dumps({"dataset": r.dataset, "env_name": r.env_name, "date": r.date, "inputs": r.inputs,
                          "rows": r.rows, "output": r.output, "kept": r.kept}))
    if not results and not args.quiet:
        print("nothing to compact", file=sys.stderr)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from analytics.export import write_report

    target = _snapshots_dir(args)
    with _progress(args, f"report {args.env}") as progress:
        paths = write_report(target, args.out, env=args.env, fmt=args.format, agent=args.agent, since=args.since,
                             plot=not args.no_plots, ci_resamples=args.resamples, progress=progress)
    for path in paths:
        print(path)
    return EXIT_OK


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from analytics import reports

    board = reports.leaderboards(_snapshots_dir(args), env=args.env, agent=args.agent, since=args.since,
                                 limit=args.limit, ci_resamples=args.resamples)
    if args.json:
        print(json.dumps(board, indent=2, allow_nan=False))
        return EXIT_OK
    for lb in board["leaderboards"]:
        print(f"{lb['env_name']}")
        for kind, key in (("agents", "agent"), ("models", "model_id")):
            print(f"  {kind}:")
            for e in lb[kind]:
                ci = e.get("ci95") or [None, None]
                ci_text = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else "-"
                n = e.get("runs", e.get("episodes"))
                print(f"    {e['rank']:>3}. {str(e[key]):<38} iqm {e['iqm']:>9.2f}  ci {ci_text:<20} "
                      f"mean {e['mean']:>9.2f} ± {e['std']:<8.2f} n={n}")
    return EXIT_OK


def cmd_datasets(args: argparse.Namespace) -> int:
    from analytics.readers import dataset_summary

    summary = dataset_summary(_snapshots_dir(args))
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    for d in summary:
        print(f"{d['name']:<12} v{d['schema_version']}  {d['rows']:>12,} rows  {d['batches']:>8,} batches  "
              f"{d['files']:>6} files ({d['compacted_files']} compacted)  {d['bytes'] / 1e6:>10.2f} MB  "
              f"{', '.join(d['env_names'])}")
    return EXIT_OK


def _configure_engine() -> None:
    """DuckDB's memory limit and threads from ``RESIMHUB_ANALYTICS_*``, as in the gateway."""
    from analytics import engine

    settings = _settings()
    engine.configure(memory_mb=settings.analytics_memory_mb, threads=settings.analytics_threads,
                     readers=settings.analytics_readers)


def _run(func):
    """Expected failures (bad settings, too little data) end with one line on stderr."""

    def wrapper(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import OperationalError

        from analytics.errors import AnalyticsError
        from storage.settings import SettingsError

        try:
            _configure_engine()
            return func(args)
        except SettingsError as exc:
            return _fail(f"invalid setting: {exc}", EXIT_USAGE)
        except AnalyticsError as exc:
            return _fail(str(exc))
        except OperationalError as exc:
            return _fail(f"the database is unavailable or not migrated (`resimhub db upgrade`): {exc.orig}")

    return wrapper


def register(subparsers) -> None:
    parser = subparsers.add_parser("analytics", help="Parquet snapshots: rebuild, compact, reports",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="analytics_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--snapshots", metavar="DIR", help="the snapshot folder (default: $RESIMHUB_DATA_DIR/snapshots)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    snap = sub.add_parser("snapshot", help="rebuild the snapshots from the database (idempotent)")
    common(snap)
    snap.add_argument("--keep-stale", action="store_true",
                      help="keep files the database no longer produces (default: remove them)")
    snap.add_argument("--no-compact", action="store_true", help="do not compact afterwards")
    snap.set_defaults(func=_run(cmd_snapshot))

    comp = sub.add_parser("compact", help="merge small snapshot files, safely under concurrent readers")
    common(comp)
    comp.add_argument("--dataset", action="append", choices=["episodes", "evaluations", "experiments"],
                      help="only this dataset (repeatable)")
    comp.add_argument("--min-files", type=int, default=2, help="compact a partition from this many files on")
    comp.add_argument("--min-age", type=float, default=0.0, metavar="SECONDS",
                      help="leave files younger than this alone")
    comp.add_argument("--wait", action="store_true", help="wait for a running compaction instead of failing")
    comp.set_defaults(func=_run(cmd_compact))

    rep = sub.add_parser("report", help="leaderboards, comparison and learning curves of one env, as files")
    common(rep)
    rep.add_argument("--env", required=True, help="Gymnasium id, e.g. CartPole-v1")
    rep.add_argument("--format", choices=["md", "csv", "json", "parquet"], default="md")
    rep.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    rep.add_argument("--agent", help="only this agent")
    rep.add_argument("--since", type=_since, help="only data recorded from this ISO 8601 time on")
    rep.add_argument("--no-plots", action="store_true", help="skip the SVG learning curves")
    rep.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for intervals (0: none)")
    rep.set_defaults(func=_run(cmd_report))

    lb = sub.add_parser("leaderboard", help="print the leaderboards")
    common(lb)
    lb.add_argument("--env")
    lb.add_argument("--agent")
    lb.add_argument("--since", type=_since)
    lb.add_argument("--limit", type=int, default=20)
    lb.add_argument("--resamples", type=int, default=1000)
    lb.add_argument("--json", action="store_true")
    lb.set_defaults(func=_run(cmd_leaderboard))

    ds = sub.add_parser("datasets", help="list the datasets: schema version, rows, files, size")
    common(ds)
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(func=_run(cmd_datasets))
