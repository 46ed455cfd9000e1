"""The ASGI test app: starlette, wrapped in zipware's ZipMiddleware, for uvicorn."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from zipware.asgi import ZipMiddleware

from . import common

MANIFEST = {common.TRIGGER_HEADER: "1"}


def make_inner(config: dict[str, Any]) -> Starlette:
    manifests = common.manifest_bodies(config)

    async def fixed(request: Request) -> Response:
        name = request.url.path[1:]
        if name not in manifests:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(manifests[name], headers=MANIFEST, media_type="application/json")

    async def zip_crc(request: Request) -> Response:
        return Response(manifests["zip-crc"], media_type=common.CONTENT_TYPE + "; charset=utf-8")

    async def zip_split(request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            for piece in common.split3(manifests["zip"]):
                yield piece
                await anyio.sleep(0)

        # one body message per piece: the middleware must gather them before deciding
        return StreamingResponse(pieces(), headers=MANIFEST, media_type="application/json")

    async def one(request: Request) -> Response:
        body = common.one_manifest(request.url.query)
        return Response(body, headers=MANIFEST, media_type="application/json")

    async def plain(request: Request) -> Response:
        flag = common.flag_file(config, request.url.query)

        async def chunks() -> AsyncIterator[bytes]:
            it = common.plain_chunks(flag)
            while (chunk := await anyio.to_thread.run_sync(next, it, None)) is not None:
                yield chunk

        return StreamingResponse(chunks(), media_type="text/plain", headers={"X-App": "plain"})

    async def pid(request: Request) -> Response:
        return PlainTextResponse(str(os.getpid()))

    return Starlette(
        routes=[
            Route("/zip-crc", zip_crc),
            Route("/zip-split", zip_split),
            Route("/one", one),
            Route("/plain", plain),
            Route("/pid", pid),
            Route("/{name}", fixed),
        ]
    )


def make_app(config: dict[str, Any]) -> ZipMiddleware:
    return ZipMiddleware(make_inner(config), **common.policy_options(config))


if "ZW_CONFIG" in os.environ:  # under uvicorn: servers.asgi_app:app
    app = make_app(common.load_config())
    common.announce("asgi")
