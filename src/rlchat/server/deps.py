"""What routes need, as dependencies: tests override these instead of loading real models."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rlchat.server.metrics import Metrics
from rlchat.server.registry import ModelRegistry
from rlchat.server.storage import ConversationStore, Database, FeedbackStore


class NotReady(RuntimeError):
    """The app was asked for something its start-up has not made (or its shutdown removed)."""


def _state(request: Request, name: str):  # noqa: ANN202
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReady(f"the server is not ready ({name} not loaded)")
    return value


def get_metrics(request: Request) -> Metrics:
    return _state(request, "metrics")


def get_models(request: Request) -> ModelRegistry:
    return _state(request, "models")


def get_conversations(request: Request) -> ConversationStore:
    return _state(request, "conversations")


def get_feedback(request: Request) -> FeedbackStore:
    return _state(request, "feedback")


def get_database(request: Request) -> Database:
    return _state(request, "database")


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]
ConversationsDep = Annotated[ConversationStore, Depends(get_conversations)]
FeedbackDep = Annotated[FeedbackStore, Depends(get_feedback)]
DatabaseDep = Annotated[Database, Depends(get_database)]
