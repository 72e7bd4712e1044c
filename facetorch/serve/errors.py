"""Every error of the service as one JSON line, ``{"error": "..."}``, with its HTTP status.

Bad input is an :class:`~facetorch.serve.inputs.ApiError` (400 / 413 / 415 / 422 / ...), or one of
FastAPI's own refusals (an unknown route, a missing form field), translated here to the same one
line. Anything else is a bug of the service: 500 with a line that says so, and the traceback in the
server's log (never the request's content, never a key).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from facetorch.serve.inputs import ApiError

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger("facetorch.serve")

FORM_ROUTES = ("/v1/recognize", "/v1/verify", "/v1/enroll")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` on one line."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _validation_line(request: Request, error: RequestValidationError) -> tuple[int, str]:
    """415 for a body that is not a multipart form, else 422 naming the field and what was wrong."""
    content_type = request.headers.get("content-type", "")
    if request.url.path in FORM_ROUTES and not content_type.startswith("multipart/form-data"):
        return 415, (f"{request.url.path} takes multipart/form-data (a form with the image files), got "
                     f"{content_type.split(';')[0] or 'no Content-Type'}")  # fmt: skip
    first: dict[str, Any] = error.errors()[0] if error.errors() else {}
    where, *path = [str(part) for part in first.get("loc", ())] or ["request"]
    field = ".".join(path) or where
    kind = {"body": "form field", "query": "query parameter", "path": "path parameter", "header": "header"}.get(where, where)
    if first.get("type") == "missing":
        return 422, f"missing {kind} {field!r}"
    return 422, f"{kind} {field!r}: {first.get('msg', 'invalid')}"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every refusal with one JSON line (and a bug with a 500 line, its traceback logged)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, getattr(error, "headers", None))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404 and message == "Not Found":
            message = f"no such route: {request.method} {request.url.path} (the API is described at /docs)"
        elif error.status_code == 405:
            message = f"{request.url.path} does not take {request.method} (the API is described at /docs)"
        return error_response(error.status_code, message, getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(*_validation_line(request, error))

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, f"internal error ({type(error).__name__}); the server's log has the details")
