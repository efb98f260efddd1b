"""The HTTP endpoints: the chat API, the original project's `/chat`, operations and the page."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse

from rlchat.config import DecodeConfig
from rlchat.rerank import NoBackwardModel, check_rerank
from rlchat.server.deps import (
    ConversationsDep,
    DatabaseDep,
    FeedbackDep,
    MetricsDep,
    ModelsDep,
    NotReady,
)
from rlchat.server.errors import ERROR_RESPONSES, ApiError
from rlchat.server.registry import ServedModel
from rlchat.server.schemas import (
    ChatRequest,
    ChatResponse,
    FeedbackRequest,
    FeedbackResponse,
    LegacyChatRequest,
    LegacyChatResponse,
    ModelInfo,
    ModelsResponse,
    Status,
)

STATIC_DIR = Path(__file__).parent / "static"
# The page loads nothing from elsewhere; the policy makes sure it never will.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

api = APIRouter(prefix="/api/v1", tags=["chat"], responses=ERROR_RESPONSES)
legacy = APIRouter(tags=["original project"], responses=ERROR_RESPONSES)
operations = APIRouter(tags=["operations"])
page = APIRouter(include_in_schema=False)


def checked_decoding(config: DecodeConfig, served: ServedModel) -> DecodeConfig:
    """An error naming the field for settings the model cannot decode with, before any work:
    MMI without a backward model is not found, as an unserved model is (the request is well
    formed, the model it needs is not served); other settings are invalid."""
    try:
        check_rerank(config, has_backward=served.bot.backward is not None)
    except NoBackwardModel as error:
        raise ApiError(
            404,
            "not_found",
            f"{error}; this server was started without --backward",
            field="decoding.rerank",
        ) from None
    except ValueError as error:
        raise ApiError(422, "invalid_request", str(error), field="decoding.rerank") from None
    return config


@api.post("/chat")
async def chat(
    body: ChatRequest, models: ModelsDep, conversations: ConversationsDep
) -> ChatResponse:
    """Reply to a message; models trained with context see the conversation's last turns."""
    started = time.perf_counter()
    served = models.pick(model=body.model, genre=body.genre)
    conversation_id = body.conversation_id or uuid.uuid4().hex
    history: list[str] = []
    if served.context_turns:
        recent = await run_in_threadpool(conversations.recent, conversation_id)
        history = [text for turn in recent for text in (turn.message, turn.reply)]
    config = checked_decoding(body.decoding.to_config(models.decoding), served)
    reply = await served.reply(body.message, history, config)
    turn = await run_in_threadpool(
        lambda: conversations.append(
            conversation_id,
            message=body.message,
            reply=reply,
            model=served.name,
            decoding=body.decoding.model_dump(),
        )
    )
    return ChatResponse(
        reply=reply,
        conversation_id=conversation_id,
        model=served.name,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        turn=turn.turn,
    )


@api.get("/models")
def list_models(models: ModelsDep) -> ModelsResponse:
    """The served models, their genres and stage, and evaluation figures where present."""
    return ModelsResponse(
        models=[
            ModelInfo(
                name=m.name,
                genres=m.genres,
                stage=m.bot.stage,
                context_turns=m.context_turns,
                default=m is models.default,
                evaluation=m.evaluation,
            )
            for m in models.models.values()
        ],
        genres=models.genres,
        default=models.default.name,
    )


@api.post("/feedback")
def feedback(
    body: FeedbackRequest, conversations: ConversationsDep, store: FeedbackDep
) -> FeedbackResponse:
    """Rate a reply; stored with the message and reply it rates. Rating again replaces."""
    turn = conversations.get(body.conversation_id, body.turn)
    if turn is None:
        if not conversations.recent(body.conversation_id):
            raise ApiError(404, "not_found", "unknown conversation", field="conversation_id")
        raise ApiError(404, "not_found", f"no turn {body.turn} in this conversation", field="turn")
    store.rate(turn, rating=body.rating, comment=body.comment)
    return FeedbackResponse(
        conversation_id=turn.conversation_id, turn=turn.turn, rating=body.rating
    )


@legacy.post("/chat")
async def legacy_chat(body: LegacyChatRequest, models: ModelsDep) -> LegacyChatResponse:
    """The original project's contract: `{text, genre?}` -> `{reply, time}`.

    The genre picks the model trained on it, else the default model; no conversation is kept.
    """
    served = (body.genre and models.for_genre(body.genre)) or models.default
    reply = await served.reply(body.text, [], models.decoding)
    return LegacyChatResponse(reply=reply, time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


@operations.get("/healthz")
def healthz() -> Status:
    """The process answers (liveness)."""
    return Status(status="ok")


@operations.get("/readyz", responses={503: ERROR_RESPONSES[503]})
def readyz(models: ModelsDep, database: DatabaseDep) -> Status:
    """Every model is loaded, its batcher running, and the database answers (readiness)."""
    if not models.ready:
        raise NotReady("a model's batcher is not running")
    database.check()
    return Status(status="ready", models=list(models.models))


@operations.get("/metrics", response_class=PlainTextResponse)
def metrics(registry: MetricsDep) -> PlainTextResponse:
    """Prometheus text format: requests, errors, latency and batch-size histograms."""
    return PlainTextResponse(registry.render(), media_type=registry.content_type)


@page.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)
