"""The errors the local server answers with, in OpenAI's or Anthropic's body shape.

OpenAI: ``{"error": {"message", "type", "param", "code"}}``. Anthropic:
``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the statuses its docs list
(400 invalid_request_error, 401 authentication_error, 403 permission_error, 404 not_found_error,
413 request_too_large, 429 rate_limit_error, 500 api_error, 529 overloaded_error).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any


class APIError(Exception):
    """An error the server answers with, in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body: dict[str, Any] = {
            "error": {"message": message, "type": type_, "param": param, "code": code}
        }
        self.headers = dict(headers or {})


def rate_limited() -> APIError:
    return APIError(
        429,
        "Rate limit reached for requests. Please try again in 1s.",
        type_="requests",
        code="rate_limit_exceeded",
        headers={"retry-after": "1", "x-ratelimit-remaining-requests": "0"},
    )


def server_error() -> APIError:
    return APIError(
        500, "The server had an error while processing your request.", type_="server_error"
    )


def openai_error(status: int) -> APIError:
    """The error OpenAI answers with for ``status`` (429 and 500 as OpenAI words them)."""
    if status == 429:
        return rate_limited()
    if status >= 500:
        return server_error() if status == 500 else APIError(status, f"Injected error {status}",
                                                             type_="server_error")  # fmt: skip
    return APIError(status, f"Injected error {status}")


ANTHROPIC_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_ANTHROPIC_MESSAGES: Mapping[int, str] = {
    429: "Number of request tokens has exceeded your per-minute rate limit.",
    500: "Internal server error",
    529: "Overloaded",
}


def anthropic_error(status: int, message: str | None = None) -> APIError:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = ANTHROPIC_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    text = message or _ANTHROPIC_MESSAGES.get(status, f"Injected error {status}")
    headers = (
        {"retry-after": "1", "anthropic-ratelimit-requests-remaining": "0"} if status == 429 else {}
    )
    error = APIError(status, text, type_=kind, headers=headers)
    error.body = {
        "type": "error",
        "error": {"type": kind, "message": text},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }
    return error


def as_anthropic(error: APIError) -> APIError:
    """The same failure, worded in Anthropic's shape (for errors raised by shared code)."""
    if "type" in error.body:
        return error
    converted = anthropic_error(error.status, error.message)
    converted.headers = {**error.headers, **converted.headers}
    return converted
