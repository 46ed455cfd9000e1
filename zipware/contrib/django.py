"""Django: a view returns ``ManifestResponse``; ``zipware.wsgi.ZipMiddleware`` (around the
WSGI application) or ``zipware.asgi.ZipMiddleware`` (around the ASGI one) streams the ZIP.

Usage::

    return ManifestResponse([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")

Wire the middleware in ``wsgi.py``::

    application = ZipMiddleware(get_wsgi_application(), roots=[settings.MEDIA_ROOT])
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse

from ..manifest import CONTENT_TYPE, TRIGGER_HEADER
from ..responses import Entries, manifest_body

__all__ = ["ManifestResponse"]


class ManifestResponse(HttpResponse):
    """An ``HttpResponse`` holding a manifest: its JSON body, media type and trigger header.

    ``entries`` is a :class:`~zipware.manifest.Manifest`, a dict of the whole manifest, or a
    list of :class:`~zipware.manifest.Entry` objects or dicts; ``filename`` and ``comment``
    override the manifest's own. Other keyword arguments (``status``, ``headers``...) go to
    ``HttpResponse``. Invalid entries raise :class:`~zipware.manifest.ManifestError`.

    Usage: ``return ManifestResponse([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")``
    """

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str | None = None,
        comment: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("content_type", CONTENT_TYPE)
        super().__init__(manifest_body(entries, filename=filename, comment=comment), **kwargs)
        self[TRIGGER_HEADER] = "1"
