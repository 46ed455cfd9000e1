"""WSGI driver: wrap any WSGI app; its manifest responses become ZIP downloads.

::

    from zipware.wsgi import ZipMiddleware
    app = ZipMiddleware(app, roots=["/srv/media"], allow_urls=["https://cdn.example.com/"])

Everything the response says is decided by :mod:`zipware.http`; this module only adapts
the WSGI calls. Responses that are not manifests pass through untouched (and still stream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable
from http import HTTPStatus
from itertools import chain
from types import TracebackType
from typing import TYPE_CHECKING, Any

from werkzeug.wsgi import ClosingIterator

from .errors import SourceError
from .http import CONDITIONAL_REQUEST_HEADERS, Core, Reply, Settings, decide
from .manifest import ManifestError
from .policy import Policy
from .prepare import Download, prepare

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ZipMiddleware"]

logger = logging.getLogger("zipware")

_STRIPPED_ENVIRON_KEYS = frozenset(
    "HTTP_" + h.upper().replace("-", "_") for h in CONDITIONAL_REQUEST_HEADERS
)
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class _Answer:
    """Per-request record of what the application answered (never on the middleware)."""

    __slots__ = ("body", "called", "headers", "kind", "probe_hit", "retry")

    def __init__(self) -> None:
        self.called = False
        self.kind: str | None = None  # "zipware" / "modzip" when it is a manifest
        self.retry = False  # conditionals reached a manifest: to be asked again without
        self.probe_hit = False  # a HEAD answered with a manifest: to be asked again as GET
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    @property
    def held(self) -> bool:
        """Whether the answer is kept from the client (a manifest, or to be redone)."""
        return self.kind is not None or self.retry or self.probe_hit


def _request_headers(environ: WSGIEnvironment) -> dict[str, str]:
    return {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_") and isinstance(value, str)
    }


def _label(environ: WSGIEnvironment) -> str:
    return f"{environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '')}"


def _close(app_iter: Iterable[bytes]) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # a failing close must not hide the response we are giving
            logger.exception("zipware: closing the application's response failed")


class ZipMiddleware(Settings):
    """Turn the wrapped app's manifest responses into streamed ZIP downloads.

    Takes the options of :class:`zipware.http.Core`: a ``policy`` or the
    :class:`~zipware.policy.Policy` keywords (``roots``, ``allow_urls``, limits),
    ``crc_cache``, ``forward_conditionals``, ``modzip_base``/``modzip_root``.
    """

    def __init__(
        self, app: WSGIApplication, /, policy: Policy | None = None, **options: Any
    ) -> None:
        self.app = app
        self.core = Core(policy, **options)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        core = self.core
        method = environ.get("REQUEST_METHOD", "GET").upper()
        strip = core.strips(method)
        sent = not strip and any(k in environ for k in _STRIPPED_ENVIRON_KEYS)
        result = self._call_app(
            environ,
            start_response,
            method,
            strip=strip,
            sent=sent,
            as_get=not core.is_probe(method),
        )
        if isinstance(result, _Answer) and result.probe_hit:
            # a HEAD answered with a manifest: its body is needed
            result = self._call_app(
                environ, start_response, method, strip=strip, sent=sent, as_get=True
            )
        if isinstance(result, _Answer) and result.retry:
            # the app applied the client's conditionals to a manifest
            result = self._call_app(
                environ, start_response, method, strip=True, sent=False, as_get=True
            )
        if not isinstance(result, _Answer):
            return result
        answer = result
        label = _label(environ)
        reply, download = self._reply(environ, method, answer)
        if reply.span is None or download is None:
            start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", reply.headers)
            return [reply.body] if reply.body and method != "HEAD" else []
        body = self._stream(download, reply, label)
        try:
            # the first chunk opens the first source: a missing file still gets an error
            # status instead of a cut-off 200
            first = next(body, b"")
        except SourceError:
            reply = self.core.error("a source of the archive failed (see the server log)")
            start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", reply.headers)
            return [reply.body]
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", reply.headers)
        return ClosingIterator(chain([first], body), [body.close])

    def _call_app(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        method: str,
        *,
        strip: bool,
        sent: bool,
        as_get: bool,
    ) -> _Answer | Iterable[bytes]:
        """Call the app; pass its response through, or return what it said (a manifest).

        ``strip``: remove the conditionals first; ``sent``: they reach the app in this call;
        ``as_get``: a HEAD is sent as a GET (else it is a probe, see Core.head_as_get).
        """
        inner = dict(environ)
        if strip:
            inner = {k: v for k, v in environ.items() if k not in _STRIPPED_ENVIRON_KEYS}
        as_get = as_get and method == "HEAD"
        probe = method == "HEAD" and not as_get
        if as_get:
            # Frameworks may leave a HEAD body empty; the manifest is needed to answer it.
            inner["REQUEST_METHOD"] = "GET"
        answer = _Answer()
        core = self.core

        def capture_start(
            status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            answer.called = True
            code = int(status.split(" ", 1)[0])
            if probe:
                answer.probe_hit = core.wants_body(code, headers)
            else:
                answer.kind = core.kind(code, headers)
                answer.retry = core.must_retry(code, headers, sent=sent)
            if answer.held:
                answer.headers = headers
                return answer.body.append
            write = start_response(status, headers, exc_info)  # type: ignore[arg-type]
            return write if not as_get else (lambda data: None)

        app_iter = self.app(inner, capture_start)  # type: ignore[arg-type]
        if answer.called and not answer.held:
            if as_get:
                _close(app_iter)
                return []
            return app_iter  # untouched: keeps wsgi.file_wrapper and streaming as they are
        iterator = iter(app_iter)
        first: list[bytes] = []
        if not answer.called:
            # start_response may come with the first chunk: look before deciding
            for chunk in iterator:
                first.append(chunk)
                if answer.called:
                    break
        if not answer.held:
            if as_get:
                _close(app_iter)
                return []
            return ClosingIterator(chain(first, iterator), [lambda: _close(app_iter)])
        limit = self.core.policy.max_manifest_bytes
        answer.body.extend(first)
        size = sum(map(len, answer.body))
        try:
            for chunk in iterator:
                size += len(chunk)
                if size <= limit and answer.kind is not None:
                    answer.body.append(chunk)
        finally:
            _close(app_iter)
        if size > limit and answer.kind is not None:
            answer.body = []
            answer.kind = "too-large"
        return answer

    def _reply(
        self, environ: WSGIEnvironment, method: str, answer: _Answer
    ) -> tuple[Reply, Download | None]:
        core = self.core
        label = _label(environ)
        assert answer.kind is not None
        if answer.kind == "too-large":
            logger.error(
                "zipware: %s: manifest over %d bytes", label, core.policy.max_manifest_bytes
            )
            return core.error("the manifest is too large"), None
        try:
            manifest = core.load(answer.kind, b"".join(answer.body), answer.headers)
            download = prepare(manifest, core.policy, client=core.sync_client(manifest))
        except ManifestError as exc:
            logger.error("zipware: %s: invalid manifest:\n%s", label, exc)
            count = len(exc.problems)
            return core.error(f"invalid manifest ({count} problem(s); see the server log)"), None
        if core.crc_cache is not None:
            core.crc_cache.fill(download)
        reply = decide(
            download,
            method=method,
            request_headers=_request_headers(environ),
            app_headers=answer.headers,
        )
        return reply, download

    def _stream(self, download: Download, reply: Reply, label: str) -> Generator[bytes, None, None]:
        assert reply.span is not None
        chunks = download.archive.iter_range(*reply.span)
        try:
            yield from chunks
        except SourceError as exc:
            # Raising is what makes the server cut the connection: the client sees fewer
            # bytes than Content-Length, never an archive that looks complete.
            logger.error("zipware: %s: archive aborted: %s", label, exc)
            raise
        finally:
            chunks.close()
        cache = self.core.crc_cache
        if reply.complete and cache is not None:
            cache.learn(download)
