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
from .http import CONDITIONAL_REQUEST_HEADERS, Core, Reply, Settings, conditionals_in, decide
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
# loose on purpose: Django's handler takes a dict, Starlette's a MutableMapping
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_STRIPPED = frozenset(h.encode() for h in CONDITIONAL_REQUEST_HEADERS)

BUFFERED_CHUNKS = 4  # read-ahead between the sources and the socket, in chunks (>= 64 KiB)
LOOKAHEAD = 1  # members whose sources are opened while the one before them streams


class ZipMiddleware(Settings):
    """Turn the wrapped app's manifest responses into streamed ZIP downloads.

    Takes the options of :class:`zipware.http.Core` (as :class:`zipware.wsgi.ZipMiddleware`
    does). Sources are read with their async methods (httpx's async client for URLs; local
    files in worker threads), behind a bounded buffer, and the next member's source is
    opened while the current one streams: a slow client never makes zipware read ahead
    without limit, and a slow disk never blocks the event loop.
    """

    def __init__(self, app: ASGIApp, /, policy: Policy | None = None, **options: Any) -> None:
        self.app = app
        self.core = Core(policy, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        core = self.core
        method = scope["method"].upper()
        strip = core.strips(method)
        sent = not strip and conditionals_in(
            k.decode("latin-1").lower() for k, _ in scope["headers"]
        )

        def responder(*, strip: bool, sent: bool, as_get: bool) -> _Responder:
            return _Responder(
                self.app, core, scope, receive, send, strip=strip, sent=sent, as_get=as_get
            )

        current = responder(strip=strip, sent=sent, as_get=not core.is_probe(method))
        await current.call_app()
        if current.probe_hit:  # a HEAD answered with a manifest: its body is needed
            current = responder(strip=strip, sent=sent, as_get=True)
            await current.call_app()
        if current.retry:  # the app applied the client's conditionals to a manifest
            current = responder(strip=True, sent=False, as_get=True)
            await current.call_app()
        if current.kind is not None:
            await current.answer()


class _Responder:
    """One call of the application: what it answered, and the archive reply."""

    def __init__(
        self,
        app: ASGIApp,
        core: Core,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        strip: bool,
        sent: bool,
        as_get: bool,
    ) -> None:
        self.app = app
        self.core = core
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method = scope["method"].upper()
        self.strip = strip  # conditionals removed before the call
        self.sent = sent  # conditionals reached the app in this call
        self.as_get = as_get and self.method == "HEAD"
        self.probe = self.method == "HEAD" and not as_get
        self.probe_hit = False
        self.kind: str | None = None  # "zipware" / "modzip" once the start says so
        self.retry = False
        self.app_headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False

    @property
    def label(self) -> str:
        return f"{self.method} {self.scope.get('path', '')}"

    @property
    def held(self) -> bool:
        """Whether the app's answer is kept from the client (a manifest, or to be redone)."""
        return self.kind is not None or self.retry or self.probe_hit

    async def call_app(self) -> None:
        inner = dict(self.scope)
        if self.strip:
            inner["headers"] = [
                (k, v) for k, v in self.scope["headers"] if k.lower() not in _STRIPPED
            ]
        if self.as_get:
            # Frameworks may leave a HEAD body empty; the manifest is needed to answer it.
            inner["method"] = "GET"
        await self.app(inner, self.receive, self.intercept)

    async def intercept(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
            if self.probe:
                self.probe_hit = self.core.wants_body(status, headers)
            else:
                self.kind = self.core.kind(status, headers)
                self.retry = self.core.must_retry(status, headers, sent=self.sent)
            if self.held:
                self.app_headers = headers
                return
            await self.send(message)
            return
        if self.held:
            if kind == "http.response.body":
                chunk = message.get("body", b"")
                self.size += len(chunk)
                if chunk and self.kind and self.size <= self.core.policy.max_manifest_bytes:
                    self.body.append(chunk)
                if not message.get("more_body", False):
                    self.complete = True
            return
        if self.as_get and kind in ("http.response.body", "http.response.pathsend"):
            if not message.get("more_body", False):
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await self.send(message)

    async def prepare(self) -> tuple[Reply, Download | None]:
        core = self.core
        policy = core.policy
        assert self.kind is not None
        if self.size > policy.max_manifest_bytes:
            logger.error(
                "zipware: %s: manifest over %d bytes", self.label, policy.max_manifest_bytes
            )
            return core.error("the manifest is too large"), None
        if not self.complete:
            logger.error("zipware: %s: the application ended the manifest early", self.label)
            return core.error("the manifest is incomplete"), None
        try:
            manifest = core.load(self.kind, b"".join(self.body), self.app_headers)
            download = await aprepare(manifest, policy, async_client=core.async_client(manifest))
        except ManifestError as exc:
            logger.error("zipware: %s: invalid manifest:\n%s", self.label, exc)
            count = len(exc.problems)
            return core.error(f"invalid manifest ({count} problem(s); see the server log)"), None
        if core.crc_cache is not None:
            core.crc_cache.fill(download)
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

    def start_message(self, reply: Reply) -> Message:
        return {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers
            ],
        }

    async def answer(self) -> None:
        reply, download = await self.prepare()
        if reply.span is None or download is None:
            await self.send(self.start_message(reply))
            body = reply.body if self.method != "HEAD" else b""
            await self.send({"type": "http.response.body", "body": body})
            return
        cache = self.core.crc_cache
        if await self.stream(download, reply) and reply.complete and cache is not None:
            cache.learn(download)

    async def stream(self, download: Download, reply: Reply) -> bool:
        """Send the archive; True when all of it was sent, False if the client left.

        The status line waits for the first chunk, which opens the first source: a
        missing first file still gets an error status. A source failing later is logged
        and raised: the server then drops the connection without the final empty body, so
        the client sees an incomplete transfer, never an archive that looks complete.
        """
        assert reply.span is not None
        start, end = reply.span
        sender, chunks = anyio.create_memory_object_stream[bytes](BUFFERED_CHUNKS)
        disconnected = False
        started = False

        async def produce() -> None:
            async with sender:
                # read-ahead of the next member hides a network round trip; for local files
                # it would only cost memory (a chunk buffer per download)
                lookahead = LOOKAHEAD if download.remote else 0
                await download.archive.astream(sender.send, start, end, lookahead=lookahead)

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
                        if not started:
                            await self.send(self.start_message(reply))
                            started = True
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
                error = source_errors.exceptions[0]
                logger.error("zipware: %s: archive aborted: %s", self.label, error)
                if not started:
                    failed = self.core.error("a source of the archive failed (see the server log)")
                    await self.send(self.start_message(failed))
                    await self.send({"type": "http.response.body", "body": failed.body})
                    return False
                raise error from None
            if group.subgroup(OSError) is not None:
                logger.info("zipware: %s: client went away", self.label)
                return False
            raise
        if disconnected:
            logger.info("zipware: %s: client went away", self.label)
            return False
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
