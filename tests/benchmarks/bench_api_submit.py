"""POST /api/experiments throughput and latency on PostgreSQL, driven by wrk over loopback.

Baseline in the same run: GET /health on the same gateway (the framework's own ceiling on this
machine), so the cost of validation + the transactional outbox shows as a ratio.

    .venv/bin/python tests/benchmarks/bench_api_submit.py [--workers 2] [--seconds 10] [--runs 3]

Needs wrk (Debian package ``wrk``) and the machine's PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage.context import open_storage  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Environment  # noqa: E402
from storage.settings import load_settings  # noqa: E402
from tests.support.services import fresh_postgres_database  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.body = '{"name": "bench", "env_name": "CartPole-v1", "agent": "PPO", "total_timesteps": 50000, "seeds": [0, 1]}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, seconds: int, connections: int, script: str | None) -> dict:
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", url]
    if script:
        argv[1:1] = ["-s", script]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]),
            "non_2xx": int(errors.group(1)) if errors else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    with fresh_postgres_database() as url, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "RESIMHUB_DATABASE_URL": url, "RESIMHUB_DATA_DIR": tmp, "RESIMHUB_LOG_LEVEL": "WARNING"}
        settings = load_settings(env)
        upgrade(settings)
        storage = open_storage(settings)
        with storage.db.session() as session:
            session.add(Environment(env_name="CartPole-v1", status="verified",
                                    spec={"observation_space": {"type": "Box"}, "action_space": {"type": "Discrete"}}))
            session.commit()
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "api.cli", "api", "--port", str(port), "--workers",
                                   str(args.workers), "--no-access-log"], env=env)
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_up(base + "/health")
            run_wrk(base + "/api/experiments", 2, args.connections, str(script))  # warm-up
            results = {"GET /health (baseline)": [], "POST /api/experiments": []}
            for _ in range(args.runs):
                results["GET /health (baseline)"].append(run_wrk(base + "/health", args.seconds, args.connections,
                                                                  None))
                results["POST /api/experiments"].append(run_wrk(base + "/api/experiments", args.seconds,
                                                                 args.connections, str(script)))
        finally:
            server.terminate()
            server.wait(timeout=20)
            storage.close()
    print(f"gateway workers={args.workers}, wrk 1 thread, {args.connections} connections, "
          f"{args.seconds}s x {args.runs} runs (medians)")
    print(f"{'endpoint':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    summary = {}
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
        bad = sum(r["non_2xx"] for r in runs)
        summary[name] = med
        print(f"{name:<28}{med['rps']:>10.0f}{med['p50_ms']:>10.2f}{med['p99_ms']:>10.2f}{bad:>10}")
    ratio = summary["POST /api/experiments"]["rps"] / summary["GET /health (baseline)"]["rps"]
    print(f"POST / baseline throughput ratio: {ratio:.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
