"""The request body limit (``--max_upload_mb``): an oversized upload gets 413 before it is read whole.

A request that declares a ``Content-Length`` over the limit is answered at once, without reading
any of its body; one that streams without a length (chunked) is counted as it arrives and refused
the moment it passes the limit. Either way the answer is the service's one-line JSON error.
"""

from __future__ import annotations

from typing import Any, Optional

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facetorch.serve.errors import error_response

__all__ = ["BodyLimit"]


class _TooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413.

    Args:
        app: The application.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: str) -> str:
        return (f"the request body is {size}, over the limit of {self.max_bytes / 2**20:.3g} MB (--max_upload_mb): "
                "send a smaller picture")  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await error_response(413, self._message(f"{declared:,} bytes"))(scope, receive, send)
            return
        received, refused, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # the app's own answer to the broken body (a 400 of the form parser): ours replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if refused and not started:
            await error_response(413, self._message(f"more than {self.max_bytes:,} bytes"))(scope, receive, send)


def _content_length(scope: Scope) -> Optional[int]:
    headers: Any = scope.get("headers") or []
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
