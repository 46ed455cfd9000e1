"""URL sources against a real HTTP server on loopback (the standard library's)."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import zipfile
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from zipware import Archive, Member, SourceError, URLSource
from zipware.sources import SourceFetchError, redact_url

BLOBS = {"/a.bin": os.urandom(700_000), "/small.txt": b"small file\n"}


class Handler(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        Handler.requests.append((self.path, dict(self.headers.items())))
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", path[len("/redirect") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/dies":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        body = BLOBS.get(path.removeprefix("/norange"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not path.startswith("/norange"):
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def read(source: URLSource, offset: int = 0) -> bytes:
    return b"".join(source.iter_chunks(offset))


async def aread(source: URLSource, offset: int = 0) -> bytes:
    return b"".join([c async for c in source.aiter_chunks(offset)])


def test_sync_and_async_reads_with_offsets(server: str) -> None:
    data = BLOBS["/a.bin"]
    source = URLSource(f"{server}/a.bin", headers={"Authorization": "Bearer secret"})
    assert read(source) == data
    assert read(source, 123_457) == data[123_457:]
    assert asyncio.run(aread(source)) == data
    assert asyncio.run(aread(source, 99)) == data[99:]
    headers = Handler.requests[-1][1]
    assert headers["Range"] == "bytes=99-"
    assert headers["Accept-Encoding"] == "identity"
    assert headers["Authorization"] == "Bearer secret"


def test_a_server_that_ignores_range_is_skipped_over(server: str) -> None:
    data = BLOBS["/a.bin"]
    source = URLSource(f"{server}/norange/a.bin")
    assert read(source, 300_001) == data[300_001:]
    assert asyncio.run(aread(source, 300_001)) == data[300_001:]


def test_the_url_is_resolved_when_opened(server: str) -> None:
    calls: list[int] = []

    def sign() -> str:
        calls.append(1)
        return f"{server}/small.txt?signature=abc"

    async def asign() -> str:
        calls.append(2)
        return f"{server}/small.txt?signature=abc"

    source = URLSource(sign)
    archive = Archive([Member("s.txt", size=11, source=source)])
    assert calls == []
    data = b"".join(archive)
    assert calls == [1]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("s.txt") == b"small file\n"
    assert asyncio.run(aread(URLSource(asign))) == b"small file\n"
    assert calls == [1, 2]


def test_redirects_are_followed_and_checked(server: str) -> None:
    assert read(URLSource(f"{server}/redirect/small.txt")) == b"small file\n"
    seen: list[str] = []

    def allow_local(url: str) -> None:
        seen.append(url)
        if not url.startswith(server):
            raise PermissionError(f"{redact_url(url)} is not allowed")

    with pytest.raises(PermissionError):
        read(URLSource(f"{server}/away", check_url=allow_local))
    assert seen == [f"{server}/away", "http://127.0.0.2:9/elsewhere"]
    with pytest.raises(PermissionError):
        asyncio.run(aread(URLSource(f"{server}/away", check_url=allow_local)))


def test_http_errors_and_broken_bodies_fail_the_archive(server: str) -> None:
    with pytest.raises(SourceFetchError, match="HTTP 404"):
        read(URLSource(f"{server}/missing?token=secret"))
    archive = Archive([Member("m", size=10, source=URLSource(f"{server}/missing?token=s3cr3t"))])
    with pytest.raises(SourceError) as info:
        b"".join(archive)
    assert "s3cr3t" not in str(info.value) and "404" in str(info.value)
    dies = Archive([Member("d", size=1_000_000, source=URLSource(f"{server}/dies"))])
    with pytest.raises(SourceError):
        b"".join(dies)

    async def run() -> None:
        async for _ in Archive([Member("d", size=1_000_000, source=URLSource(f"{server}/dies"))]):
            pass

    with pytest.raises(SourceError):
        asyncio.run(run())


def test_a_shared_client_is_used_and_left_open(server: str) -> None:
    data = BLOBS["/a.bin"]
    with httpx.Client() as client:
        members = [
            Member(f"m{i}", size=len(data), source=URLSource(f"{server}/a.bin", client=client))
            for i in range(3)
        ]
        out = b"".join(Archive(members))
        assert not client.is_closed
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert all(zlib.crc32(zf.read(f"m{i}")) == zlib.crc32(data) for i in range(3))


def test_redact_url() -> None:
    assert (
        redact_url("https://user:pw@cdn.example.com:8443/a/b.jpg?X-Amz-Signature=abc#f")
        == "https://cdn.example.com:8443/a/b.jpg"
    )
    assert URLSource("https://h/p?sig=1").describe() == "https://h/p"
