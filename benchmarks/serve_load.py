"""Serving under load: requests/s, p50/p95/p99 latency and errors, micro-batching on and off.

    python benchmarks/serve_load.py --run runs/comedy-ce
    python benchmarks/serve_load.py --train-steps 20          # trains a model briefly first
    python benchmarks/serve_load.py --run runs/comedy-ce --server-cpus 0 1   # pin the server
    python benchmarks/serve_load.py --through nginx --replicas 2 --levels 32

With ``--through nginx`` the deployment's topology is measured instead (tests/helpers/
topology.py: a PostgreSQL server, ``--replicas`` `rlchat serve` processes sharing it, Debian's
nginx with deploy/nginx/rlchat.conf in front): one replica direct against nginx over all
replicas, at each level, in the same run; then chatting-and-rating users through nginx while
one replica is killed (SIGKILL) mid-run, counting failed requests and acknowledged ratings
missing from PostgreSQL.

The server (`rlchat.server.serve`, greedy, default model) runs in its own process on
127.0.0.1; a second process drives it with N connections, each sending its next request as
soon as the last is answered (closed loop), for at most ``--requests`` requests or
``--seconds`` seconds per level. The driver is a minimal keep-alive HTTP/1.1 client so that
it takes as little CPU from the server as possible. Goals from the issue: no errors at any
level, p50 under 20 ms at concurrency 1, at least 200 requests/s at concurrency 32 on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cornell-excerpt"
MESSAGES = [
    "Hi, how are you?",
    "What's your name?",
    "Where were you last night?",
    "I don't know what you're talking about.",
    "Do you want to get some dinner tonight?",
    "Why did you do that?",
    "Are you sure about this?",
    "Tell me the truth.",
    "Who is he?",
    "I can't believe you said that to her in front of everybody.",
    "Let's get out of here.",
    "What time is it?",
]
GOAL_P50_MS_AT_1 = 20.0
GOAL_RPS_AT_32 = 200.0


# --- the server process ------------------------------------------------------------------


def run_server(run: Path, port: int, batch_wait_ms: float, cpus: list[int] | None) -> None:
    """Target of the server process: pin it (if asked), then serve until terminated."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    from rlchat.server import serve

    with tempfile.TemporaryDirectory() as data:
        serve(
            [run],
            port=port,
            batch_wait_ms=batch_wait_ms,
            database=Path(data) / "feedback.sqlite3",
            device="cpu",
            log_level="warning",
        )


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server at {url} did not become ready")


def batch_counts(url: str) -> tuple[float, float]:
    """(sum, count) of the decoded batch sizes so far, from /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = re.search(r"rlchat_decode_batch_size_sum\{[^}]*\} ([\d.]+)", text)
    count = re.search(r"rlchat_decode_batch_size_count\{[^}]*\} (\d+)", text)
    return (float(total.group(1)), float(count.group(1))) if total and count else (0.0, 0.0)


# --- the load-driving process --------------------------------------------------------------


def request_bytes(port: int, message: str) -> bytes:
    body = json.dumps({"message": message, "decoding": {"strategy": "greedy"}}).encode()
    head = (
        f"POST /api/v1/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def connection(
    port: int, requests: list[bytes], budget: dict, latencies: list[float], errors: list[str]
) -> None:
    """One keep-alive connection sending requests back to back while the budget lasts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while budget["left"] > 0 and time.perf_counter() < budget["deadline"]:
            budget["left"] -= 1
            request = requests[budget["left"] % len(requests)]
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = re.search(r"(?i)content-length: *(\d+)", headers)
            await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append(time.perf_counter() - started)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(status_line.decode("latin-1").strip())
            if re.search(r"(?i)^connection: *close", headers, re.MULTILINE):
                # As a browser does: nginx closes a keep-alive connection after
                # keepalive_requests (1,000) answers, and says so in the last one.
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, asyncio.IncompleteReadError) as error:
        errors.append(repr(error))
    finally:
        writer.close()


