"""The I/O-free HTTP decisions: trigger, headers, conditionals, Range, CRC cache."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest
from werkzeug.http import http_date

from zipware.http import CRCCache, content_disposition, decide, error_reply, is_manifest
from zipware.policy import Policy
from zipware.prepare import Download, prepare


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_bytes(b"alpha\n" * 1000)
    (tmp_path / "b.bin").write_bytes(os.urandom(5000))
    os.utime(tmp_path / "a.txt", (1_700_000_000, 1_700_000_000))
    os.utime(tmp_path / "b.bin", (1_700_000_100, 1_700_000_100))
    return tmp_path


def download(root: Path, *, crcs: bool) -> Download:
    entries: list[dict[str, object]] = [
        {"name": "a.txt", "path": "a.txt"},
        {"name": "b.bin", "path": "b.bin"},
        {"name": "n.txt", "text": "note"},
    ]
    if crcs:
        for e in entries[:2]:
            e["crc32"] = zlib.crc32((root / str(e["path"])).read_bytes())
    manifest = {"version": 1, "filename": "Fotos 2024 · été.zip", "entries": entries}
    return prepare(json.dumps(manifest), Policy(roots=[str(root)]))


def headers_of(reply: object) -> dict[str, str]:
    return {k.lower(): v for k, v in reply.headers}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, [("X-Zip-Manifest", "1")], True),
        (200, [("x-zip-manifest", "1")], True),
        (200, [("Content-Type", "application/vnd.zipware.manifest+json; charset=utf-8")], True),
        (200, [("Content-Type", "application/json")], False),
        (201, [("X-Zip-Manifest", "1")], False),
        (404, [("Content-Type", "application/vnd.zipware.manifest+json")], False),
        (200, [], False),
    ],
)
def test_trigger(status: int, headers: list[tuple[str, str]], expected: bool) -> None:
    assert is_manifest(status, headers) is expected


def test_content_disposition() -> None:
    assert content_disposition("plain.zip") == 'attachment; filename="plain.zip"'
    value = content_disposition('été "x".zip')
    assert value.startswith('attachment; filename="_t_ _x_.zip"; ')
    assert value.endswith("filename*=UTF-8''%C3%A9t%C3%A9%20%22x%22.zip")


def test_full_response_headers(root: Path) -> None:
    d = download(root, crcs=True)
    reply = decide(
        d,
        method="GET",
        request_headers={},
        app_headers=[
            ("Set-Cookie", "s=1"),
            ("Cache-Control", "private"),
            ("Content-Length", "123"),
            ("X-Zip-Manifest", "1"),
            ("Content-Type", "application/json"),
        ],
    )
    h = headers_of(reply)
    assert reply.status == 200 and reply.span == (0, d.size) and reply.complete
    assert h["content-length"] == str(d.size)
    assert h["content-type"] == "application/zip"
    assert h["etag"] == f'"{d.fingerprint}"'
    assert h["last-modified"] == http_date(1_700_000_100)
    assert h["accept-ranges"] == "bytes"
    assert h["x-accel-buffering"] == "no"
    assert h["set-cookie"] == "s=1" and h["cache-control"] == "private"
    assert "x-zip-manifest" not in h
    assert [k for k, _ in reply.headers].count("Content-Length") == 1
    assert "filename*=UTF-8''Fotos%202024%20%C2%B7%20%C3%A9t%C3%A9.zip" in h["content-disposition"]


def test_head_has_the_headers_and_no_span(root: Path) -> None:
    d = download(root, crcs=True)
    get = decide(d, method="GET", request_headers={})
    head = decide(d, method="HEAD", request_headers={})
    assert head.headers == get.headers and head.span is None and not head.complete


def test_conditionals(root: Path) -> None:
    d = download(root, crcs=True)
    etag = f'"{d.fingerprint}"'
    assert decide(d, method="GET", request_headers={"if-none-match": etag}).status == 304
    assert decide(d, method="GET", request_headers={"if-none-match": f'"x", {etag}'}).status == 304
    assert decide(d, method="GET", request_headers={"if-none-match": "*"}).status == 304
    assert decide(d, method="GET", request_headers={"if-none-match": '"other"'}).status == 200
    later = http_date(1_800_000_000)
    earlier = http_date(1_600_000_000)
    assert decide(d, method="GET", request_headers={"if-modified-since": later}).status == 304
    assert decide(d, method="GET", request_headers={"if-modified-since": earlier}).status == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    both = {"if-none-match": '"other"', "if-modified-since": later}
    assert decide(d, method="GET", request_headers=both).status == 200


def test_ranges(root: Path) -> None:
    d = download(root, crcs=True)
    size = d.size
    etag = f'"{d.fingerprint}"'

    def ask(**headers: str) -> tuple[int, tuple[int, int] | None, dict[str, str]]:
        reply = decide(d, method="GET", request_headers=headers)
        return reply.status, reply.span, headers_of(reply)

    status, span, h = ask(range="bytes=0-1")
    assert (status, span, h["content-range"], h["content-length"]) == (
        206,
        (0, 2),
        f"bytes 0-1/{size}",
        "2",
    )
    assert ask(range="bytes=-10")[1] == (size - 10, size)
    assert ask(range=f"bytes=100-{size + 50}")[1] == (100, size)
    status, span, h = ask(range=f"bytes={size}-")
    assert status == 416 and h["content-range"] == f"bytes */{size}" and span is None
    assert ask(range="bytes=oops")[:2] == (200, (0, size))
    assert ask(range="bytes=0-1,5-9")[:2] == (200, (0, size))  # several: the whole archive
    assert ask(range="bytes=5-9", **{"if-range": etag})[0] == 206
    assert ask(range="bytes=5-9", **{"if-range": '"stale"'})[:2] == (200, (0, size))
    assert ask(range="bytes=5-9", **{"if-range": f"W/{etag}"})[0] == 200  # weak never matches
    assert ask(range="bytes=5-9", **{"if-range": http_date(1_700_000_100)})[0] == 206
    assert ask(range="bytes=5-9", **{"if-range": http_date(1_700_000_101)})[0] == 200
    assert ask(range="bytes=5-9", **{"if-range": "garbage"})[0] == 200


def test_no_ranges_without_crcs_until_the_cache_knows_them(root: Path) -> None:
    d = download(root, crcs=False)
    reply = decide(d, method="GET", request_headers={"range": "bytes=0-1"})
    assert reply.status == 200 and "accept-ranges" not in headers_of(reply)
    cache = CRCCache()
    b"".join(d.archive)  # a complete download computes the CRCs
    cache.learn(d)
    assert len(cache) == 2  # the two files; the text's CRC was known anyway
    fresh = download(root, crcs=False)
    assert decide(fresh, method="GET", request_headers={"range": "bytes=0-1"}).status == 200
    cache.fill(fresh)
    reply = decide(fresh, method="GET", request_headers={"range": "bytes=0-1"})
    assert reply.status == 206 and headers_of(reply)["accept-ranges"] == "bytes"
    assert fresh.fingerprint == d.fingerprint  # learning CRCs never changes the ETag
    # a changed file is another key: its CRC is not reused
    (root / "a.txt").write_bytes(b"beta\n" * 1200)
    changed = download(root, crcs=False)
    cache.fill(changed)
    assert changed.archive.missing_crcs() == [0]


def test_crc_cache_is_bounded(root: Path) -> None:
    cache = CRCCache(max_entries=1)
    d = download(root, crcs=False)
    b"".join(d.archive)
    cache.learn(d)
    assert len(cache) == 1


def test_error_reply() -> None:
    reply = error_reply("invalid manifest (2 problem(s); see the server log)")
    h = headers_of(reply)
    assert reply.status == 500 and reply.span is None
    assert h["content-type"].startswith("text/plain")
    assert h["content-length"] == str(len(reply.body))
    assert reply.body.startswith(b"zipware: invalid manifest")
