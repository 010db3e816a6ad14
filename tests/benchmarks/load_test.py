"""Loopback load test: mixed traffic against ``resimhub api`` on PostgreSQL + RabbitMQ + Redis.

The hub runs as it would in a cluster: ``resimhub api`` (uvicorn), ``resimhub relay`` and
``resimhub worker --processes 2``, each a separate process on a fresh PostgreSQL database and its
own queue prefix. An asyncio/httpx generator then drives, for ``--seconds`` (default 300):

* a steady stream of submissions (experiment created, then training started; CEM on CartPole-v1 with
  a tiny budget, so the two worker processes really train, evaluate and aggregate each one);
* closed-loop readers: task polls (FastAPI and the Flask ``/api/v1`` mirror), event-log pages,
  experiment reads and lists, analytics and benchmark reads.

Reported: throughput, p50/p99 per kind of request, errors (any transport error or status >= 400),
and the gateway's RSS sampled every few seconds (growth from the end of warm-up to the end of the
run). Baseline, measured in the same run against the same gateway: ``GET /health``.

    .venv/bin/python tests/benchmarks/load_test.py [--seconds 300] [--readers 16] [--submit-rate 2]

Every request goes to 127.0.0.1 and the run stops by itself. Exit status 1 if any request failed,
RSS grew by 10 % or more, or a submitted training did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.services import delete_queues, fresh_postgres_database, rabbitmq_url, redis_url  # noqa: E402

EXPERIMENT = {"env_name": "CartPole-v1", "agent": "CEM", "total_timesteps": 2000, "eval_episodes": 3}
RSS_LIMIT = 0.10


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_bytes(pid: int) -> tuple[int, int]:
    """RSS of ``pid`` and all its descendants (``--workers N`` gateways
    make a process tree), and of ``pid`` alone."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, own, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        with suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    own = own or int(line.split()[1]) * 1024
        todo += children.get(p, [])
    return total, own


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def record(self, kind: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if not ok:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.samples) < 10:
                self.samples.append(f"{kind}: {detail}"[:300])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] * 1000


async def timed(client: httpx.AsyncClient, stats: Stats, kind: str, method: str, url: str,
                **kw) -> httpx.Response | None:
    start = time.perf_counter()
    try:
        r = await client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        stats.record(kind, time.perf_counter() - start, False, f"{type(exc).__name__}: {exc}")
        return None
    stats.record(kind, time.perf_counter() - start, r.status_code < 400, f"{r.status_code} {r.text[:200]}")
    return r


