"""ASGI middleware of the server, one idea each: request metrics, the API key, the body size limit.

Stacked outermost first in that order, so refused requests (401, 413) are counted too, and a
request without the key is refused before its body is read.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable

ASGIApp = Callable  # (scope, receive, send) -> awaitable


async def send_error(send, status: int, detail: str, headers: tuple = ()) -> None:
    """A JSON error response ``{"detail": ...}``."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", ()) if k.lower() == name), None)


DISCONNECTED = 499  # the status label of a request whose client left before any response (nginx's code)


class RequestMetrics:
    """Counts every HTTP request by route and status and times it (``ServeMetrics.observe_request``).

    ``routes``: the app's paths; any other path is counted as ``other`` (bounded label values).
    """

    def __init__(self, app: ASGIApp, observe: Callable[[str, int, float], None], routes: set[str]) -> None:
        self.app, self.observe, self.routes = app, observe, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status, start = None, time.perf_counter()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, send_status)
            failed = False
        finally:
            path = scope.get("path", "")
            # no response and no error: the client left before one started (an aborted upload), not a 5xx
            code = status if status is not None else (500 if failed else DISCONNECTED)
            self.observe(path if path in self.routes else "other", code, time.perf_counter() - start)


class ApiKeyAuth:
    """Every path but ``open_paths`` needs ``Authorization: Bearer <key>`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, key: str, open_paths: tuple[str, ...] = ("/healthz",)) -> None:
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            return await self.app(scope, receive, send)
        scheme, _, token = (_header(scope, b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            return await send_error(send, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                    ((b"www-authenticate", b"Bearer"),))
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses (413) a request body over ``max_bytes``, by its Content-Length or as it arrives, and (408)
    one that has not arrived whole within ``read_timeout_s`` (a client that trickles its body would
    otherwise hold a connection for as long as it likes).

    The body is read here, at most ``max_bytes``, and handed on whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float | None = None) -> None:
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s

    def _too_large(self) -> str:
        return f"request body too large: the limit is {self.max_bytes} bytes (--max-body-bytes)"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await send_error(send, 400, f"invalid Content-Length {declared.decode('latin-1')!r}")
            if int(declared) > self.max_bytes:
                return await send_error(send, 413, self._too_large(), ((b"connection", b"close"),))
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = None if self.read_timeout_s is None else loop.time() + self.read_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), None if deadline is None else max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:  # noqa: UP041 (Python 3.10's is not the builtin)
                return await send_error(send, 408, f"request body not received within {self.read_timeout_s} s "
                                        "(--timeout-s)", ((b"connection", b"close"),))
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await send_error(send, 413, self._too_large(), ((b"connection", b"close"),))
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
