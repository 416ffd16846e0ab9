"""How the Logikura sandbox refuses a request: an HTTP status with a JSON body."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


class ApiError(Exception):
    """A refusal with its HTTP status and JSON body (``{"error": "…"}`` unless the SPEC says
    otherwise)."""

    def __init__(self, status: int, body: Json) -> None:
        super().__init__(str(body.get("error") or body))
        self.status = status
        self.body = body


def fail(status: int, message: str) -> ApiError:
    """A refusal with the usual ``{"error": message}`` body."""
    return ApiError(status, {"error": message})