class Traffic:
    def __init__(self, base: str, stats: Stats, seed: int, *, analytics: bool = True) -> None:
        self.analytics = analytics
        self.base = base
        self.stats = stats
        self.rng = random.Random(seed)
        self.task_ids: list[str] = []
        self.experiment_ids: list[int] = []
        self.submitted = 0

    async def submitter(self, client: httpx.AsyncClient, rate: float, until: float) -> None:
        """Open loop: one submission every 1/rate seconds, however slow the answers are."""
        interval, next_at, pending = 1.0 / rate, time.monotonic(), set()
        while (now := time.monotonic()) < until:
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            next_at += interval
            task = asyncio.create_task(self._submit(client))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)

    async def _submit(self, client: httpx.AsyncClient) -> None:
        n = self.submitted = self.submitted + 1
        r = await timed(client, self.stats, "POST /api/experiments", "POST", "/api/experiments",
                        json={"name": f"load-{n}", "seed": n % 1000, **EXPERIMENT})
        if r is None or r.status_code != 201:
            return
        exp_id = r.json()["id"]
        self.experiment_ids.append(exp_id)
        r = await timed(client, self.stats, "POST /api/experiments/{id}/train", "POST",
                        f"/api/experiments/{exp_id}/train")
        if r is not None and r.status_code == 202:
            self.task_ids.append(r.json()["task_id"])

    async def reader(self, client: httpx.AsyncClient, until: float) -> None:
        """Closed loop: the next read as soon as the last one answered."""
        choices = [
            (30, self._poll), (10, self._poll_legacy), (15, self._events), (10, self._experiment),
            (5, self._experiments), (10, self._analytics), (5, self._leaderboard), (5, self._benchmark_recent),
            (5, self._legacy_analytics),
        ]
        if not self.analytics:
            analytic = (self._analytics, self._leaderboard, self._legacy_analytics)
            choices = [(w, f) for w, f in choices if f not in analytic]
        weights = [w for w, _ in choices]
        while time.monotonic() < until:
            fn = self.rng.choices([f for _, f in choices], weights)[0]
            await fn(client)

    async def _poll(self, client):
        if self.task_ids:
            await timed(client, self.stats, "GET /api/tasks/{id}", "GET",
                        f"/api/tasks/{self.rng.choice(self.task_ids)}")
        else:
            await asyncio.sleep(0.05)

    async def _poll_legacy(self, client):
        if self.task_ids:
            await timed(client, self.stats, "GET /api/v1/task_status/{id}", "GET",
                        f"/api/v1/task_status/{self.rng.choice(self.task_ids)}")
        else:
            await asyncio.sleep(0.05)

    async def _events(self, client):
        params = {"limit": 50}
        if self.rng.random() < 0.5:
            params["type"] = "resimhub.training.completed"
        await timed(client, self.stats, "GET /api/events", "GET", "/api/events", params=params)

    async def _experiment(self, client):
        if self.experiment_ids:
            await timed(client, self.stats, "GET /api/experiments/{id}", "GET",
                        f"/api/experiments/{self.rng.choice(self.experiment_ids)}")
        else:
            await asyncio.sleep(0.05)

    async def _experiments(self, client):
        await timed(client, self.stats, "GET /api/experiments", "GET", "/api/experiments", params={"limit": 50})

    async def _analytics(self, client):
        await timed(client, self.stats, "GET /api/analytics/recent", "GET", "/api/analytics/recent")

    async def _leaderboard(self, client):
        await timed(client, self.stats, "GET /api/analytics/leaderboard", "GET", "/api/analytics/leaderboard",
                    params={"env_name": "CartPole-v1"})

    async def _benchmark_recent(self, client):
        await timed(client, self.stats, "GET /benchmark/recent", "GET", "/benchmark/recent")

    async def _legacy_analytics(self, client):
        await timed(client, self.stats, "GET /api/v1/analytics/recent", "GET", "/api/v1/analytics/recent")


async def baseline(base: str, seconds: float, connections: int) -> dict:
    stats = Stats()
    until = time.monotonic() + seconds

    async def loop(client):
        while time.monotonic() < until:
            await timed(client, stats, "GET /health", "GET", "/health")

    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=connections)) as c:
        start = time.monotonic()
        await asyncio.gather(*(loop(c) for _ in range(connections)))
        elapsed = time.monotonic() - start
    lat = stats.latencies["GET /health"]
    return {"rps": len(lat) / elapsed, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "errors": sum(stats.errors.values())}


