"""FastAPI: the path operation answers with a manifest, zipware's ASGI middleware streams it.

From the repository root: ``uvicorn examples.fastapi_app:app``.
"""

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from zipware.asgi import ZipMiddleware
from zipware.contrib.starlette import ManifestResponse
from zipware.manifest import Entry

# A regular (non-zipped) install gives a real directory; zipware needs one for `roots`.
SAMPLES = Path(str(files("zipware") / "samples"))

app = FastAPI()
# Added last, so it is the outermost of the app's middlewares: nothing else sees the ZIP.
app.add_middleware(ZipMiddleware, roots=[SAMPLES])


@app.get("/", response_class=HTMLResponse)
def index() -> str:
    return '<a href="/download">Download the samples (ZIP)</a>'


@app.get("/download")  # a returned Response is sent as is: no JSON encoding, no model
def download() -> ManifestResponse:
    paths = sorted(p for p in SAMPLES.rglob("*") if p.is_file())
    return ManifestResponse(
        [
            # Entry objects are checked as they are built: a mistake fails here, in the view.
            # An absolute `path` is fine as long as it lies inside one of the roots.
            *(Entry(name=p.relative_to(SAMPLES).as_posix(), path=str(p)) for p in paths),
            Entry(name="notes.txt", text="Written by the FastAPI example.\n"),
            Entry(name="empty/"),  # a trailing '/' makes a directory: empty ones survive
        ],
        filename="samples.zip",
    )
