"""The HTTP decisions, without I/O: trigger, headers, ETag, conditionals and Range.

The WSGI and ASGI middlewares (and the proxy) are thin drivers over these functions: they
move bytes and call the application; everything a response *says* is decided here, on
plain strings, so both drivers answer the same request the same way. Header parsing comes
from :mod:`werkzeug.http`, which is itself I/O-free.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from werkzeug.http import (
    http_date,
    parse_date,
    parse_etags,
    parse_if_range_header,
    parse_range_header,
)

from . import modzip
from .manifest import CONTENT_TYPE, TRIGGER_HEADER, Manifest, ManifestError, Problem
from .policy import Policy
from .prepare import Download

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CONDITIONAL_REQUEST_HEADERS",
    "CRCCache",
    "Core",
    "Reply",
    "content_disposition",
    "decide",
    "error_reply",
    "is_manifest",
]

logger = logging.getLogger("zipware")

# Conditionals and ranges of the client are about the archive, not about the manifest the
# application returns: they are removed before the application is called.
CONDITIONAL_REQUEST_HEADERS = (
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
)

# Response headers of the application that describe the manifest body, not the archive.
_DROPPED_APP_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "content-range",
        "transfer-encoding",
        "etag",
        "last-modified",
        "accept-ranges",
        "content-disposition",
        "x-archive-files",
        "x-archive-charset",
        TRIGGER_HEADER.lower(),
    }
)


_C = TypeVar("_C", "httpx.Client", "httpx.AsyncClient")


def _no_cookies(client: _C) -> _C:
    # one pool serves every user of the server: a cookie one URL sets must never be sent
    # on another user's request
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return client


def conditionals_in(names: Iterable[str]) -> bool:
    """Whether any of the (lower-case) request header names is a conditional or Range."""
    return any(n in CONDITIONAL_REQUEST_HEADERS for n in names)


def _has_trigger(headers: Iterable[tuple[str, str]], modzip: bool = False) -> str | None:
    for name, value in headers:
        lname = name.lower()
        if lname == _TRIGGER:
            return "zipware"
        if lname == "content-type" and value.split(";")[0].strip().lower() == CONTENT_TYPE:
            return "zipware"
        if modzip and lname == "x-archive-files" and value.strip().lower() == "zip":
            return "modzip"
    return None


_TRIGGER = TRIGGER_HEADER.lower()


def is_manifest(status: int, headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a response is a zipware manifest (see ``spec/manifest.md``, the trigger)."""
    return status == 200 and _has_trigger(headers) is not None


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / 5987)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


