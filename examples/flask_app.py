"""Flask: the view answers with a manifest, zipware's WSGI middleware streams the ZIP.

From the repository root: ``gunicorn examples.flask_app:app`` (or ``python examples/flask_app.py``).
"""

from importlib.resources import files
from pathlib import Path

from flask import Flask, Response

from zipware.contrib.flask import manifest_response
from zipware.wsgi import ZipMiddleware

# A regular (non-zipped) install gives a real directory; zipware needs one for `roots`.
SAMPLES = Path(str(files("zipware") / "samples"))

app = Flask(__name__)
# Wrap app.wsgi_app, not app: `app` stays a Flask object (flask run, app.test_client...).
# Manifests may name files under `roots` only; everything else is refused.
app.wsgi_app = ZipMiddleware(app.wsgi_app, roots=[SAMPLES])  # type: ignore[method-assign]


@app.get("/")
def index() -> str:
    return '<a href="/download">Download the samples (ZIP)</a>'


@app.get("/download")
def download() -> Response:  # the middleware turns this small JSON answer into the ZIP
    names = sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*") if p.is_file())
    return manifest_response(
        [
            *({"name": n, "path": n} for n in names),  # `path` is relative to the first root
            {"name": "notes.txt", "text": "Written by the Flask example.\n"},
            {"name": "empty/"},  # a trailing '/' makes a directory: empty ones survive
        ],
        filename="samples.zip",
    )


if __name__ == "__main__":
    app.run(port=8000)  # development server; use gunicorn in production
