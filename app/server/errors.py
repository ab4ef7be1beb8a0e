"""OpenAI's error objects: `{"error": {"message", "type", "param", "code"}}` with the right status."""

from __future__ import annotations

from typing import Any

from app.errors import AppError, ErrorKind

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An answer other than 200, as OpenAI writes it."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        kind = _TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code, param)


def from_app_error(error: AppError) -> ApiError:
    """A model that cannot load (or an engine that died) is 503 with the app's own message; a request the
    engine refused (a model that cannot embed, a prompt too long) is 400."""
    if error.kind == ErrorKind.BAD_INPUT:
        return ApiError(400, error.user_message, "invalid_request")
    return ApiError(503, error.user_message, "model_unavailable")