async def mixed(base: str, args, gateway_pid: int) -> dict:
    stats = Stats()
    traffic = Traffic(base, stats, args.seed, analytics=not args.no_analytics)
    rss: list[tuple[float, int, int]] = []
    start = time.monotonic()
    until = start + args.seconds

    async def sample_rss():
        while time.monotonic() < until:
            rss.append((time.monotonic() - start, *tree_rss_bytes(gateway_pid)))
            await asyncio.sleep(args.rss_every)
        rss.append((time.monotonic() - start, *tree_rss_bytes(gateway_pid)))

    limits = httpx.Limits(max_connections=args.readers + 32, max_keepalive_connections=args.readers + 32)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        await asyncio.gather(sample_rss(), traffic.submitter(client, args.submit_rate, until),
                             *(traffic.reader(client, until) for _ in range(args.readers)))
        elapsed = time.monotonic() - start
        # Let the pipeline finish what was submitted, then check every training really completed.
        drain_deadline = time.monotonic() + args.drain_seconds
        statuses: dict[str, int] = {}
        while True:
            statuses = {}
            for chunk_start in range(0, len(traffic.task_ids), 50):
                for task_id in traffic.task_ids[chunk_start:chunk_start + 50]:
                    r = await client.get(f"/api/tasks/{task_id}")
                    status = r.json().get("status", "?") if r.status_code == 200 else f"http {r.status_code}"
                    statuses[status] = statuses.get(status, 0) + 1
            if statuses.get("succeeded", 0) == len(traffic.task_ids) or time.monotonic() > drain_deadline:
                break
            await asyncio.sleep(2)
        drained = time.monotonic() - start - elapsed
    return {"stats": stats, "elapsed": elapsed, "rss": rss, "submitted": len(traffic.task_ids),
            "task_statuses": statuses, "drain_s": drained}


