"""SIGTERM at process level: in-flight requests finish, the server exits 0, no feedback is lost."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


def test_sigterm_finishes_in_flight_requests_and_keeps_feedback(tiny_runs, tmp_path):
    port, feedback = free_port(), tmp_path / "feedback.sqlite3"
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "rlchat", "serve", str(tiny_runs["comedy"]), "--port", str(port),
        "--database", str(feedback), "--batch-wait-ms", "800", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_ready(url, process)
        conversations = []
        for turn in range(5):
            reply = httpx.post(f"{url}/api/v1/chat", json={"message": f"hello {turn}"}).json()
            conversations.append(reply["conversation_id"])
            rating = {"conversation_id": reply["conversation_id"], "turn": 1, "rating": "up"}
            assert httpx.post(f"{url}/api/v1/feedback", json=rating).status_code == 200

        def chat(i: int) -> int:
            body = {"message": f"are you still there {i}?"}
            return httpx.post(f"{url}/api/v1/chat", json=body, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            # Concurrent requests wait in the micro-batcher (800 ms): in flight at the signal.
            futures = [pool.submit(chat, i) for i in range(8)]
            time.sleep(0.4)
            process.send_signal(signal.SIGTERM)
            statuses = [f.result() for f in futures]
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert statuses == [200] * 8
    with sqlite3.connect(feedback) as db:
        stored = {row[0] for row in db.execute("SELECT conversation_id FROM feedback")}
    assert stored == set(conversations)
