"""Flask: a view returns ``manifest_response(...)``; ``zipware.wsgi.ZipMiddleware`` around
``app.wsgi_app`` streams the ZIP.

Usage::

    return manifest_response([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")

Wire the middleware once::

    app.wsgi_app = ZipMiddleware(app.wsgi_app, roots=["/srv/media"])
"""

from __future__ import annotations

from flask import Response

from ..manifest import CONTENT_TYPE, TRIGGER_HEADER
from ..responses import Entries, manifest_body

__all__ = ["manifest_response"]


def manifest_response(
    entries: Entries,
    *,
    filename: str | None = None,
    comment: str | None = None,
    status: int = 200,
) -> Response:
    """A ``flask.Response`` holding a manifest: its JSON body, media type and trigger header.

    ``entries`` is a :class:`~zipware.manifest.Manifest`, a dict of the whole manifest, or a
    list of :class:`~zipware.manifest.Entry` objects or dicts; ``filename`` and ``comment``
    override the manifest's own. Invalid entries raise
    :class:`~zipware.manifest.ManifestError`. Only a 200 response is turned into a ZIP.

    Usage: ``return manifest_response([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")``
    """
    return Response(
        manifest_body(entries, filename=filename, comment=comment),
        status=status,
        content_type=CONTENT_TYPE,
        headers={TRIGGER_HEADER: "1"},
    )