def drive(port: int, concurrency: int, max_requests: int, max_seconds: float) -> dict:
    """Target of the driver process: one load level, its figures."""

    async def main() -> dict:
        requests = [request_bytes(port, m) for m in MESSAGES]
        budget = {"left": max_requests, "deadline": time.perf_counter() + max_seconds}
        latencies: list[float] = []
        errors: list[str] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(connection(port, requests, budget, latencies, errors) for _ in range(concurrency))
        )
        elapsed = time.perf_counter() - started
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        return {
            "concurrency": concurrency,
            "requests": len(latencies),
            "seconds": round(elapsed, 2),
            "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(cuts[49] * 1000, 1),
            "p95_ms": round(cuts[94] * 1000, 1),
            "p99_ms": round(cuts[98] * 1000, 1),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:3],
        }

    return asyncio.run(main())


# --- orchestration -------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_mode(args: argparse.Namespace, run: Path, batch_wait_ms: float) -> list[dict]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spawn = get_context("spawn")
    server = spawn.Process(
        target=run_server, args=(run, port, batch_wait_ms, args.server_cpus), daemon=True
    )
    server.start()
    rows = []
    try:
        wait_ready(url)
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as driver:
            driver.submit(drive, port, 4, 100, 10.0).result()  # warm-up, not reported
            for level in args.levels:
                before = batch_counts(url)
                row = driver.submit(drive, port, level, args.requests, args.seconds).result()
                after = batch_counts(url)
                batches = after[1] - before[1]
                row["mean_batch"] = round((after[0] - before[0]) / batches, 1) if batches else 0
                row["batching"] = "on" if batch_wait_ms > 0 else "off"
                rows.append(row)
                logging.info("%s", row)
    finally:
        server.terminate()
        server.join(30)
    return rows


def measure_through_nginx(args: argparse.Namespace, run: Path, batch_wait_ms: float) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))
    from topology import Nginx, Postgres, Replica, chat_and_rate, missing_tools

    if missing := missing_tools():
        raise SystemExit(f"--through nginx needs {', '.join(missing)}")
    spawn = get_context("spawn")
    with tempfile.TemporaryDirectory() as logs:
        postgres = Postgres().start()
        options = ("--batch-wait-ms", str(batch_wait_ms))
        replicas = [
            Replica(run, postgres.url, Path(logs) / f"replica-{i}.log", *options)
            for i in range(args.replicas)
        ]
        nginx = None
        try:
            for replica in replicas:
                replica.start()
            nginx = Nginx([r.port for r in replicas]).start()
            paths = {"one replica direct": replicas[0].port,
                     f"nginx, {args.replicas} replicas": nginx.port}  # fmt: skip
            rows = []
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as driver:
                for port in paths.values():
                    driver.submit(drive, port, 4, 100, 10.0).result()  # warm-up, not reported
                for level in args.levels:
                    for path, port in paths.items():
                        row = driver.submit(drive, port, level, args.requests, args.seconds)
                        rows.append({"path": path, **row.result()})
                        logging.info("%s", rows[-1])

            async def kill_one() -> None:
                await asyncio.sleep(args.seconds / 3)
                replicas[-1].kill()

            load = asyncio.run(chat_and_rate(nginx.url, 32, args.seconds, during=kill_one()))
            stored = set(postgres.query("SELECT conversation_id, turn FROM feedback"))
            fault = {
                "clients": 32,
                "seconds": round(load["seconds"], 1),
                "requests": load["requests"],
                "failed": len(load["failures"]),
                "failed_share": round(len(load["failures"]) / max(load["requests"], 1), 4),
                "ratings_acknowledged": len(load["acknowledged"]),
                "ratings_lost": len(load["acknowledged"] - stored),
                "failure_samples": sorted(set(load["failures"]))[:3],
            }
            logging.info("kill one replica: %s", fault)
        finally:
            if nginx:
                nginx.stop()
            for replica in replicas:
                replica.stop()
            postgres.close()
    return {"rows": rows, "kill_one_replica": fault}


