"""Every failure becomes a JSON ``ErrorResponse``: 4xx naming the field, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rlchat.server.batching import Overloaded
from rlchat.server.deps import NotReady
from rlchat.server.registry import UnknownChoice
from rlchat.server.schemas import ErrorResponse, FieldError
from rlchat.server.storage import DatabaseUnavailable

logger = logging.getLogger(__name__)

HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
# Documented on every API route, so the OpenAPI schema tells clients what errors look like.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "The body is not readable (not UTF-8 JSON, say)"),
        (404, "Unknown model, genre, conversation or turn; `fields` names which"),
        (422, "Invalid request; `fields` names what is wrong"),
        (500, "Internal error (details are in the server log only)"),
        (503, "Overloaded or not ready; retry later"),
    ]
}


class ApiError(Exception):
    """A failure the client caused or can act on."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


def error_response(
    status: int, code: str, message: str, fields: Sequence[FieldError] = ()
) -> JSONResponse:
    body = ErrorResponse(error=code, message=message, fields=list(fields))
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def field_name(location: Sequence[int | str]) -> str:
    """("body", "decoding", "top_p") -> "decoding.top_p"; the whole body is "body"."""
    parts = [str(part) for part in location]
    if parts[:1] == ["body"]:
        parts = parts[1:]
    return ".".join(parts) or "body"


async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    fields = [
        FieldError(field=field_name(e.get("loc", ())), message=_clean(e.get("msg", "invalid")))
        for e in error.errors()
    ]
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields)
    return error_response(422, "invalid_request", summary, fields)


async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
    fields = [FieldError(field=error.field, message=str(error))] if error.field else []
    return error_response(error.status, error.code, str(error), fields)


async def on_unknown_choice(request: Request, error: UnknownChoice) -> JSONResponse:
    # Not found rather than invalid: the request is well formed, the model just is not served.
    field = FieldError(field=error.field, message=str(error))
    return error_response(404, "not_found", str(error), [field])


async def on_unavailable(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, DatabaseUnavailable):
        # The cause (host, driver message) goes to the log; the client learns what to do.
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, error.__cause__
        )
        return error_response(503, "database_unavailable", str(error))
    code = "overloaded" if isinstance(error, Overloaded) else "not_ready"
    return error_response(503, code, str(error))


async def on_http_error(request: Request, error: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(error.status_code, "http_error")
    # FastAPI raises 400 only when it cannot parse the body at all.
    fields = (
        [FieldError(field="body", message=str(error.detail))] if error.status_code == 400 else []
    )
    response = error_response(error.status_code, code, str(error.detail), fields)
    response.headers.update(error.headers or {})
    return response


async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
    # The traceback goes to the log (uvicorn prints it as the error propagates), never out.
    logger.error("unexpected %s on %s %s", type(error).__name__, request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(UnknownChoice, on_unknown_choice)
    app.add_exception_handler(Overloaded, on_unavailable)
    app.add_exception_handler(NotReady, on_unavailable)
    app.add_exception_handler(DatabaseUnavailable, on_unavailable)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def _clean(message: str) -> str:
    """Pydantic's "Value error, must not be empty" -> "must not be empty"."""
    return message.removeprefix("Value error, ")
