"""Starlette: the endpoint answers with a manifest, zipware's ASGI middleware streams the ZIP.

From the repository root: ``uvicorn examples.starlette_app:app``.
"""

from importlib.resources import files
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from zipware.asgi import ZipMiddleware
from zipware.contrib.starlette import ManifestResponse

# A regular (non-zipped) install gives a real directory; zipware needs one for `roots`.
SAMPLES = Path(str(files("zipware") / "samples"))


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse('<a href="/download">Download the samples (ZIP)</a>')


async def download(request: Request) -> ManifestResponse:
    # Only names and paths here: the middleware stats, sizes and streams the files itself.
    names = sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*") if p.is_file())
    return ManifestResponse(
        [
            *({"name": n, "path": n} for n in names),  # `path` is relative to the first root
            {"name": "notes.txt", "text": "Written by the Starlette example.\n"},
            {"name": "empty/"},  # a trailing '/' makes a directory: empty ones survive
        ],
        filename="samples.zip",
    )


app = Starlette(
    routes=[Route("/", index), Route("/download", download)],
    # Keep ZipMiddleware first (outermost of yours): a GZip middleware must not see the ZIP.
    middleware=[Middleware(ZipMiddleware, roots=[SAMPLES])],
)
