"""Bad input is a 4xx whose JSON names the field; failures inside are JSON too, without traces."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers.prometheus import value
from rlchat.chatbot import Chatbot
from rlchat.server import create_app
from rlchat.server.batching import MicroBatcher
from rlchat.server.deps import NotReady, get_models
from rlchat.server.registry import ModelRegistry, ServedModel


def assert_error(response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "fields"}
    assert field in [f["field"] for f in body["fields"]], body
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": ""}, "message"),
        ({"message": "   \n\t "}, "message"),
        ({"message": "x" * 501}, "message"),
        ({}, "message"),
        ({"message": 42}, "message"),
        ({"message": ["hi"]}, "message"),
        ({"message": None}, "message"),
        ({"message": "hi", "conversation_id": 7}, "conversation_id"),
        ({"message": "hi", "conversation_id": "../../etc"}, "conversation_id"),
        ({"message": "hi", "conversation_id": "x" * 65}, "conversation_id"),
        ({"message": "hi", "model": 3}, "model"),
        ({"message": "hi", "decoding": "beam"}, "decoding"),
        ({"message": "hi", "decoding": {"strategy": "nucleus"}}, "decoding.strategy"),
        ({"message": "hi", "decoding": {"beam_size": 0}}, "decoding.beam_size"),
        ({"message": "hi", "decoding": {"beam_size": 11}}, "decoding.beam_size"),
        ({"message": "hi", "decoding": {"beam_size": "3"}}, "decoding.beam_size"),
        ({"message": "hi", "decoding": {"beam_size": 2.5}}, "decoding.beam_size"),
        ({"message": "hi", "decoding": {"temperature": 0}}, "decoding.temperature"),
        ({"message": "hi", "decoding": {"temperature": -1}}, "decoding.temperature"),
        ({"message": "hi", "decoding": {"top_k": -1}}, "decoding.top_k"),
        ({"message": "hi", "decoding": {"top_p": 0}}, "decoding.top_p"),
        ({"message": "hi", "decoding": {"top_p": 1e-300}}, "decoding.top_p"),
        ({"message": "hi", "decoding": {"top_p": 1.5}}, "decoding.top_p"),
        ({"message": "hi", "decoding": {"max_tokens": 0}}, "decoding.max_tokens"),
        ({"message": "hi", "decoding": {"max_tokens": 10_000}}, "decoding.max_tokens"),
        ({"message": "hi", "decoding": {"max_tokens": True}}, "decoding.max_tokens"),
        ({"message": "hi", "decoding": {"temprature": 0.5}}, "decoding.temprature"),
        ({"message": "hi", "mesage": "typo"}, "mesage"),
    ],
)
def test_bad_chat_request_names_the_field(client, body, field):
    assert_error(client.post("/api/v1/chat", json=body), 422, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": "hi", "model": "nobody"}, "model"),
        ({"message": "hi", "genre": "western"}, "genre"),
        ({"message": "hi", "model": "comedy", "genre": "drama"}, "genre"),
    ],
)
def test_a_model_or_genre_not_served_is_404(client, body, field):
    body = assert_error(client.post("/api/v1/chat", json=body), 404, field)
    assert body["error"] == "not_found"


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'"hello"', b"", b'{"message": NaN}', '{"message": "\udcff"}'],
)
def test_malformed_bodies_are_4xx(client, content):
    response = client.post(
        "/api/v1/chat",
        content=content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content,
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500 and response.json()["error"] == "invalid_request"


def test_not_a_number_is_refused(client):
    body = b'{"message": "hi", "decoding": {"strategy": "sample", "temperature": NaN}}'
    response = client.post(
        "/api/v1/chat", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "decoding.temperature")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"turn": 1, "rating": "up"}, "conversation_id"),
        ({"conversation_id": "abc", "turn": 0, "rating": "up"}, "turn"),
        ({"conversation_id": "abc", "turn": "1", "rating": "up"}, "turn"),
        ({"conversation_id": "abc", "turn": 1, "rating": "meh"}, "rating"),
        ({"conversation_id": "abc", "turn": 1, "rating": "up", "comment": "x" * 2001}, "comment"),
    ],
)
def test_bad_feedback_names_the_field(client, body, field):
    assert_error(client.post("/api/v1/feedback", json=body), 422, field)


def test_feedback_on_an_unknown_conversation_or_turn_is_404(client):
    unknown = {"conversation_id": "never-seen", "turn": 1, "rating": "up"}
    assert_error(client.post("/api/v1/feedback", json=unknown), 404, "conversation_id")
    reply = client.post("/api/v1/chat", json={"message": "Hi."}).json()
    later = {"conversation_id": reply["conversation_id"], "turn": 2, "rating": "up"}
    assert_error(client.post("/api/v1/feedback", json=later), 404, "turn")


def test_legacy_chat_refuses_bad_text(client):
    assert_error(client.post("/chat", json={"text": " "}), 422, "text")
    assert_error(client.post("/chat", json={"text": "x" * 501}), 422, "text")
    assert_error(client.post("/chat", json={"genre": "comedy"}), 422, "text")


def test_unknown_paths_and_methods_are_json_4xx(client):
    assert client.get("/api/v1/nothing").json()["error"] == "not_found"
    response = client.get("/api/v1/chat")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


class BrokenModel(ServedModel):
    async def reply(self, message, history, config):  # noqa: ANN001, ANN201
        raise RuntimeError("secret internals")


def test_a_failing_model_is_a_json_500_without_internals(settings, tiny_runs):
    app = create_app(settings)
    bot = Chatbot.load(tiny_runs["comedy"], device="cpu")
    idle = MicroBatcher(bot.reply_batch, name="comedy", wait_ms=0, max_batch=1, max_queue=1)
    app.dependency_overrides[get_models] = lambda: ModelRegistry(
        [BrokenModel("comedy", bot, idle, None)]
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/api/v1/chat", json={"message": "Hi."})
        metrics = client.get("/metrics").text
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert value(metrics, "rlchat_http_errors_total", route="/api/v1/chat", kind="server") == 1


def test_not_ready_is_503(client):
    def not_ready():
        raise NotReady("models are still loading")

    client.app.dependency_overrides[get_models] = not_ready
    for response in (client.get("/readyz"), client.post("/api/v1/chat", json={"message": "Hi"})):
        assert response.status_code == 503 and response.json()["error"] == "not_ready"
        assert response.headers["retry-after"] == "1"
    assert client.get("/healthz").status_code == 200
