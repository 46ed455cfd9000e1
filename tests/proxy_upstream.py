"""The backend behind the proxy in tests/test_proxy.py (and bench/proxy_bench.py).

A Starlette app, served by uvicorn in its own process::

    UPSTREAM_ROOT=/tmp/x uvicorn --app-dir tests proxy_upstream:app --port 8001

It stands for a backend in any language: it knows nothing of zipware. Under
``$UPSTREAM_ROOT`` it serves

* ``html/``: static files at ``/`` (Starlette's ``StaticFiles``: Range, If-Range,
  If-None-Match and If-Modified-Since, ETag, Last-Modified), the members of the archives;
* ``manifests/NAME`` at ``/manifests/NAME``: zipware manifests, as a dynamic backend
  sends them (a 200 that ignores the request's Range and conditionals), with both triggers
  and a few headers of its own that must reach the client; ``?chunks=N`` sends the body in
  N pieces;
* ``lists/NAME`` at ``/lists/NAME``: nginx mod_zip file lists, as a dynamic backend sends
  them (``X-Archive-Files: zip``, and the ``Last-Modified`` and ``ETag`` of mod_zip's test
  configuration); ``?filename=F`` adds a Content-Disposition;
* ``lists/NAME`` at ``/static-lists/NAME`` too, as static files with nginx's ``add_header``
  semantics (the header only on 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308), as
  in mod_zip's own test configuration: these honour Range and the conditionals.

and a few endpoints that misbehave on purpose (see the routes). Every request is recorded
(method and headers, under its path and query string) and ``/_seen?key=PATH`` returns
the records, so a test can see what the proxy sent upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROOT = Path(os.environ.get("UPSTREAM_ROOT", "."))
HTML = ROOT / "html"
MANIFESTS = ROOT / "manifests"
LISTS = ROOT / "lists"

MANIFEST_TYPE = "application/vnd.zipware.manifest+json"
# the headers of mod_zip's t/nginx/conf/nginx.conf for its lists
LIST_LAST_MODIFIED = "Wed, 15 Nov 1995 04:58:08 GMT"
LIST_ETAG = '"3.14159"'
# nginx's add_header applies to these statuses only (without "always")
ADD_HEADER_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})

SEEN: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
RELEASE: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


class Recorder:
    """Remember the method and headers of every request, under ``path?query``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/_seen":
            key = scope["path"]
            if scope["query_string"]:
                key += "?" + scope["query_string"].decode("latin-1")
            SEEN[key].append(
                {
                    "method": scope["method"],
                    "headers": [
                        [k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]
                    ],
                }
            )
        await self.app(scope, receive, send)


class NginxAddHeader:
    """Static files with headers added as nginx's ``add_header`` adds them."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] in ADD_HEADER_STATUSES:
                    message["headers"] = [*message["headers"], *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _file(directory: Path, name: str) -> bytes | None:
    path = (directory / name).resolve()
    if directory.resolve() not in path.parents or not path.is_file():
        return None
    return path.read_bytes()


async def manifest(request: Request) -> Response:
    body = _file(MANIFESTS, request.path_params["name"])
    if body is None:
        return PlainTextResponse("no such manifest\n", status_code=404)
    headers = {
        "X-Zip-Manifest": "1",
        "Cache-Control": "no-cache",
        "Set-Cookie": "session=abc; Path=/",
        "X-Backend": "proxy-upstream",
    }
    chunks = int(request.query_params.get("chunks", "1"))
    if chunks <= 1:
        return Response(body, media_type=MANIFEST_TYPE, headers=headers)
    step = -(-len(body) // chunks)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), step):
            yield body[i : i + step]
            await asyncio.sleep(0)

    return StreamingResponse(pieces(), media_type=MANIFEST_TYPE, headers=headers)


async def modzip_list(request: Request) -> Response:
    body = _file(LISTS, request.path_params["name"])
    if body is None:
        return PlainTextResponse("no such list\n", status_code=404)
    headers = {
        "X-Archive-Files": "zip",
        "Last-Modified": LIST_LAST_MODIFIED,
        "ETag": LIST_ETAG,
        "Cache-Control": "max-age=0",
    }
    filename = request.query_params.get("filename")
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return Response(body, media_type="text/plain", headers=headers)


async def trigger_error(request: Request) -> Response:
    """An error response that carries the manifest trigger: not a manifest (status 404)."""
    return JSONResponse(
        {"error": "no such download"},
        status_code=int(request.query_params.get("status", "404")),
        media_type=MANIFEST_TYPE,
        headers={"X-Zip-Manifest": "1"},
    )


async def echo(request: Request) -> Response:
    body = b""
    async for chunk in request.stream():
        body += chunk
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        },
        headers={"X-Echo": "yes"},
    )


async def redirect(request: Request) -> Response:
    return Response(
        b"moved\n",
        status_code=302,
        headers={"Location": "/file1.txt", "X-Upstream": "redirect"},
        media_type="text/plain",
    )


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return PlainTextResponse(
        f"upstream says {code}\n", status_code=code, headers={"X-Upstream": str(code)}
    )


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("seconds", "3")))
    return PlainTextResponse("finally\n")


async def abort(request: Request) -> Response:
    """Promise ``size`` bytes, send half of them, then drop the connection."""
    size = int(request.query_params.get("size", "200000"))

    async def half() -> AsyncIterator[bytes]:
        yield b"x" * (size // 2)
        await asyncio.sleep(0.05)
        raise ConnectionAbortedError("proxy_upstream: breaking off on purpose")

    return StreamingResponse(
        half(), media_type="application/octet-stream", headers={"Content-Length": str(size)}
    )


async def stream(request: Request) -> Response:
    """``first``, then ``second`` once ``/_release?id=ID`` was called."""
    event = RELEASE[request.query_params["id"]]

    async def parts() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.wait_for(event.wait(), 30)
        yield b"second\n"

    return StreamingResponse(parts(), media_type="text/plain")


async def release(request: Request) -> Response:
    RELEASE[request.query_params["id"]].set()
    return PlainTextResponse("released\n")


async def hop(request: Request) -> Response:
    """A response with connection-specific headers, which a proxy must not pass on."""
    return PlainTextResponse(
        "hop\n",
        headers={
            "Connection": "X-Hop-Named",
            "X-Hop-Named": "secret",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": 'Basic realm="upstream"',
            "X-End-To-End": "kept",
        },
    )


async def small(request: Request) -> Response:
    return PlainTextResponse("hello from the upstream\n")


async def seen(request: Request) -> Response:
    return JSONResponse(SEEN.get(request.query_params["key"], []))


app = Recorder(
    Starlette(
        routes=[
            Route("/manifests/{name}", manifest),
            Route("/lists/{name}", modzip_list),
            Route("/trigger-error", trigger_error),
            Route("/echo", echo, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/redirect", redirect),
            Route("/status/{code:int}", status),
            Route("/slow", slow),
            Route("/abort", abort),
            Route("/stream", stream),
            Route("/_release", release),
            Route("/hop", hop),
            Route("/small", small),
            Route("/_seen", seen),
            Mount(
                "/gzip",
                GZipMiddleware(
                    Starlette(
                        routes=[Route("/manifests/{name}", manifest), Route("/small", small)]
                    ),
                    minimum_size=1,
                ),
            ),
            Mount(
                "/static-lists",
                NginxAddHeader(
                    StaticFiles(directory=LISTS, check_dir=False),
                    [
                        (b"x-archive-files", b"zip"),
                    ],
                ),
            ),
            Mount("/", StaticFiles(directory=HTML, check_dir=False)),
        ]
    )
)
