"""Starlette and FastAPI: an endpoint returns ``ManifestResponse``;
``zipware.asgi.ZipMiddleware`` around the app streams the ZIP.

Usage::

    return ManifestResponse([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")

Wire the middleware as the outermost one (outside any GZip middleware)::

    app = ZipMiddleware(app, roots=["/srv/media"])  # or app.add_middleware(ZipMiddleware, ...)
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.background import BackgroundTask
from starlette.responses import Response

from ..manifest import CONTENT_TYPE, TRIGGER_HEADER
from ..responses import Entries, manifest_body

__all__ = ["ManifestResponse"]


class ManifestResponse(Response):
    """A Starlette ``Response`` holding a manifest: its JSON body, media type and trigger.

    ``entries`` is a :class:`~zipware.manifest.Manifest`, a dict of the whole manifest, or a
    list of :class:`~zipware.manifest.Entry` objects or dicts; ``filename`` and ``comment``
    override the manifest's own. Invalid entries raise
    :class:`~zipware.manifest.ManifestError`. Return it from a FastAPI path operation as is.

    Usage: ``return ManifestResponse([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")``
    """

    media_type = CONTENT_TYPE

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str | None = None,
        comment: str | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            manifest_body(entries, filename=filename, comment=comment),
            status_code=status_code,
            headers={**(headers or {}), TRIGGER_HEADER: "1"},
            media_type=CONTENT_TYPE,
            background=background,
        )
