"""Load test: N concurrent clients against a real uvicorn on 127.0.0.1, bounded in count and time.

Each client mixes cached reads (analysis JSON, permalink JSON, neuron pages), live ablations with random
neuron sets, and new analyses (POST, then follow the job). Clients honour 429/503 ``Retry-After``.
Prints the count of 5xx answers other than overload-with-Retry-After (must be 0), lost results (accepted
jobs that never reached a final state, or finished analyses that cannot be read back; must be 0), and
latency percentiles per request kind.

    python bench/load.py [--clients 50] [--requests 8] [--max-seconds 240] [--tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
WORDS = ["the", "cat", "dog", "city", "river", "king", "queen", "water", "fire", "red", "blue", "big", "small", "one", "two", "three", "is", "was", "in", "of"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, data_dir: str, tiny: bool) -> subprocess.Popen:
    """The real app under uvicorn in a subprocess (tiny engine with --tiny, else the default model)."""
    env = {**os.environ, "CIRCUITSCOPE_DATA_DIR": data_dir, "CIRCUITSCOPE_QUEUE_LIMIT": "16"}
    if tiny:
        cmd = [sys.executable, str(REPO / "tests/web/serve_tiny.py"), data_dir, str(port)]
    else:
        cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    log = open(Path(data_dir) / "server.log", "wb")  # noqa: SIM115 - a file, not a pipe (a full pipe blocks the server); the child owns it
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (graceful: running jobs are marked failed), then SIGKILL if it takes too long."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


async def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with status {proc.returncode}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit("server did not become healthy")


class Stats:
    """Latencies per kind, status counts, and the bookkeeping for lost results."""

    def __init__(self):
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[int, int] = defaultdict(int)
        self.server_errors = 0
        self.transport_errors: list[str] = []
        self.overload = 0
        self.accepted_jobs: set[str] = set()
        self.final_jobs: set[str] = set()
        self.finished_analyses: set[str] = set()

    def record(self, kind: str, response: httpx.Response, seconds: float) -> None:
        self.status[response.status_code] += 1
        self.latency[kind].append(seconds)
        if response.status_code >= 500:
            if response.status_code in (503,) and "retry-after" in response.headers:
                self.overload += 1
            else:
                self.server_errors += 1


async def call(client: httpx.AsyncClient, stats: Stats, kind: str, method: str, url: str, **kw) -> httpx.Response:
    """One request, retried (bounded) while the server says it is overloaded."""
    for _ in range(5):
        start = time.perf_counter()
        try:
            response = await client.request(method, url, **kw)
        except httpx.TransportError as error:  # the server dropped or refused the connection: a failure
            stats.transport_errors.append(f"{kind}: {type(error).__name__}")
            raise
        stats.record(kind, response, time.perf_counter() - start)
        if response.status_code not in (429, 503):
            return response
        await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 5.0))
    return response


async def follow(client: httpx.AsyncClient, stats: Stats, job: dict, deadline: float) -> str | None:
    """Poll a job to a final state; return the analysis id when done."""
    stats.accepted_jobs.add(job["id"])
    while time.monotonic() < deadline:
        snap = (await call(client, stats, "job_poll", "GET", f"/api/jobs/{job['id']}")).json()
        if snap["status"] in ("done", "failed", "cancelled"):
            stats.final_jobs.add(job["id"])
            return snap.get("result_id") if snap["status"] == "done" else None
        await asyncio.sleep(0.5)
    return None


async def new_analysis(client, stats, rng, deadline) -> None:
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
    response = await call(client, stats, "analysis_new", "POST", "/api/analyses", json={"prompt": prompt, "k": 5})
    if response.status_code == 202:
        result_id = await follow(client, stats, response.json()["job"], deadline)
        if result_id:
            stats.finished_analyses.add(result_id)
    elif response.status_code == 200:
        stats.finished_analyses.add(response.json()["analysis"]["id"])


async def client_loop(base: str, stats: Stats, seed_analysis: dict, requests: int, seed: int, deadline: float):
    rng = random.Random(seed)
    nodes = [n["id"] for n in seed_analysis["result"]["nodes"]]
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            roll = rng.random()
            if roll < 0.5:
                url = rng.choice([f"/api/analyses/{seed_analysis['id']}", f"/a/{seed_analysis['slug']}.json"])
                await call(client, stats, "cached_read", "GET", url)
            elif roll < 0.8:
                body = {"neurons": rng.sample(nodes, rng.randint(1, 6)), "mode": "zero", "continuation": 4}
                await call(client, stats, "ablation", "POST", f"/api/analyses/{seed_analysis['id']}/ablations", json=body)
            else:
                await new_analysis(client, stats, rng, deadline)


async def seed(base: str) -> dict:
    stats = Stats()
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        response = await client.post("/api/analyses", json={"prompt": "The capital of France is", "k": 5})
        if response.status_code == 202:
            await follow(client, stats, response.json()["job"], time.monotonic() + 300)
            response = await client.post("/api/analyses", json={"prompt": "The capital of France is", "k": 5})
        return response.json()["analysis"]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else (values[0] if values else 0.0)


async def main_async(args) -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        proc = start_server(port, data_dir, args.tiny)
        try:
            await wait_healthy(base, proc)
            analysis = await seed(base)
            stats = Stats()
            deadline = time.monotonic() + args.max_seconds
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(client_loop(base, stats, analysis, args.requests, i, deadline)
                                              for i in range(args.clients)), return_exceptions=True)
            crashed = [o for o in outcomes if isinstance(o, BaseException)]
            elapsed = time.perf_counter() - started
            lost = await count_lost(base, stats)
        finally:
            stop_server(proc)
            server_log = (Path(data_dir) / "server.log").read_text(errors="replace")
            if args.server_log:
                Path(args.server_log).write_text(server_log)
    report(stats, elapsed, lost, args)
    if crashed or stats.transport_errors:
        print(f"client failures: {len(crashed)}; transport errors: {stats.transport_errors[:5]}")
        print("server log tail:\n" + server_log[-3000:])
    return 0 if stats.server_errors == 0 and lost == 0 and not crashed else 1


async def count_lost(base: str, stats: Stats) -> int:
    """Accepted jobs that never reach a final state (waiting, bounded, for the queue to drain), plus
    finished analyses that cannot be read back."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        deadline = time.monotonic() + 300
        for job_id in sorted(stats.accepted_jobs - stats.final_jobs):
            result_id = await follow(client, stats, {"id": job_id}, deadline)
            if result_id:
                stats.finished_analyses.add(result_id)
        lost = len(stats.accepted_jobs - stats.final_jobs)
        for analysis_id in stats.finished_analyses:
            if (await client.get(f"/api/analyses/{analysis_id}")).status_code != 200:
                lost += 1
    return lost


def report(stats: Stats, elapsed: float, lost: int, args) -> None:
    total = sum(stats.status.values())
    print(f"{args.clients} clients, {total} requests in {elapsed:.1f} s ({total / elapsed:.1f} req/s); "
          f"model: {'tiny' if args.tiny else 'default'}")
    print(f"status counts: {dict(sorted(stats.status.items()))}")
    print(f"5xx (not overload): {stats.server_errors}   overload answers with Retry-After: {stats.overload}   "
          f"lost results: {lost}   jobs accepted: {len(stats.accepted_jobs)}")
    print(f"{'kind':<14}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for kind, values in sorted(stats.latency.items()):
        print(f"{kind:<14}{len(values):>6}{pct(values, 50) * 1e3:>10.1f}{pct(values, 95) * 1e3:>10.1f}"
              f"{pct(values, 99) * 1e3:>10.1f}{max(values) * 1e3:>10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--max-seconds", type=float, default=240)
    parser.add_argument("--tiny", action="store_true", help="serve the tiny test model instead of SmolLM2")
    parser.add_argument("--server-log", help="keep the server's log in this file")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
