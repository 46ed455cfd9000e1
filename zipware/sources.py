"""Where a member's bytes come from.

A :class:`Source` is a recipe, not an open handle: nothing is opened when it is made. The
encoder calls :meth:`Source.iter_chunks` (or :meth:`Source.aiter_chunks`) just before the
member's data and closes the iterator right after, on every path (end, error, early close),
so an archive of 100,000 files never holds more than one of them open.

Sources yield the member's bytes from ``offset`` on; the encoder counts them and checks the
CRC, so a source need not know the size it was declared with.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread

from .errors import ZipwareError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AsyncIterSource",
    "BytesSource",
    "FSSpecSource",
    "FileSource",
    "IterSource",
    "ObjectChangedError",
    "ObjectInfo",
    "Source",
    "URLSource",
    "redact_uri",
    "redact_url",
    "split_uri",
]

READ_SIZE = 256 * 1024  # large enough to amortise per-call costs, small enough per download

_END = object()


async def in_thread(chunks: Generator[bytes, None, None]) -> AsyncGenerator[bytes, None]:
    """``chunks`` advanced one step at a time in a worker thread, so that blocking reads
    (and whatever else each step does) never stall an event loop; closed there too."""
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, _END)
            if chunk is _END:
                return
            yield chunk  # type: ignore[misc]
    finally:
        await anyio.to_thread.run_sync(chunks.close)


class Source:
    """Base class of member sources. Subclasses implement :meth:`iter_chunks`.

    :meth:`aiter_chunks` defaults to running :meth:`iter_chunks` in a worker thread one
    chunk at a time, so blocking reads never stall an event loop; sources with a native
    async client override it.
    """

    __slots__ = ()

    def iter_chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        """Yield the bytes from ``offset`` on. Opened at the first ``next()``."""
        raise NotImplementedError

    def aiter_chunks(self, offset: int = 0) -> AsyncGenerator[bytes, None]:
        """Async form of :meth:`iter_chunks`; blocking work runs in a worker thread."""
        return in_thread(self.iter_chunks(offset))

    def describe(self) -> str:
        """A short description for logs and errors, with no secrets in it."""
        return type(self).__name__


class FileSource(Source):
    """A local file, opened only when its data is due."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def iter_chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        # unbuffered: reads go straight into fresh bytes objects, no second copy
        with open(self.path, "rb", buffering=0) as f:
            if offset:
                f.seek(offset)
            read = f.read
            while chunk := read(READ_SIZE):
                yield chunk

    def describe(self) -> str:
        return f"file {self.path}"

    def __repr__(self) -> str:
        return f"FileSource({self.path!r})"