class CRCCache:
    """A bounded, thread-safe memory of CRCs computed while streaming local files.

    Keyed by the file's identity as resolved at prepare time (real path, device, inode,
    size, mtime in ns), so a changed file never matches. Filled after a complete download;
    consulted to serve ranges of archives whose CRCs were not declared. It never changes
    an archive's layout: members stay in the storage mode the manifest implies.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[object, ...], int] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def fill(self, download: Download) -> None:
        """Put the CRCs this cache knows into ``download.archive.crcs``."""
        crcs = download.archive.crcs
        with self._lock:
            for i, key in download.file_keys.items():
                if crcs[i] < 0:
                    crc = self._data.get(key)
                    if crc is not None:
                        crcs[i] = crc
                        self._data.move_to_end(key)

    def learn(self, download: Download) -> None:
        """Remember the CRCs a complete pass over ``download`` computed."""
        crcs = download.archive.crcs
        with self._lock:
            for i, key in download.file_keys.items():
                if crcs[i] >= 0:
                    self._data[key] = crcs[i]
                    self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)


@dataclass
class Reply:
    """What to answer: status, headers, and which bytes of the archive (if any) follow.

    ``span`` is ``(start, end)`` of the archive to stream, or None when the body is
    ``body`` (errors, 304, 416) or empty (HEAD). ``complete`` is true when the whole archive
    is sent, so the CRCs it computes can be remembered afterwards.
    """

    status: int
    headers: list[tuple[str, str]]
    span: tuple[int, int] | None = None
    body: bytes = b""
    complete: bool = False
    reason: str = field(default="", repr=False)


def error_reply(message: str, status: int = 500) -> Reply:
    """An error with a short plain-text body (details go to the log, not to the client)."""
    body = f"zipware: {message}\n".encode()
    return Reply(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
        body=body,
        reason=message,
    )


class Settings:
    """What both middlewares expose of their :class:`Core`: the policy and the CRC cache."""

    core: Core

    @property
    def policy(self) -> Policy:
        """The safety policy manifests are checked against."""
        return self.core.policy

    @property
    def crc_cache(self) -> CRCCache | None:
        """The CRC cache shared by this middleware's requests, if any."""
        return self.core.crc_cache


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo a gzip or deflate Content-Encoding, refusing output over ``limit`` bytes."""
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped, as RFC 9110 8.4.1.2 defines it
    else:
        raise ManifestError([Problem("$", f"manifest compressed with {encoding!r}")])
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ManifestError([Problem("$", f"manifest is not valid {encoding}: {exc}")]) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ManifestError([Problem("$", f"manifest is over {limit} bytes")])
    return out


class Core:
    """The settings and request-independent decisions both drivers share.

    ``policy`` (or the keyword arguments of :class:`~zipware.policy.Policy`) says what a
    manifest may refer to. ``crc_cache`` remembers CRCs of local files computed by
    complete downloads so later ranges can be served (``use_crc_cache=False`` disables it).

    ``forward_conditionals``: by default the client's Range and conditional headers are
    removed before the application is called, since they are about the archive. With
    True they reach the application (so its own static files keep their Range support);
    if an answer then carries the manifest trigger with a status other than 200 (the
    application applied them to the manifest), the request is made once more without
    them. Only GET and HEAD are ever repeated.

    ``head_as_get``: frameworks may send no manifest body for a HEAD, so by default a HEAD
    reaches the application as a GET. With False (the proxy), it goes as a HEAD, and only an
    answer that carries the manifest trigger is asked for again as a GET: a HEAD of a large
    file behind the proxy then costs the upstream no body.

    ``modzip_base`` / ``modzip_root`` accept nginx mod_zip file lists
    (``X-Archive-Files: zip``), their locations fetched under that URL or mapped onto that
    directory. ``error_status`` is the status of errors found before the archive starts
    (500; a proxy says 502).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        crc_cache: CRCCache | None = None,
        use_crc_cache: bool = True,
        forward_conditionals: bool = False,
        head_as_get: bool = True,
        modzip_base: str | None = None,
        modzip_root: str | None = None,
        error_status: int = 500,
        **policy_options: Any,
    ) -> None:
        self.policy = policy if policy is not None else Policy(**policy_options)
        self.crc_cache = (
            crc_cache if crc_cache is not None else (CRCCache() if use_crc_cache else None)
        )
        self.forward_conditionals = forward_conditionals
        self.head_as_get = head_as_get
        self.modzip_base = modzip_base
        self.modzip_root = modzip_root
        self.error_status = error_status
        self._lock = threading.Lock()
        self._sync_client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncClient
        ] = weakref.WeakKeyDictionary()

    @property
    def modzip(self) -> bool:
        """Whether mod_zip file lists are turned into archives."""
        return self.modzip_base is not None or self.modzip_root is not None

    def strips(self, method: str) -> bool:
        """Whether the conditionals are removed before the application is called."""
        return not self.forward_conditionals or method not in ("GET", "HEAD")

    def kind(self, status: int, headers: Iterable[tuple[str, str]]) -> str | None:
        """``"zipware"`` or ``"modzip"`` when the response is a manifest to serve."""
        return _has_trigger(headers, self.modzip) if status == 200 else None

    def must_retry(self, status: int, headers: Iterable[tuple[str, str]], *, sent: bool) -> bool:
        """The application applied forwarded conditionals to a manifest: ask again.

        ``sent``: whether conditionals reached the application in this call. Without them a
        non-200 answer is the application's own, and passes through.
        """
        return sent and status != 200 and _has_trigger(headers, self.modzip) is not None

    def is_probe(self, method: str) -> bool:
        """Whether a HEAD reaches the application as a HEAD (asked again as GET only when
        its answer is a manifest); else it is sent as a GET from the start."""
        return method == "HEAD" and not self.head_as_get

    def wants_body(self, status: int, headers: Iterable[tuple[str, str]]) -> bool:
        """Whether a HEAD probe's answer is a manifest whose body is needed."""
        return _has_trigger(headers, self.modzip) is not None

    def load(self, kind: str, body: bytes, headers: Iterable[tuple[str, str]]) -> Manifest | bytes:
        """The manifest to prepare from a response body (mod_zip lists are converted).

        A compression middleware inside zipware may have gzipped the manifest; it is
        inflated here, never beyond the manifest size limit.
        """
        headers = list(headers)
        encoding = next((v for k, v in headers if k.lower() == "content-encoding"), "")
        encoding = encoding.strip().lower()
        if encoding not in ("", "identity"):
            body = _inflate(body, encoding, self.policy.max_manifest_bytes)
        if kind == "modzip":
            return modzip.parse(body, headers, base_url=self.modzip_base, root=self.modzip_root)
        return body

    def error(self, message: str) -> Reply:
        """An error reply with this core's error status."""
        return error_reply(message, self.error_status)

    # -- shared HTTP clients for URL members ---------------------------------------------

    def _needs_client(self, manifest: Manifest | bytes) -> bool:
        # a client costs a TLS context (~0.1 s of CPU): made only once URLs show up
        if isinstance(manifest, Manifest):
            return any(e.url is not None for e in manifest.entries)
        return b'"url"' in manifest

    def sync_client(self, manifest: Manifest | bytes) -> httpx.Client | None:
        """The connection pool URL members share (threads included), or None if not needed."""
        if not self._needs_client(manifest):
            return None
        with self._lock:
            if self._sync_client is None:
                import httpx

                self._sync_client = _no_cookies(
                    httpx.Client(timeout=self.policy.url_timeout, follow_redirects=False)
                )
            return self._sync_client

    def async_client(self, manifest: Manifest | bytes) -> httpx.AsyncClient | None:
        """The async connection pool of the running asyncio loop, or None if not needed.

        A pool belongs to one event loop, so each loop gets its own; under another async
        library every URL member makes its own client.
        """
        if not self._needs_client(manifest):
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        client = self._async_clients.get(loop)
        if client is None:
            import httpx

            client = _no_cookies(
                httpx.AsyncClient(timeout=self.policy.url_timeout, follow_redirects=False)
            )
            self._async_clients[loop] = client
        return client


