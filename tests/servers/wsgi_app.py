"""The WSGI test app: plain WSGI, wrapped in zipware's ZipMiddleware, for gunicorn.

``app`` is ZipMiddleware(inner). ``linted`` puts werkzeug's LintMiddleware on both sides,
``Lint(ZipMiddleware(Lint(inner)))``: the outer one checks what zipware gives the server,
the inner one how zipware calls and closes the app. Under a server, every warning is
written to stderr as ``LINT [METHOD PATH?QUERY] Category: message`` so the test can tell
which request caused it (a gunicorn sync worker runs one request at a time, close() included).
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.lint import HTTPWarning, LintMiddleware, WSGIWarning

from zipware.wsgi import ZipMiddleware

from . import common

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MANIFEST = [("Content-Type", "application/json"), (common.TRIGGER_HEADER, "1")]


def make_inner(config: dict[str, Any]) -> WSGIApplication:
    manifests = common.manifest_bodies(config)

    def send(
        start_response: StartResponse, body: bytes, headers: list[tuple[str, str]]
    ) -> list[bytes]:
        start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def split(start_response: StartResponse, body: bytes) -> Iterator[bytes]:
        # start_response only at the first next(): the middleware must look before deciding
        start_response("200 OK", MANIFEST)
        yield from common.split3(body)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if path == "/zip-crc":
            ctype = [("Content-Type", common.CONTENT_TYPE + "; charset=utf-8")]
            return send(start_response, manifests["zip-crc"], ctype)
        if path == "/zip-split":
            return split(start_response, manifests["zip"])
        if path == "/one":
            return send(start_response, common.one_manifest(query), MANIFEST)
        if path[1:] in manifests:
            return send(start_response, manifests[path[1:]], MANIFEST)
        if path == "/plain":
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "plain")])
            return common.plain_chunks(common.flag_file(config, query))
        if path == "/pid":
            return send(start_response, str(os.getpid()).encode(), [("Content-Type", "text/plain")])
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]

    return app


def make_app(config: dict[str, Any], *, lint: bool = False) -> WSGIApplication:
    inner = make_inner(config)
    if lint:
        inner = LintMiddleware(inner)
    app: WSGIApplication = ZipMiddleware(inner, **common.policy_options(config))
    if lint:
        app = LintMiddleware(app)
    return app


_request = threading.local()


class _Labelled:
    """Outermost: remembers the running request, for the warnings written to stderr."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        _request.label = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}?{query}"
        return self.app(environ, start_response)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    label = getattr(_request, "label", "?")
    sys.stderr.write(f"LINT [{label}] {category.__name__}: {message}\n")
    sys.stderr.flush()


def _serve() -> tuple[WSGIApplication, WSGIApplication]:
    config = common.load_config()
    warnings.simplefilter("always", WSGIWarning)
    warnings.simplefilter("always", HTTPWarning)
    warnings.showwarning = _show_warning
    built = make_app(config), _Labelled(make_app(config, lint=True))
    common.announce("wsgi")
    return built


if "ZW_CONFIG" in os.environ:  # under gunicorn: servers.wsgi_app:app or servers.wsgi_app:linted
    app, linted = _serve()
