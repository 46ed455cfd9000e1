"""ASGI driver: wrap any ASGI app; its manifest responses become ZIP downloads.

::

    from zipware.asgi import ZipMiddleware
    app = ZipMiddleware(app, roots=["/srv/media"], allow_urls=["https://cdn.example.com/"])

A pure ASGI middleware: the instance holds settings only, a :class:`_Responder` per request
holds that request's state. The start message of the application is held back until it is
known whether the response is a manifest; everything else passes through as it comes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from .errors import SourceError
from .http import CONDITIONAL_REQUEST_HEADERS, CRCCache, Reply, decide, error_reply, is_manifest
from .manifest import ManifestError
from .policy import Policy
from .prepare import Download, aprepare

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ZipMiddleware"]

logger = logging.getLogger("zipware")

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_STRIPPED = frozenset(h.encode() for h in CONDITIONAL_REQUEST_HEADERS)

BUFFERED_CHUNKS = 4  # read-ahead between the sources and the socket, in chunks (>= 64 KiB)
LOOKAHEAD = 1  # members whose sources are opened while the one before them streams


class ZipMiddleware:
    """Turn the wrapped app's manifest responses into streamed ZIP downloads.

    Same options as :class:`zipware.wsgi.ZipMiddleware`. Sources are read with their async
    methods (httpx's async client for URLs; local files in worker threads), behind a
    bounded buffer, so a slow client never makes zipware read ahead without limit and a
    slow disk never blocks the event loop.
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: Policy | None = None,
        *,
        crc_cache: CRCCache | None = None,
        use_crc_cache: bool = True,
        **policy_options: Any,
    ) -> None:
        self.app = app
        self.policy = policy if policy is not None else Policy(**policy_options)
        self.crc_cache = (
            crc_cache if crc_cache is not None else (CRCCache() if use_crc_cache else None)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Responder(self, scope, receive, send).run()


class _Responder:
    """One request's state: what the app answered, and the archive reply."""

    def __init__(self, mw: ZipMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.mw = mw
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method = scope["method"].upper()
        self.manifest = False
        self.app_headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.complete = False

    @property
    def label(self) -> str:
        return f"{self.method} {self.scope.get('path', '')}"

    async def run(self) -> None:
        inner = dict(self.scope)
        inner["headers"] = [(k, v) for k, v in self.scope["headers"] if k.lower() not in _STRIPPED]
        if self.method == "HEAD":
            # Frameworks may leave a HEAD body empty; the manifest is needed to answer it.
            inner["method"] = "GET"
        await self.mw.app(inner, self.receive, self.intercept)
        if self.manifest:
            await self.answer()

    async def intercept(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
            if is_manifest(message["status"], headers):
                self.manifest = True
                self.app_headers = headers
                return
            await self.send(message)
            return
        if self.manifest:
            if kind == "http.response.body":
                chunk = message.get("body", b"")
                self.size += len(chunk)
                if self.size > self.mw.policy.max_manifest_bytes:
                    self.too_large = True
                    self.body = []
                elif chunk:
                    self.body.append(chunk)
                if not message.get("more_body", False):
                    self.complete = True
            return
        if self.method == "HEAD" and kind in ("http.response.body", "http.response.pathsend"):
            if not message.get("more_body", False):
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await self.send(message)

    async def prepare(self) -> tuple[Reply, Download | None]:
        policy = self.mw.policy
        if self.too_large:
            logger.error(
                "zipware: %s: manifest over %d bytes", self.label, policy.max_manifest_bytes
            )
            return error_reply("the manifest is too large"), None
        if not self.complete:
            logger.error("zipware: %s: the application ended the manifest early", self.label)
            return error_reply("the manifest is incomplete"), None
        try:
            download = await aprepare(b"".join(self.body), policy)
        except ManifestError as exc:
            logger.error("zipware: %s: invalid manifest:\n%s", self.label, exc)
            count = len(exc.problems)
            return error_reply(f"invalid manifest ({count} problem(s); see the server log)"), None
        if self.mw.crc_cache is not None:
            self.mw.crc_cache.fill(download)
        request_headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope["headers"]
        }
        reply = decide(
            download,
            method=self.method,
            request_headers=request_headers,
            app_headers=self.app_headers,
        )
        return reply, download

    async def answer(self) -> None:
        reply, download = await self.prepare()
        await self.send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers
                ],
            }
        )
        if reply.span is None or download is None:
            await self.send({"type": "http.response.body", "body": reply.body})
            return
        cache = self.mw.crc_cache
        if await self.stream(download, reply) and reply.complete and cache is not None:
            cache.learn(download)

    async def stream(self, download: Download, reply: Reply) -> bool:
        """Send the archive's bytes; True when all were sent, False if the client left.

        A source failure is logged and raised: the server then drops the connection
        without the final empty body, so the client sees an incomplete transfer.
        """
        assert reply.span is not None
        start, end = reply.span
        sender, chunks = anyio.create_memory_object_stream[bytes](BUFFERED_CHUNKS)
        disconnected = False

        async def produce() -> None:
            async with sender:
                await download.archive.astream(sender.send, start, end, lookahead=LOOKAHEAD)

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal disconnected
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    scope.cancel()
                    return

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                tg.start_soon(watch, tg.cancel_scope)
                async with chunks:
                    async for chunk in chunks:
                        await self.send(
                            {"type": "http.response.body", "body": chunk, "more_body": True}
                        )
                tg.cancel_scope.cancel()  # all sent: stop watching for a disconnect
        except OSError:
            # ASGI >= 2.4 servers raise from send() once the client is gone
            logger.info("zipware: %s: client went away", self.label)
            return False
        except BaseExceptionGroup as group:
            source_errors = group.subgroup(SourceError)
            if source_errors is not None:
                logger.error(
                    "zipware: %s: aborted after the headers: %s",
                    self.label,
                    source_errors.exceptions[0],
                )
                raise source_errors.exceptions[0] from None
            if group.subgroup(OSError) is not None:
                logger.info("zipware: %s: client went away", self.label)
                return False
            raise
        if disconnected:
            logger.info("zipware: %s: client went away", self.label)
            return False
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