_EMPTY_SUFFIX = re.compile(r"\s*bytes\s*=\s*-0+\s*")


def _not_modified(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # RFC 9110 15.4.5: with an ETag present, a 304 should not repeat Last-Modified
    return [(k, v) for k, v in headers if k.lower() != "last-modified"]


def _etag_matches(header: str, etag: str) -> bool:
    etags = parse_etags(header)
    return etags.contains(etag.strip('"')) or etags.star_tag


def decide(
    download: Download,
    *,
    method: str,
    request_headers: Mapping[str, str],
    app_headers: Iterable[tuple[str, str]] = (),
) -> Reply:
    """The reply to a GET or HEAD whose application answered with a manifest.

    ``request_headers`` maps lower-case names to values (the client's original request).
    Conditionals follow RFC 9110: If-None-Match before If-Modified-Since; a matching one
    gives 304. A single satisfiable range gives 206 when every CRC it covers is known
    (declared, or remembered by a :class:`CRCCache`); several ranges, a malformed Range
    or a failed If-Range give the whole archive (200); an unsatisfiable one gives 416.
    """
    archive = download.archive
    size = archive.size
    etag = f'"{download.fingerprint}"'
    rangeable = not archive.missing_crcs(0, size)
    app_headers = list(app_headers)
    headers = [(k, v) for k, v in app_headers if k.lower() not in _DROPPED_APP_HEADERS]
    headers.append(("ETag", etag))
    last_modified = None
    modified = download.last_modified
    if modified is None:
        # members with no time of their own (e.g. mod_zip lists): the app's date stands
        app_date = next((v for k, v in app_headers if k.lower() == "last-modified"), None)
        parsed_date = parse_date(app_date)
        modified = parsed_date.timestamp() if parsed_date is not None else None
    if modified is not None:
        last_modified = http_date(max(0, int(modified)))
        headers.append(("Last-Modified", last_modified))
    if rangeable:
        headers.append(("Accept-Ranges", "bytes"))
    # proxies such as nginx would otherwise buffer the whole stream before sending it
    headers.append(("X-Accel-Buffering", "no"))

    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            return Reply(304, _not_modified(headers))
    else:
        ims = parse_date(request_headers.get("if-modified-since"))
        if ims is not None and modified is not None and int(modified) <= ims.timestamp():
            return Reply(304, _not_modified(headers))

    headers.append(("Content-Disposition", content_disposition(download.filename)))
    send = method != "HEAD"
    span = (0, size)
    status = 200
    range_header = request_headers.get("range")
    if range_header is not None and rangeable:
        if_range = request_headers.get("if-range")
        fresh = True
        if if_range is not None:
            parsed = parse_if_range_header(if_range)
            if parsed.etag is not None:
                # strong comparison (RFC 9110 13.1.5): a weak validator never matches, and
                # werkzeug's parser drops the W/ prefix, so look at the raw value
                weak = if_range.lstrip().startswith(("W/", "w/"))
                fresh = not weak and parsed.etag == download.fingerprint
            elif parsed.date is not None and last_modified is not None:
                fresh = http_date(parsed.date) == last_modified
            else:
                fresh = False
        ranges = parse_range_header(range_header) if fresh else None
        # another unit than bytes is ignored (RFC 9110 14.2), so are several ranges
        if ranges is not None and ranges.units == "bytes" and len(ranges.ranges) == 1:
            bounds = ranges.range_for_length(size)
            if _EMPTY_SUFFIX.fullmatch(range_header):
                bounds = None  # "-0" asks for no byte at all; werkzeug reads it as "0-"
            if bounds is None:
                headers.append(("Content-Range", f"bytes */{size}"))
                headers.append(("Content-Type", "text/plain; charset=utf-8"))
                body = b"Requested range not satisfiable\n"
                headers.append(("Content-Length", str(len(body))))
                return Reply(416, headers, body=body if send else b"")
            span = bounds
            status = 206
            headers.append(("Content-Range", f"bytes {span[0]}-{span[1] - 1}/{size}"))
    headers.append(("Content-Type", "application/zip"))
    headers.append(("Content-Length", str(span[1] - span[0])))
    return Reply(
        status,
        headers,
        span=span if send else None,
        complete=send and span == (0, size),
    )
