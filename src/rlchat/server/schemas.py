"""Request and response bodies of the API; requests are strict, so a wrong type is a 4xx."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from rlchat.config import DecodeConfig

MAX_MESSAGE_CHARS = 500
DEFAULTS = DecodeConfig()


# Whitespace spelled out, so that this pattern means the same to Python, to the JSON Schema
# validators of other languages and to the fuzzers that read the schema: Unicode's and
# Python's spaces together.
WHITESPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = f"[^{WHITESPACE}]"


def _not_blank(text: str) -> str:
    if not re.search(NOT_BLANK, text):
        raise ValueError("must not be empty or only whitespace")
    return text


def _integral(value: object) -> object:
    # JSON Schema counts 3.0 as an integer; strict validation alone would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
Message = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_MESSAGE_CHARS,
        # For the schema only: the validator below says why in words a person can read.
        json_schema_extra={"pattern": NOT_BLANK},
        examples=["How are you?"],
    ),
    AfterValidator(_not_blank),
]
ConversationId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["3f2a9c"])]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Decoding(Request):
    """The decoding settings a client may choose; those it leaves out keep the server's
    defaults (`rlchat serve --strategy ... --rerank ...`), not the values shown here."""

    strategy: Literal["greedy", "beam", "sample"] = DEFAULTS.strategy
    beam_size: Integer = Field(default=DEFAULTS.beam_size, ge=1, le=10)
    temperature: float = Field(default=DEFAULTS.temperature, ge=0.01, le=10, allow_inf_nan=False)
    top_k: Integer = Field(default=DEFAULTS.top_k, ge=0, le=100_000)
    # A nucleus under 1% is the best token alone; smaller values underflow float32 in filtering.
    top_p: float = Field(default=DEFAULTS.top_p, ge=0.01, le=1, allow_inf_nan=False)
    max_tokens: Integer = Field(default=DEFAULTS.max_tokens, ge=1, le=64)
    rerank: Literal["none", "mmi"] = Field(
        default=DEFAULTS.rerank, description="mmi: the best of several candidates (see docs)"
    )
    candidates: Integer = Field(default=DEFAULTS.candidates, ge=1, le=32)
    mmi_weight: float = Field(default=DEFAULTS.mmi_weight, ge=0, le=10, allow_inf_nan=False)
    mmi_length: float = Field(default=DEFAULTS.mmi_length, ge=-5, le=5, allow_inf_nan=False)
    mmi_form: Literal["mean", "sum"] = DEFAULTS.mmi_form

    def to_config(self, defaults: DecodeConfig = DEFAULTS) -> DecodeConfig:
        """The server's defaults with what the request set (fields left out keep them)."""
        return replace(defaults, **self.model_dump(exclude_unset=True))


class ChatRequest(Request):
    message: Message
    conversation_id: ConversationId | None = Field(
        default=None, description="continue this conversation; omitted: a new one is started"
    )
    model: Name | None = Field(default=None, description="a model name from /api/v1/models")
    genre: Name | None = Field(
        default=None, description="pick the model trained on this genre (when model is omitted)"
    )
    decoding: Decoding = Field(default_factory=Decoding)


class ChatResponse(BaseModel):
    reply: str
    conversation_id: str
    model: str
    latency_ms: float
    turn: int = Field(description="number of this exchange in the conversation, for feedback")


class LegacyChatRequest(BaseModel):
    """The original project's request; unknown keys are ignored, as its Flask server did."""

    model_config = ConfigDict(strict=True)

    text: Message
    genre: str | None = None


class LegacyChatResponse(BaseModel):
    reply: str
    time: str = Field(description="UTC time of the reply, e.g. 2020-04-21T17:03:12Z")


class ModelInfo(BaseModel):
    name: str
    genres: list[str] = Field(description="genres it was trained on; empty = all genres")
    stage: str = Field(description="ce (cross-entropy) or rl (reinforcement learning)")
    context_turns: int
    default: bool
    evaluation: dict[str, Any] | None = Field(
        description="held-out figures from an eval.json beside the run, if any"
    )


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    genres: list[str]
    default: str


class FeedbackRequest(Request):
    conversation_id: ConversationId
    turn: Integer = Field(ge=1, le=2**31)
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class FeedbackResponse(BaseModel):
    conversation_id: str
    turn: int
    rating: str


class Status(BaseModel):
    status: str
    models: list[str] = Field(default_factory=list)


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending field, e.g. decoding.top_p")
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="a short code: invalid_request, not_found, overloaded, ...")
    message: str
    fields: list[FieldError] = Field(default_factory=list)
