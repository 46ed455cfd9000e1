"""One-line manifest responses for web frameworks.

Each module imports only its own framework, so installing zipware never pulls one in:

* :mod:`zipware.contrib.django`: ``return ManifestResponse(entries, filename="x.zip")``
* :mod:`zipware.contrib.flask`: ``return manifest_response(entries, filename="x.zip")``
* :mod:`zipware.contrib.starlette` (FastAPI too):
  ``return ManifestResponse(entries, filename="x.zip")``

``entries`` is anything :func:`zipware.responses.manifest_body` takes: a
:class:`~zipware.manifest.Manifest`, a dict of the whole manifest, or a list of
:class:`~zipware.manifest.Entry` objects or dicts. The response is the manifest; the zipware
middleware around the app (:mod:`zipware.wsgi` or :mod:`zipware.asgi`) streams the ZIP.
"""
