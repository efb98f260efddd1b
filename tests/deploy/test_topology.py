"""The deployment for real, without containers: Debian's nginx with deploy/nginx's file, two
`rlchat serve` replicas, one PostgreSQL server, all on loopback (as compose.yaml arranges them).

`.ci/run` installs nginx and PostgreSQL; without them these tests skip on a developer's
machine and fail in CI.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from topology import (  # noqa: E402
    Nginx,
    Postgres,
    Replica,
    chat_and_rate,
    http_status,
    missing_tools,
    wait_for,
)

from rlchat.server.storage import Database, DatabaseConversations, FeedbackStore  # noqa: E402

if missing := missing_tools():
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the deployment tests; missing: {missing}")
    pytest.skip(f"missing {', '.join(missing)}", allow_module_level=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_dir) -> Path:
    from helpers.tiny_run import train_tiny_run
    from rlchat.corpus import load_corpus

    return train_tiny_run(tmp_path_factory.mktemp("deploy") / "comedy", load_corpus(corpus_dir))


@pytest.fixture
def replicas(run, postgres, tmp_path) -> Iterator[list[Replica]]:
    started = [Replica(run, postgres.url, tmp_path / f"replica-{i}.log") for i in (1, 2)]
    try:
        for replica in started:
            replica.start()
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def nginx(replicas) -> Iterator[Nginx]:
    proxy = Nginx([r.port for r in replicas]).start()
    yield proxy
    proxy.stop()


def chat(client: httpx.Client, **body) -> dict:  # noqa: ANN003
    response = client.post("/api/v1/chat", json={"decoding": {"strategy": "greedy"}} | body)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_stores_on_postgresql_number_turns_and_replace_ratings(postgres):
    database = Database(postgres.url)
    conversations = DatabaseConversations(database, turns_kept=2)
    conversation = f"store-{random.random()}"
    turns = [
        conversations.append(conversation, message=f"m{i}", reply="r", model="m", decoding={})
        for i in range(3)
    ]
    assert [t.turn for t in turns] == [1, 2, 3]
    assert [t.message for t in conversations.recent(conversation)] == ["m1", "m2"]
    feedback = FeedbackStore(database)
    feedback.rate(turns[0], rating="up", comment=None)
    feedback.rate(turns[0], rating="down", comment="no")
    rows = [r for r in feedback.ratings() if r["conversation_id"] == conversation]
    assert [(r["turn"], r["rating"], r["comment"]) for r in rows] == [(1, "down", "no")]
    database.close()


def test_through_nginx_two_replicas_share_one_conversation_and_its_ratings(nginx, postgres):
    with httpx.Client(base_url=nginx.url, timeout=30) as client:
        first = chat(client, message="Hello there.")
        conversation = first["conversation_id"]
        # Round robin: the next requests land on both replicas, and each finds the turns
        # the other stored.
        for _ in range(3):
            chat(client, message="And then?", conversation_id=conversation)
        for turn in (1, 2, 3, 4):
            rating = {"conversation_id": conversation, "turn": turn, "rating": "up"}
            assert client.post("/api/v1/feedback", json=rating).status_code == 200
        page = client.get("/", headers={"Accept-Encoding": "gzip"})
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert page.headers.get("content-encoding") == "gzip"
        assert client.get("/healthz").json()["status"] == "ok"
    stored = postgres.query(
        f"SELECT turn FROM feedback WHERE conversation_id = '{conversation}' ORDER BY turn"
    )
    assert [row[0] for row in stored] == [1, 2, 3, 4]


def test_nginx_refuses_big_bodies_and_keeps_metrics_private(nginx, replicas):
    with httpx.Client(base_url=nginx.url, timeout=30) as client:
        big = client.post("/api/v1/chat", content=b"x" * 100_000,
                          headers={"Content-Type": "application/json"})  # fmt: skip
        assert big.status_code == 413 and "nginx" in big.text
        assert client.get("/metrics").status_code == 404
    assert http_status(f"{replicas[0].url}/metrics") == 200  # scraped on the replica's port


@pytest.mark.slow
def test_killing_a_replica_under_load_loses_no_request_and_no_rating(nginx, replicas, postgres):
    killed, survivor = replicas

    async def kill_then_restart() -> None:
        await asyncio.sleep(3)
        killed.kill()
        await asyncio.sleep(3)
        assert http_status(f"{survivor.url}/readyz") == 200

    results = asyncio.run(chat_and_rate(nginx.url, 32, 8, during=kill_then_restart()))
    assert results["requests"] > 200
    assert len(results["failures"]) <= 0.01 * results["requests"], results["failures"][:5]
    stored = set(postgres.query("SELECT conversation_id, turn FROM feedback"))
    assert results["acknowledged"] and results["acknowledged"] <= stored

    # Restarted, the replica rejoins: nginx sends it requests again once its fail_timeout ends.
    killed.start()
    served_before = requests_served(killed)
    with httpx.Client(base_url=nginx.url, timeout=30) as client:

        def rejoined() -> bool:
            chat(client, message="Are you back?")
            return requests_served(killed) > served_before

        wait_for(rejoined, "the restarted replica taking requests", timeout_s=30)


def requests_served(replica: Replica) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{replica.url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rlchat_http_requests_total" and sample.labels["route"] == "/api/v1/chat"
    )


def test_postgresql_stopped_is_a_clear_503_then_recovers(nginx, replicas, postgres):
    with httpx.Client(base_url=replicas[0].url, timeout=30) as client:
        turn = chat(client, message="Before the outage.")
        postgres.stop()
        try:
            ready = client.get("/readyz")
            rating = {"conversation_id": turn["conversation_id"], "turn": 1, "rating": "up"}
            write = client.post("/api/v1/feedback", json=rating)
            talk = client.post("/api/v1/chat", json={"message": "During?"})
        finally:
            postgres.start()
        for answer in (ready, write, talk):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "database_unavailable"
            assert "Traceback" not in answer.text and "psycopg" not in answer.text
            assert answer.headers["retry-after"] == "1"
        # Back: the pool drops its dead connections and the same requests succeed.
        wait_for(lambda: http_status(f"{replicas[0].url}/readyz") == 200, "readiness")
        assert client.post("/api/v1/feedback", json=rating).status_code == 200


def test_a_replica_started_before_its_database_waits_not_ready(run, postgres, tmp_path):
    postgres.stop()
    replica = Replica(run, postgres.url, tmp_path / "early.log")
    try:
        with replica.log.open("ab") as log:
            replica.process = subprocess.Popen(replica.command, stdout=log, stderr=log)
        wait_for(lambda: http_status(f"{replica.url}/healthz") == 200, "the replica", 120)
        assert http_status(f"{replica.url}/readyz") == 503
    finally:
        postgres.start()
    try:
        wait_for(lambda: http_status(f"{replica.url}/readyz") == 200, "readiness", 30)
        with httpx.Client(base_url=replica.url, timeout=30) as client:
            turn = chat(client, message="Made it.")
            rating = {"conversation_id": turn["conversation_id"], "turn": 1, "rating": "up"}
            assert client.post("/api/v1/feedback", json=rating).status_code == 200
    finally:
        replica.stop()
