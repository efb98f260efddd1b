"""The original project's `/chat`: `{text, genre}` -> `{reply, time}`, exactly."""

from __future__ import annotations

import re

from rlchat.chatbot import Chatbot

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_text_and_genre_give_exactly_reply_and_time(client):
    response = client.post("/chat", json={"text": "How are you?", "genre": "comedy"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"reply", "time"}
    assert isinstance(body["reply"], str) and TIME.fullmatch(body["time"])


def test_its_front_end_sends_text_alone(client):
    assert set(client.post("/chat", json={"text": "Hello!"}).json()) == {"reply", "time"}


def test_the_genre_picks_the_model_trained_on_it_else_the_default(client, tiny_runs):
    drama = Chatbot.load(tiny_runs["drama"], device="cpu")
    comedy = Chatbot.load(tiny_runs["comedy"], device="cpu")
    message = "Where were you?"
    assert client.post("/chat", json={"text": message, "genre": "drama"}).json()["reply"] == (
        drama.reply(message)
    )
    for genre in ("western", None):
        reply = client.post("/chat", json={"text": message, "genre": genre}).json()["reply"]
        assert reply == comedy.reply(message)


def test_unknown_keys_are_ignored_as_the_original_server_did(client):
    response = client.post("/chat", json={"text": "Hi.", "user": "me"})
    assert response.status_code == 200


def test_schema_documents_the_contract(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    operation = schema["paths"]["/chat"]["post"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    response_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    request = components[request_ref.rsplit("/", 1)[-1]]
    response = components[response_ref.rsplit("/", 1)[-1]]
    assert set(request["properties"]) == {"text", "genre"} and request["required"] == ["text"]
    assert set(response["properties"]) == {"reply", "time"}
    assert sorted(response["required"]) == ["reply", "time"]
