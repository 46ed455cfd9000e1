"""Zip the files a user picked from a bucket: Starlette, zipware's ASGI middleware, S3.

The page lists the objects under a prefix with a checkbox each; the form asks for
``/download?key=...&key=...``. The view checks the keys and answers with a manifest of
``uri`` entries; the middleware reads each object's size, LastModified and ETag (one HEAD
per object, concurrently), then streams the ZIP with an exact ``Content-Length``, reading the
objects in 4 MiB ranged GETs. Nothing is written to disk or held whole in memory.
``/export?key=...`` writes the same ZIP into the bucket instead (a multipart upload).

Configuration, from the environment::

    S3_BUCKET=my-bucket S3_PREFIX=shared/ \\
    S3_ENDPOINT_URL=https://s3.us-west-004.backblazeb2.com \\
    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_DEFAULT_REGION=us-west-004 \\
    uvicorn --app-dir examples s3_download:app

``S3_ENDPOINT_URL`` is left out for AWS itself. Needs ``pip install 'zipware[s3]' starlette``.
"""

from __future__ import annotations

import html
import json
import os
import uuid
from typing import Any

import anyio.to_thread
import fsspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from zipware.asgi import ZipMiddleware
from zipware.contrib.starlette import ManifestResponse
from zipware.policy import Policy
from zipware.prepare import prepare
from zipware.upload import upload

BUCKET = os.environ.get("S3_BUCKET", "my-bucket")
PREFIX = os.environ.get("S3_PREFIX", "")  # what users may pick from, e.g. "shared/"
MAX_KEYS = 10_000

# Credentials come from the standard AWS environment variables or ~/.aws files; only the
# endpoint of an S3-compatible service (B2, MinIO, R2...) is set here.
STORAGE_OPTIONS: dict[str, Any] = {}
if os.environ.get("S3_ENDPOINT_URL"):
    STORAGE_OPTIONS["client_kwargs"] = {"endpoint_url": os.environ["S3_ENDPOINT_URL"]}

# The middleware reads only objects under s3://BUCKET/PREFIX, whatever a manifest says.
POLICY = Policy(allow_uris=(f"s3://{BUCKET}/{PREFIX}",), storage_options=STORAGE_OPTIONS)


def list_keys() -> list[tuple[str, int]]:
    fs = fsspec.filesystem("s3", **STORAGE_OPTIONS)
    found = fs.find(f"{BUCKET}/{PREFIX}", detail=True, maxdepth=None)
    return sorted(
        (name.removeprefix(f"{BUCKET}/"), info["size"])
        for name, info in found.items()
        if info.get("type") == "file"
    )[:MAX_KEYS]


async def index(request: Request) -> HTMLResponse:
    rows = "".join(
        f'<li><label><input type="checkbox" name="key" value="{html.escape(k)}"> '
        f"{html.escape(k)} ({size:,} bytes)</label></li>"
        for k, size in await anyio.to_thread.run_sync(list_keys)
    )
    return HTMLResponse(
        f'<form action="/download"><ul>{rows}</ul>'
        '<button>Download as ZIP</button> <button formaction="/export">Save ZIP to the bucket'
        "</button></form>"
    )


def selected(request: Request) -> list[str] | None:
    """The keys asked for, if the user may have them all (here: under PREFIX)."""
    keys = request.query_params.getlist("key")
    if not keys or len(keys) > MAX_KEYS:
        return None
    for key in keys:
        if not key.startswith(PREFIX) or key.endswith("/") or ".." in key.split("/"):
            return None
    return keys


def manifest(keys: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "filename": "selection.zip",
        # names inside the ZIP: the keys without the prefix; duplicates are impossible
        "entries": [
            {"name": key.removeprefix(PREFIX), "uri": f"s3://{BUCKET}/{key}"}
            for key in dict.fromkeys(keys)
        ],
    }


async def download(request: Request) -> Response:
    keys = selected(request)
    if keys is None:
        return PlainTextResponse("pick files under the shared prefix", status_code=400)
    # only names and URIs: the middleware finds sizes and dates, and streams the objects
    return ManifestResponse(manifest(keys))


async def export(request: Request) -> Response:
    keys = selected(request)
    if keys is None:
        return PlainTextResponse("pick files under the shared prefix", status_code=400)
    target = f"s3://{BUCKET}/exports/{uuid.uuid4().hex}.zip"

    def build() -> int:
        archive = prepare(json.dumps(manifest(keys)), POLICY).archive  # ManifestError: a 500 here
        return upload(archive, target, storage_options=STORAGE_OPTIONS)

    size = await anyio.to_thread.run_sync(build)
    return JSONResponse({"uri": target, "size": size})


app = ZipMiddleware(
    Starlette(routes=[Route("/", index), Route("/download", download), Route("/export", export)]),
    POLICY,
)
