"""WSGI driver: wrap any WSGI app; its manifest responses become ZIP downloads.

::

    from zipware.wsgi import ZipMiddleware
    app = ZipMiddleware(app, roots=["/srv/media"], allow_urls=["https://cdn.example.com/"])

Everything the response says is decided by :mod:`zipware.http`; this module only adapts
the WSGI calls. Responses that are not manifests pass through untouched (and still stream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from itertools import chain
from types import TracebackType
from typing import TYPE_CHECKING, Any

from werkzeug.wsgi import ClosingIterator

from .errors import SourceError
from .http import CONDITIONAL_REQUEST_HEADERS, CRCCache, Reply, decide, error_reply, is_manifest
from .manifest import ManifestError
from .policy import Policy
from .prepare import Download, prepare

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ZipMiddleware"]

logger = logging.getLogger("zipware")

_STRIPPED_ENVIRON_KEYS = tuple(
    "HTTP_" + h.upper().replace("-", "_") for h in CONDITIONAL_REQUEST_HEADERS
)
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class _Capture:
    """Per-request record of what the application answered (never on the middleware)."""

    __slots__ = ("body", "called", "headers", "manifest", "status")

    def __init__(self) -> None:
        self.called = False
        self.manifest = False
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []


def _request_headers(environ: WSGIEnvironment) -> dict[str, str]:
    return {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_") and isinstance(value, str)
    }


def _label(environ: WSGIEnvironment) -> str:
    return f"{environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '')}"


class ZipMiddleware:
    """Turn the wrapped app's manifest responses into streamed ZIP downloads.

    ``policy`` (or the keyword arguments of :class:`~zipware.policy.Policy`: ``roots``,
    ``allow_urls``, limits) says what manifests may refer to. ``crc_cache`` remembers the
    CRCs of local files computed by complete downloads, so later Range requests (resumes)
    can be served for archives whose manifest declared no CRCs; pass ``None`` to disable.
    """

    def __init__(
        self,
        app: WSGIApplication,
        policy: Policy | None = None,
        *,
        crc_cache: CRCCache | None = None,
        use_crc_cache: bool = True,
        **policy_options: Any,
    ) -> None:
        self.app = app
        self.policy = policy if policy is not None else Policy(**policy_options)
        self.crc_cache = (
            crc_cache if crc_cache is not None else (CRCCache() if use_crc_cache else None)
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        inner = {k: v for k, v in environ.items() if k not in _STRIPPED_ENVIRON_KEYS}
        if method == "HEAD":
            # Frameworks may leave a HEAD body empty; the manifest is needed to answer it.
            inner["REQUEST_METHOD"] = "GET"
        capture = _Capture()

        def capture_start(
            status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            capture.called = True
            code = int(status.split(" ", 1)[0])
            if is_manifest(code, headers):
                capture.manifest = True
                capture.status = status
                capture.headers = headers
                return capture.body.append
            capture.manifest = False
            write = start_response(status, headers, exc_info)  # type: ignore[arg-type]
            return write if method != "HEAD" else (lambda data: None)

        app_iter = self.app(inner, capture_start)  # type: ignore[arg-type]
        if capture.called and not capture.manifest:
            if method == "HEAD":
                _close(app_iter)
                return []
            return app_iter  # untouched: keeps wsgi.file_wrapper and streaming as they are
        iterator = iter(app_iter)
        first: list[bytes] = []
        if not capture.called:
            # start_response may come with the first chunk: look before deciding
            for chunk in iterator:
                first.append(chunk)
                if capture.called:
                    break
        if not capture.manifest:
            if method == "HEAD":
                _close(app_iter)
                return []
            return ClosingIterator(chain(first, iterator), [lambda: _close(app_iter)])
        body = self._read_manifest(capture, first, iterator, app_iter)
        reply, download = self._reply(environ, method, capture, body)
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", reply.headers)
        if reply.span is None or download is None:
            return [reply.body] if reply.body else []
        return self._stream(download, reply, _label(environ))

    def _read_manifest(
        self,
        capture: _Capture,
        first: list[bytes],
        iterator: Iterator[bytes],
        app_iter: Iterable[bytes],
    ) -> bytes | None:
        """The manifest body (write() calls, then the iterable), or None when over the cap."""
        limit = self.policy.max_manifest_bytes
        parts = [*capture.body, *first]
        size = sum(map(len, parts))
        try:
            for chunk in iterator:
                size += len(chunk)
                if size > limit:
                    return None
                parts.append(chunk)
        finally:
            _close(app_iter)
        return None if size > limit else b"".join(parts)

    def _reply(
        self, environ: WSGIEnvironment, method: str, capture: _Capture, body: bytes | None
    ) -> tuple[Reply, Download | None]:
        label = _label(environ)
        if body is None:
            logger.error(
                "zipware: %s: manifest over %d bytes", label, self.policy.max_manifest_bytes
            )
            return error_reply("the manifest is too large"), None
        try:
            download = prepare(body, self.policy)
        except ManifestError as exc:
            logger.error("zipware: %s: invalid manifest:\n%s", label, exc)
            count = len(exc.problems)
            return error_reply(f"invalid manifest ({count} problem(s); see the server log)"), None
        if self.crc_cache is not None:
            self.crc_cache.fill(download)
        reply = decide(
            download,
            method=method,
            request_headers=_request_headers(environ),
            app_headers=capture.headers,
        )
        return reply, download

    def _stream(self, download: Download, reply: Reply, label: str) -> Iterator[bytes]:
        assert reply.span is not None
        chunks = download.archive.iter_range(*reply.span)
        try:
            yield from chunks
        except SourceError as exc:
            # Raising is what makes the server cut the connection: the client sees fewer
            # bytes than Content-Length, never an archive that looks complete.
            logger.error("zipware: %s: aborted after the headers: %s", label, exc)
            raise
        finally:
            chunks.close()
        if reply.complete and self.crc_cache is not None:
            self.crc_cache.learn(download)


def _close(app_iter: Iterable[bytes]) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # a failing close must not hide the response we are giving
            logger.exception("zipware: closing the application's response failed")
