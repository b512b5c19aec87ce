"""The gateway's own answers, in each provider's error shape, so an SDK raises its usual error.

Statuses: a bad key gets 401; a budget refusal 403, which no SDK retries (openai and
anthropic retry 408, 409, 429 and 5xx; google-genai 408, 429, 500, 502, 503, 504), with
``x-should-retry: false`` too, which the openai and anthropic SDKs obey.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["error_body", "error_headers"]

_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("insufficient_quota", "budget_exceeded"),
    404: ("invalid_request_error", "not_found"),
    413: ("invalid_request_error", "request_too_large"),
    502: ("api_error", "upstream_unreachable"),
    503: ("api_error", "store_unavailable"),
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 502: "api_error", 503: "overloaded_error",
}  # fmt: skip
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    413: "INVALID_ARGUMENT", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
}  # fmt: skip


def error_body(dialect: str, status: int, message: str, code: str | None = None) -> bytes:
    """The JSON body ``dialect``'s provider would send for this ``status`` and ``message``."""
    body: dict[str, Any]
    if dialect == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif dialect == "gemini":
        body = {
            "error": {"code": status, "message": message,
                      "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}
        }  # fmt: skip
    else:
        kind, default_code = _OPENAI_TYPES.get(status, ("api_error", None))
        body = {
            "error": {"message": message, "type": kind, "param": None,
                      "code": code or default_code}
        }  # fmt: skip
    return json.dumps(body).encode()


def error_headers(status: int) -> dict[str, str]:
    """Headers of an error the gateway answers itself: a refusal is not to be retried."""
    headers = {"content-type": "application/json"}
    if status in (401, 403, 413):
        headers["x-should-retry"] = "false"
    return headers
