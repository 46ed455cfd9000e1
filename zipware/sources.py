"""Where a member's bytes come from.

A :class:`Source` is a recipe, not an open handle: nothing is opened when it is made. The
encoder calls :meth:`Source.iter_chunks` (or :meth:`Source.aiter_chunks`) just before the
member's data and closes the iterator right after, on every path (end, error, early close),
so an archive of 100,000 files never holds more than one of them open.

Sources yield the member's bytes from ``offset`` on; the encoder counts them and checks the
CRC, so a source need not know the size it was declared with.
"""

from __future__ import annotations

import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread

from .errors import ZipwareError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AsyncIterSource",
    "BytesSource",
    "FileSource",
    "IterSource",
    "Source",
    "URLSource",
    "redact_url",
]

READ_SIZE = 256 * 1024  # large enough to amortise per-call costs, small enough per download

_END = object()


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

    async def aiter_chunks(self, offset: int = 0) -> AsyncGenerator[bytes, None]:
        """Async form of :meth:`iter_chunks`; blocking work runs in a worker thread."""
        it = self.iter_chunks(offset)
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(next, it, _END)
                if chunk is _END:
                    return
                yield chunk  # type: ignore[misc]
        finally:
            await anyio.to_thread.run_sync(it.close)

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