def report(base: dict, run: dict, args) -> tuple[str, bool]:
    stats: Stats = run["stats"]
    total = sum(len(v) for v in stats.latencies.values())
    errors = sum(stats.errors.values())
    every = [x for v in stats.latencies.values() for x in v]
    rss = run["rss"]
    warm = [(b, own) for t, b, own in rss if t >= args.warmup] or [(b, own) for _, b, own in rss]
    (rss_start, own_start), (rss_end, own_end) = warm[0], rss[-1][1:]
    rss_max = max(b for _, b, _ in rss)
    growth = (rss_end - rss_start) / rss_start
    lines = [
        f"load test: {args.seconds:.0f} s of mixed traffic, {args.readers} closed-loop readers + "
        f"{args.submit_rate:g} submissions/s{' (no analytics reads)' if args.no_analytics else ''}, "
        f"gateway --workers {args.gateway_workers}, "
        f"2 worker processes x {args.worker_threads} threads, 1 relay",
        "",
        f"baseline GET /health ({args.readers} connections, {args.baseline_seconds:.0f} s): "
        f"{base['rps']:.0f} req/s, p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms, errors {base['errors']}",
        "",
        "| request | count | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in sorted(stats.latencies, key=lambda k: -len(stats.latencies[k])):
        lat = stats.latencies[kind]
        lines.append(f"| `{kind}` | {len(lat)} | {len(lat) / run['elapsed']:.1f} | {pct(lat, 50):.1f} | "
                     f"{pct(lat, 99):.1f} | {stats.errors.get(kind, 0)} |")
    lines.append(f"| **all** | {total} | {total / run['elapsed']:.1f} | {pct(every, 50):.1f} | {pct(every, 99):.1f} | "
                 f"{errors} |")
    lines += [
        "",
        f"trainings submitted: {run['submitted']}; after the run (+{run['drain_s']:.0f} s drain): "
        f"{run['task_statuses']}",
        f"gateway RSS: {rss_start / 2**20:.1f} MiB after {args.warmup:.0f} s warm-up -> {rss_end / 2**20:.1f} MiB "
        f"at the end (max {rss_max / 2**20:.1f} MiB, {len(rss)} samples): growth {growth * 100:+.1f} %",
        f"  of which the gateway process itself: {own_start / 2**20:.1f} -> {own_end / 2**20:.1f} MiB; its "
        f"children (analytics process, multiprocessing's resource tracker): {(rss_start - own_start) / 2**20:.1f} -> "
        f"{(rss_end - own_end) / 2**20:.1f} MiB; analytics process replaced {run['recycles']} times",
        "RSS samples (s, MiB): " + ", ".join(f"{t:.0f}:{b / 2**20:.1f}" for t, b, _ in rss[:: max(1, len(rss) // 12)]),
    ]
    if stats.samples:
        lines += ["", "first errors:"] + [f"  {s}" for s in stats.samples]
    completed = run["task_statuses"].get("succeeded", 0) == run["submitted"]
    ok = errors == 0 and growth < RSS_LIMIT and completed and base["errors"] == 0
    lines += ["", "PASS" if ok else "FAIL: " + ", ".join(
        m for m, bad in (("errors", errors > 0), (f"RSS growth >= {RSS_LIMIT:.0%}", growth >= RSS_LIMIT),
                         ("trainings unfinished", not completed)) if bad)]
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--readers", type=int, default=16, help="closed-loop reading clients")
    parser.add_argument("--submit-rate", type=float, default=2.0, help="experiments submitted and started per second")
    parser.add_argument("--gateway-workers", type=int, default=1)
    parser.add_argument("--worker-threads", type=int, default=2)
    parser.add_argument("--baseline-seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=30, help="RSS growth is measured from here")
    parser.add_argument("--rss-every", type=float, default=5)
    parser.add_argument("--drain-seconds", type=float, default=180)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-analytics", action="store_true",
                        help="leave out the Parquet-backed analytics reads (to tell their cost from the rest)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"resimhub-load-{uuid.uuid4().hex[:8]}"
    logs.mkdir(parents=True)
    procs: list[subprocess.Popen] = []
    with ExitStack() as stack:
        db_url = stack.enter_context(fresh_postgres_database())
        prefix = f"load{uuid.uuid4().hex[:8]}."
        stack.callback(delete_queues, prefix)
        env = {**os.environ, "RESIMHUB_DATABASE_URL": db_url, "RESIMHUB_BROKER_URL": rabbitmq_url(),
               "RESIMHUB_REDIS_URL": redis_url(), "RESIMHUB_QUEUE_PREFIX": prefix,
               "RESIMHUB_DATA_DIR": str(logs / "data"), "RESIMHUB_RESULT_TTL": "900"}

        def spawn(name: str, *argv: str) -> subprocess.Popen:
            # Logs go to files: an unread pipe fills up and stalls the process writing to it.
            with (logs / f"{name}.log").open("wb") as sink:
                proc = subprocess.Popen([sys.executable, "-m", "api.cli", *argv], env=env, stdout=sink,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            return proc

        def stop_all() -> None:
            for proc in procs:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

        stack.callback(stop_all)
        subprocess.run([sys.executable, "-m", "api.cli", "db", "upgrade"], env=env, check=True, capture_output=True)
        gateway = spawn("api", "api", "--port", str(port), "--workers", str(args.gateway_workers), "--no-access-log")
        spawn("relay", "relay")
        spawn("worker", "worker", "--processes", "2", "--threads", str(args.worker_threads))
        with httpx.Client(base_url=base, timeout=30) as c:
            deadline = time.monotonic() + 60
            while True:
                with suppress(httpx.HTTPError):
                    if c.get("/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"gateway did not come up; see {logs}")
                time.sleep(0.3)
            task = c.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"]
            if c.get(f"/api/tasks/{task}", params={"wait": 60}).json()["status"] != "succeeded":
                raise SystemExit(f"CartPole-v1 was not verified; see {logs}")
        print(f"hub up (logs in {logs}); baseline {args.baseline_seconds:.0f} s, then {args.seconds:.0f} s of mixed "
              "traffic", flush=True)
        base_figures = asyncio.run(baseline(base, args.baseline_seconds, args.readers))
        run = asyncio.run(mixed(base, args, gateway.pid))
        run["recycles"] = (logs / "api.log").read_text(errors="replace").count("starting a fresh one")
    text, ok = report(base_figures, run, args)
    print(text)
    if args.json:
        stats: Stats = run["stats"]
        args.json.write_text(json.dumps({
            "baseline": base_figures, "elapsed_s": run["elapsed"], "submitted": run["submitted"],
            "task_statuses": run["task_statuses"], "rss": run["rss"],
            "requests": {k: {"count": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99),
                             "errors": stats.errors.get(k, 0), "mean_ms": statistics.fmean(v) * 1000}
                         for k, v in stats.latencies.items()},
        }, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
