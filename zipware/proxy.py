"""The proxy: zip downloads for backends that are not Python.

``zipware proxy --upstream http://127.0.0.1:3000`` sits in front of any backend. It
forwards every request and streams every response through untouched, except manifest
responses (zipware's, or nginx mod_zip's file lists), which become archives exactly as the
middlewares make them: the proxy *is* :class:`zipware.asgi.ZipMiddleware` around a small
forwarding ASGI app, so the headers, Range, HEAD and failure behaviour are the same.

Deploy it with the CLI, or import :func:`create_app` and serve it with any ASGI server.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx

from .asgi import ASGIApp, Receive, Scope, Send, ZipMiddleware
from .policy import Policy

__all__ = ["Forwarder", "app_from_environment", "create_app"]

logger = logging.getLogger("zipware.proxy")

# RFC 9110 7.6.1: connection-specific headers are not forwarded, in either direction
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

ENV_CONFIG = "ZIPWARE_PROXY_CONFIG"
_CLIENT_DEFAULTS = frozenset({"accept", "accept-encoding", "user-agent"})


def _hop_by_hop(headers: list[tuple[str, str]]) -> frozenset[str]:
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return _HOP_BY_HOP | named


class Forwarder:
    """An ASGI app that forwards each request to ``upstream`` and streams the answer back.

    Request and response bodies stream both ways; hop-by-hop headers are dropped;
    ``X-Forwarded-For``, ``-Proto`` and ``-Host`` are added. The upstream's bytes are passed
    on as they are (no decompression). Redirects and errors of the upstream pass through.
    An upstream that cannot be reached gives 502, one that is too slow 504; one that breaks
    off mid-response breaks off the client's response too.
    """

    def __init__(
        self,
        upstream: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_connections: int = 100,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections),
            follow_redirects=False,
        )
        # one client serves every user: it must never keep one user's cookies (httpx copies
        # a jar given to the constructor into a default one, so the policy is set here)
        self.client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    async def aclose(self) -> None:
        """Close the connection pool (when the forwarder made it)."""
        if self._own_client:
            await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not proxied
            return
        await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _request_headers(self, scope: Scope) -> list[tuple[str, str]]:
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        drop = _hop_by_hop(raw) | {"host", "content-length"}
        headers = [(k, v) for k, v in raw if k.lower() not in drop]
        host = next((v for k, v in raw if k.lower() == "host"), "")
        client = scope.get("client")
        forwarded_for = next((v for k, v in raw if k.lower() == "x-forwarded-for"), "")
        if client:
            forwarded_for = f"{forwarded_for}, {client[0]}" if forwarded_for else client[0]
        headers = [
            (k, v)
            for k, v in headers
            if k.lower() not in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
        ]
        if forwarded_for:
            headers.append(("X-Forwarded-For", forwarded_for))
        headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
        if host:
            headers.append(("X-Forwarded-Host", host))
        return headers

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("raw_path") or scope["path"].encode()
        url = self.upstream + path.decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        has_body = any(
            k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"]
        )

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        headers = self._request_headers(scope)
        request = self.client.build_request(
            scope["method"], url, headers=headers, content=body() if has_body else None
        )
        # httpx adds Accept, Accept-Encoding and User-Agent of its own; the upstream must
        # see the client's request, not httpx's (a gzip body the client never asked for...)
        sent = {k.lower() for k, _ in headers}
        for name in _CLIENT_DEFAULTS - sent:
            if name in request.headers:
                del request.headers[name]
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            await _plain(send, 504, "zipware proxy: the upstream did not answer in time\n")
            return
        except httpx.HTTPError as exc:
            logger.error("zipware proxy: upstream %s: %s", self.upstream, exc)
            await _plain(send, 502, "zipware proxy: the upstream cannot be reached\n")
            return
        try:
            raw = list(response.headers.raw)
            decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
            drop = _hop_by_hop(decoded)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.lower(), v) for k, v in raw if k.decode("latin-1").lower() not in drop
                    ],
                }
            )
            # raw bytes: a compressed body stays compressed, its Content-Length stays true
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    upstream: str,
    *,
    roots: list[str] | tuple[str, ...] = (),
    allow_urls: list[str] | tuple[str, ...] = (),
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    modzip_root: str | None = None,
    strip_conditionals: bool = False,
    policy_options: dict[str, Any] | None = None,
) -> ASGIApp:
    """The proxy as an ASGI app: a :class:`Forwarder` inside :class:`ZipMiddleware`.

    The upstream itself is always in the URL allow-list, so manifests may name files the
    backend serves (mod_zip's locations are fetched from it, unless ``modzip_root`` maps
    them onto a local directory). Conditionals reach the upstream, so its own static files
    keep Range; a manifest answer to them is asked for again without them
    (``strip_conditionals`` removes them always: for upstreams that serve manifests as static
    files, whose 416 or 304 would not say it is a manifest). A HEAD reaches the upstream as a
    HEAD, and is asked again as a GET only when the answer is a manifest. Errors found before
    the archive starts are a 502: the upstream sent something unusable.
    """
    upstream = upstream.rstrip("/")
    policy = Policy(
        roots=tuple(roots) + ((modzip_root,) if modzip_root else ()),
        allow_urls=(upstream + "/", *allow_urls),
        url_timeout=read_timeout,
        **(policy_options or {}),
    )
    forwarder = Forwarder(upstream, connect_timeout=connect_timeout, read_timeout=read_timeout)
    return ZipMiddleware(
        forwarder,
        policy,
        forward_conditionals=not strip_conditionals,
        head_as_get=False,
        modzip_base=None if modzip_root else upstream,
        modzip_root=modzip_root,
        error_status=502,
    )


def app_from_environment() -> ASGIApp:
    """Build the proxy from ``ZIPWARE_PROXY_CONFIG`` (JSON of :func:`create_app`'s arguments).

    For ASGI servers started with several worker processes, which import the app by name
    (``uvicorn --factory zipware.proxy:app_from_environment``).
    """
    config = json.loads(os.environ[ENV_CONFIG])
    if not logging.getLogger().handlers:
        # a worker process of the server: zipware's log lines go to stderr beside uvicorn's
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per member is noise
    return create_app(**config)