def nginx_markdown(result: dict) -> str:
    lines = [
        "| path | concurrency | requests | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['path']} | {r['concurrency']} | {r['requests']} | {r['rps']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
        )
    by_level: dict[int, dict[str, float]] = {}
    for r in result["rows"]:
        by_level.setdefault(r["concurrency"], {})[r["path"]] = r["rps"]
    for level, rps in by_level.items():
        direct, through = rps.values()
        lines.append(f"\nreq/s through nginx / one replica direct at {level}: "
                     f"{through / direct:.2f}")  # fmt: skip
    k = result["kill_one_replica"]
    lines.append(
        f"kill one replica under {k['clients']} users ({k['seconds']} s): {k['failed']} of "
        f"{k['requests']} requests failed ({k['failed_share']:.2%}, goal <= 1%), "
        f"{k['ratings_lost']} of {k['ratings_acknowledged']} acknowledged ratings lost (goal 0)"
    )
    return "\n".join(lines)


def train_briefly(corpus: Path, steps: int, out: Path) -> Path:
    """A default-size model after a few steps: its decode cost is a trained model's."""
    from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, TokenizerConfig
    from rlchat.corpus import load_corpus
    from rlchat.train.cross_entropy import train_cross_entropy

    train_cross_entropy(
        out=out,
        corpus=load_corpus(corpus),
        data_config=DataConfig(genres=["comedy"]),
        tokenizer_config=TokenizerConfig(),
        model_config=ModelConfig(),
        train_config=CrossEntropyConfig(max_steps=steps),
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    return out


def machine() -> str:
    """The CPU's model name (platform.processor() is empty on Linux)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def markdown(rows: list[dict]) -> str:
    lines = [
        "| batching | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | errors | "
        "mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batching']} | {r['concurrency']} | {r['requests']} | {r['rps']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['mean_batch']} |"
        )
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[str]:
    on = {r["concurrency"]: r for r in rows if r["batching"] == "on"}
    verdicts = [f"errors at every level: {sum(r['errors'] for r in rows)} (goal 0)"]
    if 1 in on:
        verdicts.append(f"p50 at concurrency 1: {on[1]['p50_ms']} ms (goal < {GOAL_P50_MS_AT_1})")
    if 32 in on:
        verdicts.append(f"req/s at concurrency 32: {on[32]['rps']} (goal >= {GOAL_RPS_AT_32})")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="run directory to serve (default: train one)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus to train on")
    parser.add_argument("--train-steps", type=int, default=20, help="steps when training one")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 128], help="clients")
    parser.add_argument("--requests", type=int, default=3000, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=15.0, help="longest time per level")
    parser.add_argument(
        "--wait-ms", type=float, default=None, help="batching wait (default: the server's)"
    )
    parser.add_argument(
        "--server-cpus", type=int, nargs="+", default=None, help="pin the server to these CPUs"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--through", choices=["nginx"], help="measure the deployment: nginx over replicas"
    )
    parser.add_argument("--replicas", type=int, default=2, help="replicas behind nginx")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    from rlchat.server.settings import ServerSettings

    wait_ms = args.wait_ms if args.wait_ms is not None else ServerSettings().batch_wait_ms
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or train_briefly(args.corpus, args.train_steps, Path(scratch) / "run")
        if args.through:
            result = measure_through_nginx(args, run, wait_ms)
        else:
            rows = measure_mode(args, run, wait_ms) + measure_mode(args, run, 0.0)
    cpus = len(args.server_cpus) if args.server_cpus else os.cpu_count()
    if args.through:
        print(f"machine: {machine()}, everything on {os.cpu_count()} CPUs")
        print(f"model: {run}, greedy; batching on = {wait_ms} ms wait")
        print(nginx_markdown(result))
        if args.json:
            args.json.write_text(json.dumps({"wait_ms": wait_ms, **result}, indent=2))
        return
    print(f"machine: {platform.processor() or platform.machine()}, server on {cpus} CPUs")
    print(f"model: {run}, greedy; batching on = {wait_ms} ms wait")
    print(markdown(rows))
    for verdict in goals(rows):
        print(verdict)
    if args.json:
        args.json.write_text(json.dumps({"wait_ms": wait_ms, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
