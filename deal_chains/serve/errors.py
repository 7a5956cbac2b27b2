"""OpenAI-style errors: every refused request gets ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx status, and the library's own errors map onto that.

>>> api_error(InputError("no messages to answer")).status
400
"""

from __future__ import annotations

from typing import Any

from deal_chains.errors import (
    ConfigError,
    ConstraintError,
    DealChainsError,
    InputError,
    PromptTooLongError,
    SpecError,
)


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and the OpenAI error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def api_error(exc: BaseException, param: str | None = None) -> ApiError:
    """The ``ApiError`` for an exception raised while reading or preparing a request: the
    library's errors (bad spec, search setting, schema, prompt too long) are the client's,
    400 with their own message; anything else is the server's (500, no traceback)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SpecError):
        field = next((e.get("field") for e in exc.errors if e.get("field")), None)
        where = param or "deal.spec"
        return ApiError(400, f"{where}: {exc}", param=f"{where}.{field}" if field else where, code="invalid_spec")
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, str(exc), param=param or "messages", code="context_length_exceeded")
    if isinstance(exc, ConstraintError):
        return ApiError(400, str(exc), param=param, code="invalid_schema")
    if isinstance(exc, (ConfigError, InputError, DealChainsError)):
        return ApiError(400, str(exc), param=param, code="invalid_value")
    return ApiError(500, f"internal server error ({type(exc).__name__}); the server log has the details",
                    type="server_error", code="internal_error")