class BytesSource(Source):
    """Bytes already in memory."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)

    def iter_chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        data = self.data
        if offset == 0 and len(data) <= READ_SIZE:
            if data:
                yield data
            return
        view = memoryview(data)
        for i in range(offset, len(data), READ_SIZE):
            yield bytes(view[i : i + READ_SIZE])

    async def aiter_chunks(self, offset: int = 0) -> AsyncGenerator[bytes, None]:
        for chunk in self.iter_chunks(offset):
            yield chunk

    def describe(self) -> str:
        return f"{len(self.data)} bytes in memory"


def _skip(chunks: Iterator[bytes], offset: int) -> Iterator[bytes]:
    for chunk in chunks:
        if offset >= len(chunk):
            offset -= len(chunk)
            continue
        yield chunk[offset:] if offset else chunk
        offset = 0


class IterSource(Source):
    """A sync iterable of byte chunks, e.g. a generator. It can be consumed once.

    The member's ``size`` must be declared; an offset skips bytes (they are still read).
    """

    __slots__ = ("iterable",)

    def __init__(self, iterable: Iterable[bytes]) -> None:
        self.iterable = iterable

    def iter_chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        it = iter(self.iterable)
        try:
            yield from _skip(it, offset) if offset else it
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def describe(self) -> str:
        return "an iterator"


class AsyncIterSource(Source):
    """An async iterable of byte chunks; usable only by the async encoder. Consumed once."""

    __slots__ = ("iterable",)

    def __init__(self, iterable: AsyncIterable[bytes]) -> None:
        self.iterable = iterable

    def iter_chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        raise ZipwareError("an async iterator source can only be streamed asynchronously")

    async def aiter_chunks(self, offset: int = 0) -> AsyncGenerator[bytes, None]:
        it = aiter(self.iterable)
        try:
            async for chunk in it:
                if offset >= len(chunk):
                    offset -= len(chunk)
                    continue
                yield chunk[offset:] if offset else chunk
                offset = 0
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    def describe(self) -> str:
        return "an async iterator"


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to log (signatures live there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address keeps its brackets
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class SourceFetchError(ZipwareError, OSError):
    """An HTTP source answered with something other than the bytes asked for."""


class URLSource(Source):
    """An HTTP(S) URL fetched with httpx, sync or async.

    ``url`` may be a callable (sync or async) called at open time, so a signed URL is made
    just before it is used and cannot expire while earlier members stream. Reading from an
    offset sends ``Range: bytes=OFFSET-``; a server that ignores it is handled by skipping.
    Redirects are followed up to ``max_redirects``; each target is passed to ``check_url``
    first (the safety policy raises there to refuse a redirect that leaves the allow-list).
    ``headers`` are sent with the request and never appear in errors or logs.
    """

    __slots__ = (
        "async_client",
        "check_url",
        "client",
        "headers",
        "max_redirects",
        "timeout",
        "url",
    )

    def __init__(
        self,
        url: str | Callable[[], Any],
        *,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        check_url: Callable[[str], None] | None = None,
        max_redirects: int = 5,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.client = client
        self.async_client = async_client
        self.check_url = check_url
        self.max_redirects = max_redirects
        self.timeout = timeout

    def _headers(self, offset: int) -> dict[str, str]:
        # identity: the bytes counted and CRC'd must be the resource itself
        headers = {"Accept-Encoding": "identity", **self.headers}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return headers

    def _check(self, url: str) -> None:
        if self.check_url is not None:
            self.check_url(url)

    def _skip_for(self, response: httpx.Response, offset: int, url: str) -> int:
        """How many leading bytes of the body to drop; raises on an unusable answer."""
        status = response.status_code
        if offset and status == 206:
            first = response.headers.get("content-range", "").partition(" ")[2].partition("-")[0]
            if first != str(offset):
                raise SourceFetchError(f"{redact_url(url)} answered a range from {first!r}")
            return 0
        if status == 200:
            return offset
        raise SourceFetchError(f"HTTP {status} from {redact_url(url)}")

    def iter_chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        import httpx

        url = self.url() if callable(self.url) else self.url
        if not isinstance(url, str):
            raise ZipwareError("a URL callback for a sync stream must return a str")
        own = self.client is None
        client = httpx.Client(timeout=self.timeout) if own else self.client
        assert client is not None
        try:
            for _ in range(self.max_redirects + 1):
                self._check(url)
                request = client.build_request("GET", url, headers=self._headers(offset))
                response = client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.next_request is not None:
                        url = str(response.next_request.url)
                        continue
                    skip = self._skip_for(response, offset, url)
                    chunks = response.iter_bytes(READ_SIZE)
                    yield from _skip(chunks, skip) if skip else chunks
                    return
                finally:
                    response.close()
            raise SourceFetchError(f"too many redirects from {redact_url(url)}")
        finally:
            if own:
                client.close()

    async def aiter_chunks(self, offset: int = 0) -> AsyncGenerator[bytes, None]:
        import httpx

        url = self.url() if callable(self.url) else self.url
        if not isinstance(url, str):
            url = await url
        own = self.async_client is None
        client = httpx.AsyncClient(timeout=self.timeout) if own else self.async_client
        assert client is not None
        try:
            for _ in range(self.max_redirects + 1):
                self._check(url)
                request = client.build_request("GET", url, headers=self._headers(offset))
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.next_request is not None:
                        url = str(response.next_request.url)
                        continue
                    skip = self._skip_for(response, offset, url)
                    async for data in response.aiter_bytes(READ_SIZE):
                        if skip:
                            if skip >= len(data):
                                skip -= len(data)
                                continue
                            data = data[skip:]  # noqa: PLW2901 - drop what the server resent
                            skip = 0
                        yield data
                    return
                finally:
                    await response.aclose()
            raise SourceFetchError(f"too many redirects from {redact_url(url)}")
        finally:
            if own:
                await client.aclose()

    def _stat_of(self, response: httpx.Response, url: str) -> tuple[int, float | None]:
        from email.utils import parsedate_to_datetime

        if response.status_code != 200:
            raise SourceFetchError(f"HTTP {response.status_code} from {redact_url(url)}")
        length = response.headers.get("content-length")
        if length is None or not length.isdigit():
            raise SourceFetchError(f"{redact_url(url)} gave no Content-Length; declare size")
        mtime = None
        modified = response.headers.get("last-modified")
        if modified:
            try:
                mtime = parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError):
                mtime = None
        return int(length), mtime

    def stat(self) -> tuple[int, float | None]:
        """Size and Last-Modified (Unix seconds, or None) from a HEAD request."""
        import httpx

        url = self.url() if callable(self.url) else self.url
        if not isinstance(url, str):
            raise ZipwareError("a URL callback for a sync stat must return a str")
        own = self.client is None
        client = httpx.Client(timeout=self.timeout) if own else self.client
        assert client is not None
        try:
            for _ in range(self.max_redirects + 1):
                self._check(url)
                request = client.build_request("HEAD", url, headers=self._headers(0))
                response = client.send(request, follow_redirects=False)
                if response.next_request is not None:
                    url = str(response.next_request.url)
                    continue
                return self._stat_of(response, url)
            raise SourceFetchError(f"too many redirects from {redact_url(url)}")
        finally:
            if own:
                client.close()

    async def astat(self) -> tuple[int, float | None]:
        """Async form of :meth:`stat`."""
        import httpx

        url = self.url() if callable(self.url) else self.url
        if not isinstance(url, str):
            url = await url
        own = self.async_client is None
        client = httpx.AsyncClient(timeout=self.timeout) if own else self.async_client
        assert client is not None
        try:
            for _ in range(self.max_redirects + 1):
                self._check(url)
                request = client.build_request("HEAD", url, headers=self._headers(0))
                response = await client.send(request, follow_redirects=False)
                if response.next_request is not None:
                    url = str(response.next_request.url)
                    continue
                return self._stat_of(response, url)
            raise SourceFetchError(f"too many redirects from {redact_url(url)}")
        finally:
            if own:
                await client.aclose()

    def describe(self) -> str:
        return "URL (resolved at open time)" if callable(self.url) else redact_url(self.url)


# -- object storage through fsspec -----------------------------------------------------------

OBJECT_BLOCK_SIZE = 4 * 1024 * 1024  # one ranged GET per block: few round trips, bounded memory

_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]+)(?:/(.*))?", re.DOTALL)
_USERINFO = re.compile(r"(\w[\w+.-]*://)[^/@\s]+@")
# storage option names whose values are credentials (s3fs, gcsfs, adlfs, botocore config)
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|sas|signature|auth", re.IGNORECASE)
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY")


def split_uri(uri: str) -> tuple[str, str, str]:
    """``protocol://bucket/key`` as ``(protocol, bucket, key)``; the protocol lower-cased.

    Raises ValueError if ``uri`` has no protocol or no bucket. The key may be empty.
    """
    m = _URI.fullmatch(uri)
    if m is None:
        raise ValueError(f"{redact_uri(uri)!r} is not of the form protocol://bucket/key")
    return m.group(1).lower(), m.group(2), m.group(3) or ""


def redact_uri(uri: str) -> str:
    """The URI without user info, query or fragment: safe to log."""
    return _USERINFO.sub(r"\1", uri).partition("?")[0].partition("#")[0]


def _secrets(options: Mapping[str, Any] | None) -> list[str]:
    found = [os.environ.get(name, "") for name in _SECRET_ENV]

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or bool(_SECRET_NAME.search(str(k))))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, secret)
        elif secret and isinstance(value, str):
            found.append(value)

    walk(options or {}, False)
    # short values ("testing", a region) would mangle messages and protect nothing
    return sorted((s for s in found if len(s) >= 8), key=len, reverse=True)


def scrub(text: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """``text`` without the credentials of ``storage_options`` or the environment in it."""
    text = _USERINFO.sub(r"\1", text)
    for secret in _secrets(storage_options):
        text = text.replace(secret, "***")
    return text


def explain_object_error(
    exc: BaseException,
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    action: str = "read",
) -> str:
    """What went wrong when ``action`` ("read", "write") ``uri``, with no credential in it."""
    where = redact_uri(uri)
    detail = scrub(str(exc), storage_options)
    if isinstance(exc, ObjectChangedError):
        return detail
    if isinstance(exc, FileNotFoundError):
        # s3fs gives the path for a missing key, the reason for a missing bucket
        extra = "" if not detail or detail in uri else f" ({detail})"
        if action != "read":
            return f"cannot {action} {where}{': ' + detail if extra else ''}"
        return f"object {where} does not exist{extra}"
    if isinstance(exc, IsADirectoryError):
        return f"{where} is a folder, not an object"
    if isinstance(exc, PermissionError):
        return (
            f"access to {where} denied ({detail or 'forbidden'}): check the credentials, "
            "the endpoint and the bucket's policy"
        )
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return f"no usable credentials to {action} {where} ({detail})"
    if isinstance(exc, ImportError):
        hint = " (pip install 'zipware[s3]')" if where.lower().startswith(("s3:", "s3a:")) else ""
        return f"cannot {action} {where}: {detail}{hint}"
    return f"cannot {action} {where}: {type(exc).__name__}: {detail}"


class ObjectChangedError(SourceFetchError):
    """An object is no longer the one found when the archive was prepared (its ETag changed)."""


class ObjectInfo(NamedTuple):
    """What one metadata request says about an object."""

    size: int
    mtime: float | None  # Unix seconds
    etag: str | None
    version: str | None


def _timestamp(value: object) -> float | None:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return _timestamp(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def object_info(info: Mapping[str, Any], uri: str) -> ObjectInfo:
    """An fsspec ``info()`` dict (s3fs, gcsfs, adlfs, memory...) as an :class:`ObjectInfo`."""
    if info.get("type", "file") != "file":
        raise IsADirectoryError(uri)
    size = info.get("size")
    if not isinstance(size, int) or size < 0:
        raise SourceFetchError(f"{redact_uri(uri)} has no size in its metadata")
    mtime = None
    for name in ("LastModified", "last_modified", "mtime", "updated", "created"):
        mtime = _timestamp(info.get(name))
        if mtime is not None:
            break
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    version = info.get("VersionId") or info.get("generation") or info.get("version_id")
    return ObjectInfo(
        size,
        mtime,
        str(etag) if etag else None,
        str(version) if version else None,
    )


def filesystem(protocol: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``protocol`` (fsspec keeps one instance per options)."""
    import fsspec

    return fsspec.filesystem(protocol, **(storage_options or {}))


