"""Every endpoint's answer when the request is good."""

from __future__ import annotations

import json
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from helpers.prometheus import value
from rlchat.chatbot import Chatbot
from rlchat.server import create_app


def chat(client, **body):
    response = client.post("/api/v1/chat", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_chat_replies_with_the_default_model_and_starts_a_conversation(client):
    reply = chat(client, message="How are you?")
    assert set(reply) == {"reply", "conversation_id", "model", "latency_ms", "turn"}
    assert reply["model"] == "comedy" and reply["turn"] == 1
    assert isinstance(reply["reply"], str) and reply["latency_ms"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}", reply["conversation_id"])


def test_chat_greedy_reply_is_the_models_own(client, tiny_runs):
    bot = Chatbot.load(tiny_runs["drama"], device="cpu")
    reply = chat(client, message="Where were you last night?", model="drama")
    assert reply["reply"] == bot.reply("Where were you last night?")


def test_conversation_turns_are_numbered(client):
    first = chat(client, message="Hello.")
    second = chat(client, message="Who are you?", conversation_id=first["conversation_id"])
    assert second["conversation_id"] == first["conversation_id"] and second["turn"] == 2


def test_a_client_chosen_conversation_id_is_kept(client):
    assert (
        chat(client, message="Hi.", conversation_id="my-chat_1")["conversation_id"] == "my-chat_1"
    )


def test_genre_picks_the_model_trained_on_it(client):
    assert chat(client, message="Hi.", genre="drama")["model"] == "drama"
    assert chat(client, message="Hi.", genre="comedy")["model"] == "comedy"


def test_every_decoding_strategy_answers(client):
    for decoding in (
        {"strategy": "greedy", "max_tokens": 3},
        {"strategy": "beam", "beam_size": 3},
        {"strategy": "sample", "temperature": 0.7, "top_k": 10, "top_p": 0.9},
    ):
        assert isinstance(chat(client, message="Go on.", decoding=decoding)["reply"], str)


def test_models_lists_genres_stage_and_evaluation_figures(client, tiny_runs):
    evaluation = json.loads((tiny_runs["comedy"].parent / "eval.json").read_text())
    catalogue = client.get("/api/v1/models").json()
    assert catalogue["default"] == "comedy" and catalogue["genres"] == ["comedy", "drama"]
    models = {m["name"]: m for m in catalogue["models"]}
    assert models["comedy"] == {
        "name": "comedy",
        "genres": ["comedy"],
        "stage": "ce",
        "context_turns": 0,
        "default": True,
        "evaluation": evaluation["runs"][0]["metrics"],
    }
    assert models["drama"]["evaluation"] is None and not models["drama"]["default"]


def test_feedback_is_stored_with_the_rated_exchange(client, settings):
    reply = chat(client, message="Tell me a joke.")
    rating = {"conversation_id": reply["conversation_id"], "turn": 1, "rating": "down"}
    assert client.post("/api/v1/feedback", json=rating).json() == rating
    # Rating the same reply again replaces the first rating.
    response = client.post("/api/v1/feedback", json=rating | {"rating": "up", "comment": "ha"})
    assert response.status_code == 200
    with sqlite3.connect(settings.database_location) as db:
        rows = db.execute("SELECT rating, comment, message, reply, model FROM feedback").fetchall()
    assert rows == [("up", "ha", "Tell me a joke.", reply["reply"], "comedy")]


def test_health_and_readiness(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["comedy", "drama"]


def test_metrics_count_requests_errors_latency_and_batches(client):
    chat(client, message="Hi.")
    client.post("/api/v1/chat", json={"message": ""})
    text = client.get("/metrics").text
    chats = {"method": "POST", "route": "/api/v1/chat"}
    assert value(text, "rlchat_http_requests_total", **chats, status="200") == 1
    assert value(text, "rlchat_http_errors_total", route="/api/v1/chat", kind="client") == 1
    assert value(text, "rlchat_http_request_duration_seconds_count", route="/api/v1/chat") == 2
    assert value(text, "rlchat_decode_batch_size_count", model="comedy") == 1
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_docs_and_schema_are_served(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/chat", "/api/v1/models", "/api/v1/feedback", "/chat"} <= set(paths)


def test_page_and_its_files_come_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_concurrent_requests_are_batched_and_each_gets_its_own_reply(settings, tiny_runs):
    bot = Chatbot.load(tiny_runs["comedy"], device="cpu")
    messages = [f"Is number {i} your lucky one?" for i in range(24)]
    slow = settings.model_copy(update={"batch_wait_ms": 100})
    with TestClient(create_app(slow)) as client, ThreadPoolExecutor(24) as pool:
        replies = list(pool.map(lambda m: chat(client, message=m)["reply"], messages))
        batches = client.get("/metrics").text
    assert replies == bot.reply_batch(messages)
    count = value(batches, "rlchat_decode_batch_size_count", model="comedy")
    assert 0 < count < len(messages)


def test_the_api_answers_only_the_configured_origins(settings):
    allowed = settings.model_copy(update={"cors_origins": ["http://localhost:8080"]})
    preflight = {"Access-Control-Request-Method": "POST"}
    with TestClient(create_app(allowed)) as client:
        good = client.options(
            "/api/v1/chat", headers=preflight | {"Origin": "http://localhost:8080"}
        )
        bad = client.options("/api/v1/chat", headers=preflight | {"Origin": "http://evil.example"})
    assert good.headers["access-control-allow-origin"] == "http://localhost:8080"
    assert "access-control-allow-origin" not in bad.headers
    with TestClient(create_app(settings)) as client:  # no --cors-origin: no origin at all
        none = client.options("/api/v1/chat", headers=preflight | {"Origin": "http://localhost"})
    assert none.status_code == 405 and "access-control-allow-origin" not in none.headers


def test_the_original_chat_answers_any_origin_as_the_original_server_did(client):
    preflight = {
        "Origin": "http://localhost:8080",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    answer = client.options("/chat", headers=preflight)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
    assert "content-type" in answer.headers["access-control-allow-headers"].lower()
    reply = client.post("/chat", json={"text": "Hi."}, headers={"Origin": "http://a.example"})
    assert reply.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in reply.headers


def test_a_model_trained_with_context_sees_the_conversations_last_turns(client):
    served = client.app.state.models.models["comedy"]
    served.bot.config["data"]["context_turns"] = 2  # as if trained with --context-turns 2
    seen = []
    decode = served.batcher.decode_batch
    served.batcher.decode_batch = lambda m, h, c: (
        seen.append([list(x) for x in h]) or decode(m, h, c)
    )
    first = chat(client, message="One.")
    chat(client, message="Two.", conversation_id=first["conversation_id"])
    chat(client, message="Elsewhere.")
    assert seen == [[[]], [["One.", first["reply"]]], [[]]]


def test_conversations_in_the_database_survive_a_restart(settings):
    with TestClient(create_app(settings)) as client:
        first = chat(client, message="Remember me?")
    with TestClient(create_app(settings)) as client:
        again = chat(client, message="Do you?", conversation_id=first["conversation_id"])
        rating = {"conversation_id": first["conversation_id"], "turn": 1, "rating": "up"}
        assert client.post("/api/v1/feedback", json=rating).status_code == 200
    assert again["turn"] == 2


def test_without_a_database_named_conversations_stay_in_memory(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    default = settings.model_copy(update={"database": None})
    with TestClient(create_app(default)) as client:
        first = chat(client, message="Remember me?")
        rating = {"conversation_id": first["conversation_id"], "turn": 1, "rating": "up"}
        assert client.post("/api/v1/feedback", json=rating).status_code == 200
    with TestClient(create_app(default)) as client:
        again = chat(client, message="Do you?", conversation_id=first["conversation_id"])
    assert again["turn"] == 1  # a new process, no memory of the conversation
    with sqlite3.connect(tmp_path / "data" / "rlchat" / "feedback.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM feedback").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 0


@pytest.fixture(scope="module")
def backward_run(tiny_runs, tmp_path_factory, corpus_dir):
    from helpers.tiny_run import train_tiny_run
    from rlchat.corpus import load_corpus

    out = tmp_path_factory.mktemp("backward") / "backward"
    return train_tiny_run(
        out, load_corpus(corpus_dir), direction="backward", init=tiny_runs["comedy"]
    )


def test_mmi_reranking_is_served_with_a_backward_model(settings, backward_run):
    from rlchat.server import create_app

    mmi = {"strategy": "sample", "rerank": "mmi", "candidates": 4}
    served = settings.model_copy(update={"backward": backward_run, "decoding": mmi})
    with TestClient(create_app(served)) as client:
        # The server's default decoding is MMI; a request may still ask for greedy.
        default = client.post("/api/v1/chat", json={"message": "how are you?"})
        greedy = client.post(
            "/api/v1/chat",
            json={"message": "how are you?", "decoding": {"strategy": "greedy", "rerank": "none"}},
        )
        assert default.status_code == 200 and greedy.status_code == 200
        again = client.post(
            "/api/v1/chat",
            json={"message": "how are you?", "decoding": {"rerank": "mmi", "candidates": 8}},
        )
        assert again.status_code == 200 and again.json()["reply"]
        one = client.post(  # greedy search has one candidate, which MMI keeps
            "/api/v1/chat",
            json={"message": "hi", "decoding": {"rerank": "mmi", "strategy": "greedy"}},
        )
        assert one.status_code == 200


def test_mmi_without_a_backward_model_is_a_404_naming_the_field(client):
    response = client.post(
        "/api/v1/chat",
        json={"message": "hi", "decoding": {"strategy": "sample", "rerank": "mmi"}},
    )
    assert response.status_code == 404
    assert response.json()["fields"][0]["field"] == "decoding.rerank"
    assert "Traceback" not in response.text


def test_a_server_default_of_mmi_without_a_backward_model_fails_at_start(settings):
    bad = settings.model_copy(update={"decoding": {"strategy": "sample", "rerank": "mmi"}})
    with pytest.raises(ValueError, match="backward"):
        _ = bad.default_decoding
