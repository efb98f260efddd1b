"""`/metrics` from prometheus_client: route templates only, one registry per app, and with
`--workers N` one answer that sums every worker (multi-process mode)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from test_server_shutdown import free_port, wait_ready

from helpers.prometheus import samples, value
from rlchat.server import create_app, serve

CHAT = {"method": "POST", "route": "/api/v1/chat", "status": "200"}


def test_metrics_parse_and_count_under_route_templates(client):
    for turn in range(3):
        assert client.post("/api/v1/chat", json={"message": f"hi {turn}"}).status_code == 200
    raw = f"/no/such/{uuid.uuid4().hex}"
    assert client.get(raw).status_code == 404
    response = client.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    text = response.text
    families = {name for name, _ in samples(text)}  # parses as Prometheus would
    assert {
        "rlchat_http_requests_total",
        "rlchat_http_errors_total",
        "rlchat_http_request_duration_seconds_bucket",
        "rlchat_decode_batch_size_bucket",
    } <= families
    assert value(text, "rlchat_http_requests_total", **CHAT) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(text, "rlchat_http_requests_total", **unmatched) == 1
    assert value(text, "rlchat_http_errors_total", route="unmatched", kind="client") == 1
    assert raw not in text and "/no/such" not in text  # never a raw path as a label
    # The same buckets as before, the last one +Inf.
    latency = value(
        text, "rlchat_http_request_duration_seconds_bucket", route="/api/v1/chat", le="5.0"
    )
    assert latency == 3
    assert value(text, "rlchat_http_request_duration_seconds_count", route="/api/v1/chat") == 3
    # Each decoded request is in one batch: the sizes sum to the requests.
    assert value(text, "rlchat_decode_batch_size_sum", model="comedy") == 3
    assert value(text, "rlchat_decode_batch_size_bucket", model="comedy", le="+Inf") >= 1


def test_each_app_counts_in_its_own_registry(settings):
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert first.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
        assert value(first.get("/metrics").text, "rlchat_http_requests_total", **CHAT) == 1
        assert value(second.get("/metrics").text, "rlchat_http_requests_total", **CHAT) == 0
        assert not first.app.state.metrics.multiprocess


@pytest.fixture
def uvicorn_env(monkeypatch) -> list[dict[str, str]]:
    """What the environment was when serve() called uvicorn.run (which does not run)."""
    seen: list[dict[str, str]] = []

    def run(app, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append({**os.environ, "app": app})

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    return seen


def test_several_workers_get_a_fresh_metrics_directory_removed_at_exit(
    tiny_runs, tmp_path, uvicorn_env
):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = inherited = str(tmp_path / "inherited")
    serve([tiny_runs["comedy"]], workers=2, database=tmp_path / "db.sqlite3", device="cpu")
    [seen] = uvicorn_env
    directory = seen["PROMETHEUS_MULTIPROC_DIR"]
    assert directory != inherited and "rlchat-metrics-" in directory
    assert not Path(directory).exists()  # cleaned once the workers are gone
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == inherited  # as it was before


def test_one_worker_ignores_an_inherited_metrics_directory(tiny_runs, tmp_path, uvicorn_env):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "gone")
    serve([tiny_runs["comedy"]], database=tmp_path / "db.sqlite3", device="cpu")
    [seen] = uvicorn_env
    assert "PROMETHEUS_MULTIPROC_DIR" not in seen
    with TestClient(seen["app"]) as client:
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
        text = client.get("/metrics").text
        assert not client.app.state.metrics.multiprocess
    assert value(text, "rlchat_http_requests_total", **CHAT) == 1
    assert not (tmp_path / "gone").exists()


def start_server(run: Path, tmp_path: Path, *options: str, env: dict | None = None):  # noqa: ANN201
    port = free_port()
    command = [
        sys.executable, "-m", "rlchat", "serve", str(run), "--port", str(port),
        "--database", str(tmp_path / "db.sqlite3"), "--batch-wait-ms", "0", "--device", "cpu",
        *options,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
    except BaseException:
        process.kill()
        raise
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=60) == 0, process.stderr.read().decode()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()


def chats_per_worker(directory: str) -> list[float]:
    """Chats counted by each worker that counted any, read from its own file."""
    counts = []
    for path in glob.glob(os.path.join(directory, "counter_*.db")):
        merged = MultiProcessCollector.merge([path], accumulate=False)
        count = sum(
            sample.value
            for family in merged
            for sample in family.samples
            if sample.name == "rlchat_http_requests_total" and sample.labels == CHAT
        )
        if count:
            counts.append(count)
    return counts


def test_several_workers_answer_with_the_sum_of_all_workers(tiny_runs, tmp_path):
    # The metrics directory is made under TMPDIR: watch it appear, fill and go.
    temp = tmp_path / "tmp"
    temp.mkdir()
    process, url = start_server(
        tiny_runs["comedy"], tmp_path, "--workers", "2", env={"TMPDIR": str(temp)}
    )
    try:
        [directory] = glob.glob(str(temp / "rlchat-metrics-*"))

        def chat(i: int) -> int:
            body = {"message": f"what is number {i}?"}
            return httpx.post(f"{url}/api/v1/chat", json=body, timeout=30).status_code

        # Requests on fresh connections land on either worker; send until both have answered
        # some (each worker keeps its values in its own file, named after its process id).
        sent, deadline = 0, time.monotonic() + 120  # the second may still be loading
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                assert list(pool.map(chat, range(sent, sent + 16))) == [200] * 16
                sent += 16
                if len(chats_per_worker(directory)) == 2:
                    break
        per_worker = chats_per_worker(directory)
        assert len(per_worker) == 2 and sum(per_worker) == sent, per_worker
        for _ in range(6):  # whichever worker answers, it sums both
            text = httpx.get(f"{url}/metrics").text
            assert value(text, "rlchat_http_requests_total", **CHAT) == sent
            assert (
                value(text, "rlchat_http_request_duration_seconds_count", route="/api/v1/chat")
                == sent
            )
            assert value(text, "rlchat_decode_batch_size_sum", model="comedy") == sent
    finally:
        stop(process)
    assert not Path(directory).exists()


def test_one_worker_with_an_inherited_metrics_directory_counts_in_memory(tiny_runs, tmp_path):
    gone = tmp_path / "gone"  # say, left from a parent's multi-process set-up
    process, url = start_server(
        tiny_runs["comedy"], tmp_path, env={"PROMETHEUS_MULTIPROC_DIR": str(gone)}
    )
    try:
        for turn in range(3):
            assert (
                httpx.post(f"{url}/api/v1/chat", json={"message": f"hi {turn}"}).status_code == 200
            )
        text = httpx.get(f"{url}/metrics").text
    finally:
        stop(process)
    assert value(text, "rlchat_http_requests_total", **CHAT) == 3
    assert value(text, "rlchat_http_requests_created", **CHAT) > 0
    assert not gone.exists()