class FSSpecSource(Source):
    """An object in object storage (``s3://bucket/key``...) read through fsspec.

    ``fs`` is an fsspec filesystem (s3fs's ``S3FileSystem`` for ``s3://``); by default the
    one fsspec makes for the URI's protocol with ``storage_options`` (credentials, endpoint,
    region: ``{"client_kwargs": {"endpoint_url": ...}}`` for s3fs), else the standard
    environment and configuration files. Nothing is opened before the data is due.

    Bytes are read by ranged GETs of ``block_size`` bytes from ``offset`` on, with no
    read-ahead cache: one block per open member is all the memory it takes.

    ``etag`` and ``size`` are what :func:`~zipware.prepare.prepare` found. With both, s3fs
    reads without a new metadata request: every GET carries ``If-Match: <etag>``, so an
    object changed since fails with :class:`ObjectChangedError`, whatever its size. Otherwise
    (or with another filesystem) opening costs one metadata request, whose ETag must still be
    ``etag`` when one is given; s3fs pins the GETs to that one.
    """

    __slots__ = ("block_size", "etag", "fs", "path", "size", "storage_options", "uri")

    def __init__(
        self,
        uri: str,
        fs: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        *,
        block_size: int = OBJECT_BLOCK_SIZE,
        etag: str | None = None,
        size: int | None = None,
    ) -> None:
        _, bucket, key = split_uri(uri)
        if not key:
            raise ValueError(f"{redact_uri(uri)} names a bucket, not an object")
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.uri = uri
        # the bucket/key path fsspec's filesystems take; never a chained URL ("a::b")
        self.path = f"{bucket}/{key}"
        self.fs = fs
        self.storage_options = dict(storage_options or {})
        self.block_size = block_size
        self.etag = etag
        self.size = size

    def filesystem(self) -> Any:
        """The fsspec filesystem the object is read with."""
        if self.fs is None:
            self.fs = filesystem(split_uri(self.uri)[0], self.storage_options)
        return self.fs

    def stat(self) -> ObjectInfo:
        """Size, mtime, ETag and version from one metadata request (HEAD for S3).

        The filesystem's listings cache is dropped for the object first: an earlier listing
        by the same (shared) filesystem instance must not stand in for its current state.
        """
        fs = self.filesystem()
        fs.invalidate_cache(self.path)
        return object_info(fs.info(self.path), self.uri)

    def _open(self) -> Any:
        fs = self.filesystem()
        # cache_type="none": each read is one ranged GET of what is asked, nothing kept
        options: dict[str, Any] = {"block_size": self.block_size, "cache_type": "none"}
        if self.etag is not None and self.size is not None:
            f = fs.open(self.path, "rb", size=self.size, **options)  # no metadata request
            pinned = getattr(f, "read_kw", None)  # s3fs >= 2024.12: the GETs' arguments
            if isinstance(pinned, dict):
                # what s3fs would otherwise fetch with a HEAD at the first read
                f.details = {
                    "name": self.path,
                    "size": self.size,
                    "type": "file",
                    "ETag": self.etag,
                }
                f.read_kw = {**pinned, "IfMatch": self.etag}
                return f
            f.close()  # no way to pin this filesystem's reads: ask for the metadata
        f = fs.open(self.path, "rb", **options)
        details = getattr(f, "details", None)
        if self.etag is not None and isinstance(details, Mapping):
            now = details.get("ETag") or details.get("etag")
            if now and now != self.etag:
                f.close()
                raise ObjectChangedError(
                    f"{redact_uri(self.uri)} changed after the archive was prepared "
                    f"(ETag {now}, was {self.etag})"
                )
        return f

    def iter_chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        try:
            f = self._open()
        except ObjectChangedError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        try:
            if offset:
                f.seek(offset)
            read = f.read
            size = self.block_size
            while True:
                try:
                    chunk = read(size)
                except Exception as exc:
                    raise self._error(exc) from exc
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

    def _error(self, exc: Exception) -> SourceFetchError:
        if type(exc).__name__ == "FileExpired":  # s3fs: the If-Match of a GET failed
            when = "while it was read" if self.etag is None else "after the archive was prepared"
            return ObjectChangedError(f"{redact_uri(self.uri)} changed {when} (ETag differs)")
        return SourceFetchError(explain_object_error(exc, self.uri, self.storage_options))

    def describe(self) -> str:
        return f"object {redact_uri(self.uri)}"

    def __repr__(self) -> str:
        return f"FSSpecSource({redact_uri(self.uri)!r})"
