"""The proxy, end to end over loopback: a client, the proxy under uvicorn, a real upstream.

Every server is a subprocess on a free port (tests/proxy_harness.py), started once per
module and stopped and reaped at the end; when a test fails, what the servers wrote
meanwhile is added to the report. The upstream is tests/proxy_upstream.py, a backend that
knows nothing of zipware: static files with Range, zipware manifests, nginx mod_zip lists
and a few endpoints that misbehave on purpose. The proxy is started as documented:
``uvicorn --factory zipware.proxy:app_from_environment`` with ``ZIPWARE_PROXY_CONFIG``.

The mod_zip section ports the scenarios of mod_zip's own suite (evanmiller/mod_zip,
``t/ziptest.pl`` and its lists in ``t/nginx/html``): the same files, lists and ranges,
with the byte offsets read from the archive (zipware's layout differs from mod_zip's, so
mod_zip's fixed offsets do not apply). Where zipware answers differently on purpose, the
test says so.

Then the Node.js example (examples/node-backend) behind the proxy, and the nginx example
(examples/nginx) in front of both: these need ``node`` and ``nginx``, and are skipped when
those are missing, unless ``CI`` is set, where they fail.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import http.client
import io
import json
import os
import pwd
import shutil
import struct
import sys
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.register_assert_rewrite("proxy_harness")  # before the import: it is a plugin too
from proxy_harness import (  # noqa: E402
    HOST,
    REPO,
    TESTS,
    Proc,
    free_port,
    proxy_argv,
    python_env,
    start_all,
    uvicorn_argv,
)

try:
    import readers
except ImportError:  # pragma: no cover - the matrix is another module's; optional here
    readers = None  # type: ignore[assignment]

pytest_plugins = ("proxy_harness",)

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="process groups and signals: POSIX"),
    pytest.mark.timeout(120),
]

REQUEST_TIMEOUT = 30.0
SAMPLES = Path(str(files("zipware") / "samples"))

# mod_zip's t/nginx/html files, their CRCs (from its lists) and its lists' Last-Modified
FILE1 = b"This is the first file.\n"
FILE2 = b"This is the second file.\n"
CRC1 = 0x1A6349C5
CRC2 = 0x5D70C4D3
LIST_LAST_MODIFIED = "Wed, 15 Nov 1995 04:58:08 GMT"
LARGE = (b"X" * 99 + b"\n") * 100_000  # mod_zip's largefile.txt, 10,000,000 bytes
LARGE_CRC = 0xA052E423

# mod_zip's lists, as in its t/nginx/html (zip-many-files.txt is written out below)
LISTS = {
    "zip.txt": "1a6349c5 24 /file1.txt file1.txt\n5d70c4d3 25 /file2.txt file2.txt\n",
    "zip-uppercase-crc.txt": "1A6349C5 24 /file1.txt file1.txt\n5D70C4d3 25 /file2.txt file2.txt\n",
    "zip-missing-crc.txt": "- 24 /file1.txt file1.txt\n5d70c4d3 25 /file2.txt file2.txt\n",
    "zip-404.txt": (
        "5d70c4d3 25 /file-does-not-exist.txt file2.txt\n1a6349c5 24 /file1.txt file1.txt\n"
    ),
    "zip-spaces.txt": (
        "1a6349c5 24 /file1%20with%20spaces.txt file1.txt\n5d70c4d3 25 /file2.txt file2.txt\n"
    ),
    "zip-spaces-plus.txt": (
        "1a6349c5 24 /file1%20with%20space%20%2B%20plus.txt file1.txt\n"
        "5d70c4d3 25 /file2.txt file2.txt\n"
    ),
    "zip-empty-dirs.txt": (
        "1a6349c5 24 /file1.txt file1.txt\n0        0  @directory empty_dir1/\n"
        "5d70c4d3 25 /file2.txt file2.txt\n0        0  @directory empty_dir2/\n"
    ),
    "zip-only-empty-dirs.txt": (
        "0        0  @directory empty_dir1/\n0        0  @directory empty_dir2/\n"
    ),
    "zip-large-file.txt": "a052e423 10000000 /largefile.txt largefile.txt\n",
    "zip-missing-size.txt": "1a6349c5 24 /file1.txt file1.txt\n5d70c4d3 - /file2.txt file2.txt\n",
    "zip-many-files.txt": "1a6349c5 24 /file1.txt file1.txt\n5d70c4d3 25 /file2.txt file2.txt\n"
    + "".join(f"1a6349c5 24 /file1.txt file{i}.txt\n" for i in range(3, 137)),
}

RANDOM = os.urandom(10 * 1024 * 1024)  # a 10 MB static file, passed through
MEMBER = os.urandom(1024 * 1024 + 17)  # a member of the zipware manifests
FILE2_MTIME = 1622548800  # 2021-06-01 12:00:00 UTC: found by the HEAD of a url entry
ABORT_SIZE = 4_000_000  # the upstream's /abort sends half of it, then hangs up


# -- the servers ---------------------------------------------------------------------------


@dataclass
class Stack:
    root: Path
    upstream: Proc
    proxy: Proc  # the proxy as deployed
    strict: Proc  # read_timeout 1 s, max_manifest_bytes 100, strip_conditionals
    down: Proc  # its upstream is a port nothing listens on


def _hex(crc: int) -> str:
    return f"{crc:08x}"


def write_upstream_files(root: Path, upstream_url: str) -> None:
    html, manifests, lists = root / "html", root / "manifests", root / "lists"
    for d in (html, manifests, lists):
        d.mkdir()
    (html / "file1.txt").write_bytes(FILE1)
    (html / "file2.txt").write_bytes(FILE2)
    os.utime(html / "file2.txt", (FILE2_MTIME, FILE2_MTIME))
    (html / "file1 with spaces.txt").write_bytes(FILE1)
    (html / "file1 with space + plus.txt").write_bytes(FILE1)
    (html / "largefile.txt").write_bytes(LARGE)
    (html / "random.bin").write_bytes(RANDOM)
    (html / "member.bin").write_bytes(MEMBER)
    for name, text in LISTS.items():
        (lists / name).write_text(text)
        stamp = parsedate_to_datetime(LIST_LAST_MODIFIED).timestamp()
        os.utime(lists / name, (stamp, stamp))  # as static files: mod_zip's Last-Modified

    def manifest(name: str, entries: list[dict[str, object]], **extra: object) -> None:
        doc = {"version": 1, **extra, "entries": entries}
        (manifests / name).write_text(json.dumps(doc))

    up = upstream_url
    manifest("basic.json", basic_entries(up), filename="bundle.zip")
    manifest("invalid.json", [{"name": "a.txt", "text": "x", "sise": 1}])
    (manifests / "not-json.json").write_text("this is not JSON\n")
    manifest("outside.json", [{"name": "a.txt", "url": "http://127.0.0.1:9/secret", "size": 3}])
    manifest(
        "missing-first.json",
        [
            {"name": "gone.txt", "url": f"{up}/no-such-file.txt", "size": 5},
            {"name": "file1.txt", "url": f"{up}/file1.txt", "size": 24},
        ],
    )
    manifest(
        "abort.json",
        [
            {"name": "first.txt", "text": "complete\n"},
            {"name": "member.bin", "url": f"{up}/member.bin", "size": len(MEMBER)},
            {"name": "cut.bin", "url": f"{up}/abort?size={ABORT_SIZE}", "size": ABORT_SIZE},
        ],
    )


def basic_entries(up: str) -> list[dict[str, object]]:
    return [
        {"name": "docs/"},
        {"name": "docs/file1.txt", "url": f"{up}/file1.txt", "size": 24, "crc32": _hex(CRC1)},
        # no size: a HEAD at prepare time, whose Last-Modified becomes the mtime
        {"name": "docs/file2.txt", "url": f"{up}/file2.txt", "crc32": _hex(CRC2)},
        {
            "name": "member.bin",
            "url": f"{up}/member.bin",
            "size": len(MEMBER),
            "crc32": _hex(zlib.crc32(MEMBER)),
        },
        {"name": "README.txt", "text": "Made by the zipware proxy.\n"},
        {"name": "data.bin", "data": base64.b64encode(b"\x00\x01\x02binary").decode()},
    ]


BASIC_LISTING = {
    "docs/": (0, 0),
    "docs/file1.txt": (24, CRC1),
    "docs/file2.txt": (25, CRC2),
    "member.bin": (len(MEMBER), zlib.crc32(MEMBER)),
    "README.txt": (27, zlib.crc32(b"Made by the zipware proxy.\n")),
    "data.bin": (9, zlib.crc32(b"\x00\x01\x02binary")),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("proxy")
    up_port, proxy_port, strict_port, down_port = (free_port() for _ in range(4))
    up_url = f"http://{HOST}:{up_port}"
    write_upstream_files(root, up_url)
    dead = f"http://{HOST}:{free_port()}"  # nothing listens there

    def proxy(name: str, port: int, config: dict[str, object]) -> Proc:
        env = python_env({"ZIPWARE_PROXY_CONFIG": json.dumps(config)})
        return Proc(name, proxy_argv(port), port=port, log=root / f"{name}.log", env=env)

    upstream = Proc(
        "upstream",
        uvicorn_argv("proxy_upstream:app", up_port, "--app-dir", str(TESTS), "--no-proxy-headers"),
        port=up_port,
        log=root / "upstream.log",
        env=python_env({"UPSTREAM_ROOT": str(root)}),
    )
    procs = [
        upstream,
        proxy("proxy", proxy_port, {"upstream": up_url, "read_timeout": 20, "connect_timeout": 5}),
        proxy(
            "strict proxy",
            strict_port,
            {
                "upstream": up_url,
                "read_timeout": 1.0,
                "strip_conditionals": True,
                "policy_options": {"max_manifest_bytes": 100},
            },
        ),
        proxy("proxy of nothing", down_port, {"upstream": dead, "connect_timeout": 2}),
    ]
    start_all(procs)
    try:
        yield Stack(root, *procs)
    finally:
        for p in procs:
            p.stop()


# -- HTTP helpers --------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


def fetch(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Answer:
    """One request on a fresh connection (http.client: it adds only Host and
    ``Accept-Encoding: identity``, and never decodes or follows anything)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, response.getheaders(), data)
    finally:
        conn.close()


def seen(stack: Stack, key: str) -> list[dict[str, object]]:
    """The requests the upstream received for ``key`` (path and query), oldest first."""
    answer = fetch(stack.upstream.port, "/_seen?key=" + quote(key, safe=""))
    return json.loads(answer.body)  # type: ignore[no-any-return]


def header_names(record: dict[str, object]) -> set[str]:
    return {k.lower() for k, _ in record["headers"]}  # type: ignore[attr-defined]


def header_value(record: dict[str, object], name: str) -> str | None:
    return next((v for k, v in record["headers"] if k.lower() == name), None)  # type: ignore[attr-defined]


def unique() -> str:
    return uuid.uuid4().hex[:12]


# -- ZIP helpers ---------------------------------------------------------------------------


def unzip(body: bytes) -> dict[str, bytes]:
    """Every member's bytes, read (and CRC-checked) by zipfile."""
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        return {info.filename: zf.read(info) for info in zf.infolist()}


def infos(body: bytes) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return {info.filename: info for info in zf.infolist()}


def offsets(body: bytes, name: str) -> tuple[int, int]:
    """Where ``name``'s local header starts and where its data starts."""
    start = infos(body)[name].header_offset
    signature, name_length, extra_length = (
        body[start : start + 4],
        *struct.unpack("<HH", body[start + 26 : start + 30]),
    )
    assert signature == b"PK\x03\x04"
    return start, start + 30 + name_length + extra_length


def etag_of(stack: Stack, path: str) -> str:
    etag = fetch(stack.proxy.port, path, method="HEAD").get("ETag")
    assert etag and etag.startswith('"')
    return etag


# -- pass-through: non-manifest responses ----------------------------------------------------


def test_static_file_passes_through_byte_identical(stack: Stack) -> None:
    direct = fetch(stack.upstream.port, "/random.bin")
    via = fetch(stack.proxy.port, "/random.bin")
    assert via.status == 200
    assert via.body == RANDOM
    for name in ("content-length", "content-type", "etag", "last-modified", "accept-ranges"):
        assert via.get(name) == direct.get(name), name


def test_static_range_reaches_the_upstream(stack: Stack) -> None:
    key = f"/random.bin?t={unique()}"
    answer = fetch(stack.proxy.port, key, headers={"Range": "bytes=1000-1999"})
    assert answer.status == 206
    assert answer.get("Content-Range") == f"bytes 1000-1999/{len(RANDOM)}"
    assert answer.body == RANDOM[1000:2000]
    (record,) = seen(stack, key)  # asked once, with the Range: not a manifest, no retry
    assert header_value(record, "range") == "bytes=1000-1999"


def test_static_conditional_reaches_the_upstream(stack: Stack) -> None:
    etag = fetch(stack.upstream.port, "/file1.txt").get("ETag")
    assert etag
    answer = fetch(stack.proxy.port, "/file1.txt", headers={"If-None-Match": etag})
    assert answer.status == 304
    assert answer.body == b""
    stale = fetch(
        stack.proxy.port, "/file1.txt", headers={"If-Range": '"old"', "Range": "bytes=0-3"}
    )
    assert (stale.status, stale.body) == (200, FILE1)


def test_head_of_a_static_file(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/random.bin", method="HEAD")
    assert answer.status == 200
    assert answer.get("Content-Length") == str(len(RANDOM))
    assert answer.body == b""


def test_response_streams_through(stack: Stack) -> None:
    """The first part reaches the client while the upstream still holds back the rest."""
    ident = unique()
    conn = http.client.HTTPConnection(HOST, stack.proxy.port, timeout=10)
    try:
        conn.request("GET", f"/stream?id={ident}")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(6) == b"first\n"  # would time out if the proxy buffered
        assert fetch(stack.upstream.port, f"/_release?id={ident}").status == 200
        assert response.read() == b"second\n"
    finally:
        conn.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_post_body_is_forwarded(stack: Stack, framing: str) -> None:
    payload = os.urandom(1024 * 1024 + 3)
    body: bytes | Iterator[bytes] = payload
    if framing == "chunked":  # http.client sends an iterator with Transfer-Encoding: chunked
        body = (payload[i : i + 65536] for i in range(0, len(payload), 65536))
    answer = fetch(stack.proxy.port, "/echo?x=1", method="POST", body=body)
    assert answer.status == 200
    echoed = json.loads(answer.body)
    assert echoed["method"] == "POST"
    assert echoed["query"] == "x=1"
    assert echoed["body_length"] == len(payload)
    assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_redirect_is_passed_through_not_followed(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/redirect")
    assert answer.status == 302
    assert answer.get("Location") == "/file1.txt"
    assert answer.get("X-Upstream") == "redirect"
    assert answer.body == b"moved\n"


@pytest.mark.parametrize("code", [404, 500])
def test_upstream_errors_are_passed_through(stack: Stack, code: int) -> None:
    answer = fetch(stack.proxy.port, f"/status/{code}")
    assert answer.status == code
    assert answer.get("X-Upstream") == str(code)
    assert answer.body == f"upstream says {code}\n".encode()


def test_forwarded_headers(stack: Stack) -> None:
    echoed = json.loads(fetch(stack.proxy.port, "/echo").body)
    headers = dict(echoed["headers"])
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"{HOST}:{stack.proxy.port}"
    assert headers["host"] == f"{HOST}:{stack.upstream.port}"


def test_forwarded_for_is_appended_to(stack: Stack) -> None:
    echoed = json.loads(
        fetch(stack.proxy.port, "/echo", headers={"X-Forwarded-For": "203.0.113.9"}).body
    )
    headers = dict(echoed["headers"])
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


def test_hop_by_hop_request_headers_are_not_forwarded(stack: Stack) -> None:
    sent = {
        "Connection": "keep-alive, X-Named-Hop",
        "X-Named-Hop": "secret",
        "Keep-Alive": "timeout=3",
        "TE": "trailers",
        "Proxy-Authorization": "Basic eDp5",
        "Proxy-Connection": "keep-alive",
        "X-End-To-End": "kept",
    }
    echoed = json.loads(fetch(stack.proxy.port, "/echo", headers=sent).body)
    headers = dict(echoed["headers"])
    for name in ("x-named-hop", "keep-alive", "te", "proxy-authorization", "proxy-connection"):
        assert name not in headers, name
    assert "x-named-hop" not in headers.get("connection", "").lower()
    assert headers["x-end-to-end"] == "kept"


def test_hop_by_hop_response_headers_are_not_passed_back(stack: Stack) -> None:
    direct = fetch(stack.upstream.port, "/hop")
    assert {"x-hop-named", "keep-alive", "proxy-authenticate"} <= direct.names()
    via = fetch(stack.proxy.port, "/hop")
    assert via.status == 200
    assert not {"x-hop-named", "keep-alive", "proxy-authenticate"} & via.names()
    assert "x-hop-named" not in (via.get("Connection") or "").lower()
    assert via.get("X-End-To-End") == "kept"
    assert via.body == b"hop\n"


def test_no_cookie_leaks_between_clients(stack: Stack) -> None:
    # one client's answer sets a cookie (the manifest endpoint sends Set-Cookie)...
    first = fetch(stack.proxy.port, "/manifests/basic.json")
    assert first.get("Set-Cookie") == "session=abc; Path=/"
    # ...another client, who sends no cookie, must not be sent upstream with it
    key = f"/echo?t={unique()}"
    fetch(stack.proxy.port, key)
    (record,) = seen(stack, key)
    assert "cookie" not in header_names(record)


def test_no_request_headers_are_added(stack: Stack) -> None:
    key = f"/gzip/small?t={unique()}"
    conn = http.client.HTTPConnection(HOST, stack.proxy.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.putrequest("GET", key, skip_accept_encoding=True)  # sends Host only
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    (record,) = seen(stack, key)
    added = header_names(record) - {"host", "connection"}
    assert added == {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
    assert response.getheader("Content-Encoding") is None
    assert body == b"hello from the upstream\n"


# -- manifests become archives ---------------------------------------------------------------


def test_manifest_becomes_an_archive(stack: Stack, tmp_path: Path) -> None:
    answer = fetch(stack.proxy.port, "/manifests/basic.json")
    assert answer.status == 200, answer.body[:300]
    assert answer.get("Content-Type") == "application/zip"
    assert answer.get("Content-Length") == str(len(answer.body))
    assert answer.get("Accept-Ranges") == "bytes"  # every CRC declared or computed
    assert answer.get("Content-Disposition") == 'attachment; filename="bundle.zip"'
    # the upstream's own headers are kept; those about the manifest body are not
    assert answer.get("Cache-Control") == "no-cache"
    assert answer.get("Set-Cookie") == "session=abc; Path=/"
    assert answer.get("X-Backend") == "proxy-upstream"
    assert "x-zip-manifest" not in answer.names()
    # docs/file2.txt had no size: its HEAD's Last-Modified is its mtime, the newest
    assert answer.get("Last-Modified") == formatdate(FILE2_MTIME, usegmt=True)

    members = unzip(answer.body)
    assert members["docs/file1.txt"] == FILE1
    assert members["docs/file2.txt"] == FILE2
    assert members["member.bin"] == MEMBER
    assert members["README.txt"] == b"Made by the zipware proxy.\n"
    assert members["data.bin"] == b"\x00\x01\x02binary"
    assert infos(answer.body)["docs/"].is_dir()
    assert list(members) == [e["name"] for e in basic_entries("")]

    check_all = getattr(readers, "check_all", None)
    if check_all is not None:
        path = tmp_path / "bundle.zip"
        path.write_bytes(answer.body)
        check_all(path, BASIC_LISTING)


def test_manifest_sent_in_pieces(stack: Stack) -> None:
    whole = fetch(stack.proxy.port, "/manifests/basic.json")
    pieces = fetch(stack.proxy.port, "/manifests/basic.json?chunks=7")
    assert pieces.status == 200
    assert pieces.body == whole.body
    assert pieces.get("ETag") == whole.get("ETag")


def test_manifest_head(stack: Stack) -> None:
    whole = fetch(stack.proxy.port, "/manifests/basic.json")
    key = f"/manifests/basic.json?t={unique()}"
    head = fetch(stack.proxy.port, key, method="HEAD")
    assert head.status == 200
    assert head.body == b""
    for name in ("content-length", "etag", "content-type", "accept-ranges", "last-modified"):
        assert head.get(name) == whole.get(name), name
    # a HEAD goes upstream as a HEAD; its answer says "manifest", so the body is asked for
    # with a GET (a HEAD answer has none)
    assert [r["method"] for r in seen(stack, key)] == ["HEAD", "GET"]


def test_head_of_a_plain_file_stays_a_head(stack: Stack) -> None:
    key = f"/largefile.txt?t={unique()}"
    head = fetch(stack.proxy.port, key, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.get("Content-Length") == str(len(LARGE))
    # no body was asked of the upstream for a response that is not a manifest
    assert [r["method"] for r in seen(stack, key)] == ["HEAD"]


def test_manifest_range(stack: Stack) -> None:
    whole = fetch(stack.proxy.port, "/manifests/basic.json").body
    key = f"/manifests/basic.json?t={unique()}"
    answer = fetch(stack.proxy.port, key, headers={"Range": "bytes=100-5000"})
    assert answer.status == 206
    assert answer.get("Content-Range") == f"bytes 100-5000/{len(whole)}"
    assert answer.body == whole[100:5001]
    # This upstream answers its manifest with a full 200 whatever the request says, so the
    # proxy uses that answer and does not ask again: its only request carried the Range.
    # (A manifest answered with 206/304 is asked for again without them: see the
    # static-list tests below.)
    records = seen(stack, key)
    assert 1 <= len(records) <= 2


def test_manifest_conditionals_are_the_archives(stack: Stack) -> None:
    etag = etag_of(stack, "/manifests/basic.json")
    same = fetch(stack.proxy.port, "/manifests/basic.json", headers={"If-None-Match": etag})
    assert (same.status, same.body) == (304, b"")
    other = fetch(stack.proxy.port, "/manifests/basic.json", headers={"If-None-Match": '"x"'})
    assert other.status == 200


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/manifests/invalid.json", b"invalid manifest"),
        ("/manifests/not-json.json", b"invalid manifest"),
        ("/manifests/outside.json", b"invalid manifest"),  # a URL outside the allow-list
        ("/lists/zip-missing-size.txt", b"invalid manifest"),  # "-" is no size
    ],
)
def test_invalid_manifest_is_502(stack: Stack, path: str, problem: bytes) -> None:
    answer = fetch(stack.proxy.port, path)
    assert answer.status == 502
    assert answer.get("Content-Type") == "text/plain; charset=utf-8"
    assert problem in answer.body
    assert not answer.body.startswith(b"PK")


def test_missing_first_member_is_an_error_status(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/manifests/missing-first.json")
    assert answer.status == 502
    assert not answer.body.startswith(b"PK")


def test_non_200_with_the_trigger_passes_through(stack: Stack) -> None:
    key = f"/trigger-error?t={unique()}"
    answer = fetch(stack.proxy.port, key)
    assert answer.status == 404
    assert json.loads(answer.body) == {"error": "no such download"}
    assert len(seen(stack, key)) == 1


def test_compressed_manifest(stack: Stack) -> None:
    """The client accepts gzip (every browser does) and the upstream compresses its JSON."""
    plain = fetch(stack.proxy.port, "/manifests/basic.json")
    answer = fetch(
        stack.proxy.port, "/gzip/manifests/basic.json", headers={"Accept-Encoding": "gzip"}
    )
    assert answer.status == 200, answer.body[:200]
    assert answer.body == plain.body


# -- mod_zip's scenarios (t/ziptest.pl) -------------------------------------------------------


def test_modzip_component_files(stack: Stack) -> None:
    assert fetch(stack.proxy.port, "/file1.txt").body == FILE1
    partial = fetch(stack.proxy.port, "/file1.txt", headers={"Range": "bytes=0-3"})
    assert (partial.status, partial.body) == (206, b"This")
    assert fetch(stack.proxy.port, "/file2.txt").body == FILE2


def test_modzip_headers(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/lists/zip.txt")
    assert answer.status == 200
    assert answer.get("Content-Type") == "application/zip"
    assert answer.get("Content-Length") == str(len(answer.body))
    assert answer.get("Accept-Ranges") == "bytes"
    # members without mtimes: the archive's date is the list's (mod_zip does the same)
    assert answer.get("Last-Modified") == LIST_LAST_MODIFIED
    assert answer.get("Cache-Control") == "max-age=0"  # the backend's, kept
    # differences from mod_zip, on purpose: X-Archive-Files is not echoed, and the ETag is
    # zipware's fingerprint of the archive, not the backend's "3.14159"
    assert "x-archive-files" not in answer.names()
    assert answer.get("ETag") not in (None, '"3.14159"')
    assert unzip(answer.body) == {"file1.txt": FILE1, "file2.txt": FILE2}
    # CRCs given: no data descriptor
    assert not infos(answer.body)["file1.txt"].flag_bits & 0x08


def test_modzip_filename_from_content_disposition(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/lists/zip.txt?filename=bundle.zip")
    assert answer.get("Content-Disposition") == 'attachment; filename="bundle.zip"'


def test_modzip_uppercase_crc(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/lists/zip-uppercase-crc.txt")
    assert answer.status == 200
    assert unzip(answer.body) == {"file1.txt": FILE1, "file2.txt": FILE2}


def test_modzip_missing_crc(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/lists/zip-missing-crc.txt")
    assert answer.status == 200
    assert answer.get("Content-Length") == str(len(answer.body))
    assert answer.get("Accept-Ranges") is None  # a CRC unknown: no ranges
    assert unzip(answer.body) == {"file1.txt": FILE1, "file2.txt": FILE2}
    info = infos(answer.body)
    assert info["file1.txt"].flag_bits & 0x08  # data descriptor
    assert (info["file1.txt"].CRC, info["file2.txt"].CRC) == (CRC1, CRC2)
    _, data = offsets(answer.body, "file1.txt")
    end = data + info["file1.txt"].compress_size
    assert answer.body[end : end + 4] == b"PK\x07\x08"
    # a Range on it gets the whole archive
    ranged = fetch(stack.proxy.port, "/lists/zip-missing-crc.txt", headers={"Range": "bytes=0-1"})
    assert (ranged.status, ranged.body) == (200, answer.body)


def test_modzip_missing_first_file_is_an_error_not_a_truncated_200(stack: Stack) -> None:
    # mod_zip answers 500; zipware opens the first source before the status line: 502
    answer = fetch(stack.proxy.port, "/lists/zip-404.txt")
    assert 500 <= answer.status < 600
    assert answer.status == 502
    assert not answer.body.startswith(b"PK")


def test_modzip_many_files(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/lists/zip-many-files.txt")
    assert answer.status == 200
    members = unzip(answer.body)
    assert len(members) == 136
    assert members["file1.txt"] == FILE1
    assert members["file2.txt"] == FILE2
    assert members["file136.txt"] == FILE1


@pytest.mark.parametrize("name", ["zip-spaces.txt", "zip-spaces-plus.txt"])
def test_modzip_escaped_locations(stack: Stack, name: str) -> None:
    answer = fetch(stack.proxy.port, f"/lists/{name}")
    assert answer.status == 200, answer.body[:300]
    assert unzip(answer.body) == {"file1.txt": FILE1, "file2.txt": FILE2}


def test_modzip_directories(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/lists/zip-empty-dirs.txt")
    assert answer.status == 200
    members = unzip(answer.body)
    assert list(members) == ["file1.txt", "empty_dir1/", "file2.txt", "empty_dir2/"]
    info = infos(answer.body)
    assert info["empty_dir1/"].is_dir() and info["empty_dir2/"].is_dir()
    assert (members["file1.txt"], members["file2.txt"]) == (FILE1, FILE2)

    only = fetch(stack.proxy.port, "/lists/zip-only-empty-dirs.txt")
    assert only.status == 200
    assert only.get("Content-Length") == str(len(only.body))
    assert list(unzip(only.body)) == ["empty_dir1/", "empty_dir2/"]
    assert all(i.is_dir() for i in infos(only.body).values())


def test_modzip_large_file(stack: Stack) -> None:
    answer = fetch(stack.proxy.port, "/lists/zip-large-file.txt")
    assert answer.status == 200
    assert answer.get("Content-Length") == str(len(answer.body))
    info = infos(answer.body)["largefile.txt"]
    assert (info.file_size, info.CRC) == (10_000_000, LARGE_CRC)
    assert unzip(answer.body)["largefile.txt"] == LARGE


@pytest.fixture(scope="module")
def zip_txt(stack: Stack) -> bytes:
    """The archive of mod_zip's zip.txt, whole."""
    answer = fetch(stack.proxy.port, "/lists/zip.txt")
    assert answer.status == 200
    return answer.body


def ranged(stack: Stack, spec: str, **headers: str) -> Answer:
    return fetch(stack.proxy.port, "/lists/zip.txt", headers={"Range": spec, **headers})


def test_modzip_range_start(stack: Stack, zip_txt: bytes) -> None:
    answer = ranged(stack, "bytes=0-1")
    assert (answer.status, answer.body) == (206, b"PK")
    assert answer.get("Content-Range") == f"bytes 0-1/{len(zip_txt)}"
    assert answer.get("Content-Length") == "2"


def test_modzip_range_inside_a_local_header(stack: Stack, zip_txt: bytes) -> None:
    header, _ = offsets(zip_txt, "file1.txt")
    name_at = header + 30
    answer = ranged(stack, f"bytes={name_at}-{name_at + 8}")
    assert (answer.status, answer.body) == (206, b"file1.txt")


def test_modzip_range_inside_member_data(stack: Stack, zip_txt: bytes) -> None:
    _, data2 = offsets(zip_txt, "file2.txt")
    whole = ranged(stack, f"bytes={data2}-{data2 + 24}")
    assert (whole.status, whole.body) == (206, FILE2)
    assert ranged(stack, f"bytes={data2}-{data2 + 3}").body == b"This"
    assert ranged(stack, f"bytes={data2 + 2}-{data2 + 3}").body == b"is"


def test_modzip_range_spanning_members(stack: Stack, zip_txt: bytes) -> None:
    _, data1 = offsets(zip_txt, "file1.txt")
    _, data2 = offsets(zip_txt, "file2.txt")
    # all of the first member and the start of the second
    head = ranged(stack, f"bytes=0-{data2 + 4}")
    assert head.status == 206
    assert head.body == zip_txt[: data2 + 5]
    assert head.body[data2 : data2 + 4] == b"This"
    # from inside the first member's data into the second's
    middle = ranged(stack, f"bytes={data1 + 8}-{data2 + 3}")
    assert middle.status == 206
    assert middle.body[:14] == b"the first file"
    assert middle.body[data2 - (data1 + 8) :] == b"This"
    assert middle.body == zip_txt[data1 + 8 : data2 + 4]


def test_modzip_range_prefix_and_suffix(stack: Stack, zip_txt: bytes) -> None:
    _, data2 = offsets(zip_txt, "file2.txt")
    prefix = ranged(stack, f"bytes={data2}-")
    assert prefix.status == 206
    assert prefix.body == zip_txt[data2:]
    assert prefix.body[:25] == FILE2
    suffix = ranged(stack, f"bytes=-{len(zip_txt) - data2}")
    assert (suffix.status, suffix.body) == (206, zip_txt[data2:])


def test_modzip_range_unsatisfiable(stack: Stack, zip_txt: bytes) -> None:
    answer = ranged(stack, "bytes=10000-10001")
    assert answer.status == 416
    assert answer.get("Content-Range") == f"bytes */{len(zip_txt)}"


def test_modzip_several_ranges_give_the_whole_archive(stack: Stack, zip_txt: bytes) -> None:
    # mod_zip answers multipart/byteranges; zipware's documented choice is a 200
    _, data2 = offsets(zip_txt, "file2.txt")
    for spec in (f"bytes=0-1,{data2}-{data2 + 3}", f"bytes={data2}-{data2 + 3},0-1"):
        answer = ranged(stack, spec)
        assert (answer.status, answer.body) == (200, zip_txt)
        assert answer.get("Content-Type") == "application/zip"


def test_modzip_if_range_by_date(stack: Stack, zip_txt: bytes) -> None:
    earlier = ranged(stack, "bytes=0-1", **{"If-Range": "Wed, 15 Nov 1995 04:58:07 GMT"})
    assert (earlier.status, earlier.body) == (200, zip_txt)
    exact = ranged(stack, "bytes=0-1", **{"If-Range": LIST_LAST_MODIFIED})
    assert (exact.status, exact.body) == (206, b"PK")


def test_modzip_if_range_by_etag(stack: Stack, zip_txt: bytes) -> None:
    etag = etag_of(stack, "/lists/zip.txt")
    other = ranged(stack, "bytes=0-1", **{"If-Range": '"2.71828"'})
    assert (other.status, other.body) == (200, zip_txt)
    # mod_zip's test sends the backend's ETag ("3.14159"): zipware's ETag is its own
    backend = ranged(stack, "bytes=0-1", **{"If-Range": '"3.14159"'})
    assert backend.status == 200
    mine = ranged(stack, "bytes=0-1", **{"If-Range": etag})
    assert (mine.status, mine.body) == (206, b"PK")
    weak = ranged(stack, "bytes=0-1", **{"If-Range": "W/" + etag})
    assert weak.status == 200


# -- mod_zip lists served as static files (Range-aware, as in mod_zip's test nginx.conf) -----


def test_static_list_range_is_asked_again_without_it(stack: Stack, zip_txt: bytes) -> None:
    key = f"/static-lists/zip.txt?t={unique()}"
    sent = {"Range": "bytes=0-1", "If-Range": LIST_LAST_MODIFIED}
    answer = fetch(stack.proxy.port, key, headers=sent)
    assert (answer.status, answer.body) == (206, b"PK")
    records = seen(stack, key)
    # the upstream applied the Range to the list (206 with the trigger): asked again,
    # and the final request for the manifest carries no Range or If-Range
    assert len(records) == 2
    assert header_value(records[0], "range") == "bytes=0-1"
    assert not {"range", "if-range"} & header_names(records[-1])


def test_static_list_if_modified_since(stack: Stack) -> None:
    key = f"/static-lists/zip.txt?t={unique()}"
    answer = fetch(stack.proxy.port, key, headers={"If-Modified-Since": LIST_LAST_MODIFIED})
    assert answer.status == 304
    records = seen(stack, key)
    assert len(records) == 2
    assert "if-modified-since" not in header_names(records[-1])


def test_static_list_range_past_the_lists_size(stack: Stack, zip_txt: bytes) -> None:
    """A known limit of forwarded conditionals, and the documented way around it.

    The list is 66 bytes, so the upstream answers a forwarded ``bytes=100-110`` with a 416
    that carries no trigger (nginx's add_header skips 416): the proxy cannot tell it was a
    manifest. A proxy started with ``strip_conditionals`` never forwards them.
    """
    answer = fetch(stack.proxy.port, "/static-lists/zip.txt", headers={"Range": "bytes=100-110"})
    assert answer.status == 416
    answer = fetch(stack.strict.port, "/static-lists/zip.txt", headers={"Range": "bytes=100-110"})
    assert (answer.status, answer.body) == (206, zip_txt[100:111])


# -- upstream trouble -----------------------------------------------------------------------


def test_upstream_down_is_502(stack: Stack) -> None:
    answer = fetch(stack.down.port, "/anything")
    assert answer.status == 502
    assert answer.get("Content-Type") == "text/plain; charset=utf-8"
    assert answer.body == b"zipware proxy: the upstream cannot be reached\n"


def test_slow_upstream_is_504(stack: Stack) -> None:
    started = time.monotonic()
    answer = fetch(stack.strict.port, "/slow?seconds=5")
    assert answer.status == 504
    assert b"did not answer in time" in answer.body
    assert time.monotonic() - started < 4.5


def test_manifest_over_the_limit_is_502(stack: Stack) -> None:
    size = len((stack.root / "manifests" / "basic.json").read_bytes())
    assert size > 100
    answer = fetch(stack.strict.port, "/manifests/basic.json")
    assert answer.status == 502
    assert b"too large" in answer.body
    # a small answer of the same proxy still passes
    assert fetch(stack.strict.port, "/file1.txt").body == FILE1


def test_upstream_breaking_off_a_pass_through(stack: Stack) -> None:
    conn = http.client.HTTPConnection(HOST, stack.proxy.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", "/abort?size=200000")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") == "200000"
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    assert stack.proxy.alive()
    assert fetch(stack.proxy.port, "/file1.txt").body == FILE1


def test_upstream_breaking_off_a_member(stack: Stack) -> None:
    conn = http.client.HTTPConnection(HOST, stack.proxy.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", "/manifests/abort.json")
        response = conn.getresponse()
        assert response.status == 200  # the archive had started
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
        assert len(caught.value.partial) < int(response.getheader("Content-Length", "0"))
    finally:
        conn.close()
    assert stack.proxy.alive()
    assert unzip(fetch(stack.proxy.port, "/lists/zip.txt").body)["file1.txt"] == FILE1


# -- examples/node-backend behind the proxy --------------------------------------------------


NODE = REPO / "examples" / "node-backend" / "server.js"
NGINX_CONF = REPO / "examples" / "nginx" / "nginx.conf"


def require_tool(*candidates: str) -> str:
    """The tool's path; skip without it (fail when the CI variable is set)."""
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    message = f"{candidates[0]} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the example must be tested)", pytrace=False)
    pytest.skip(message)


@dataclass
class NodeStack:
    node: Proc
    proxy: Proc


@pytest.fixture(scope="module")
def node_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeStack]:
    node_bin = require_tool("node", "/usr/bin/node")
    root = tmp_path_factory.mktemp("node")
    node_port, proxy_port = free_port(), free_port()
    node_url = f"http://{HOST}:{node_port}"
    node = Proc(
        "node backend",
        [node_bin, str(NODE)],
        port=node_port,
        log=root / "node.log",
        env={**os.environ, "PORT": str(node_port), "HOST": HOST},
    )
    proxy = Proc(
        "proxy of node",
        proxy_argv(proxy_port),
        port=proxy_port,
        log=root / "proxy.log",
        env=python_env({"ZIPWARE_PROXY_CONFIG": json.dumps({"upstream": node_url})}),
    )
    start_all([node, proxy])
    try:
        yield NodeStack(node, proxy)
    finally:
        proxy.stop()
        node.stop()


def sample_files() -> dict[str, bytes]:
    return {
        "samples/" + p.relative_to(SAMPLES).as_posix(): p.read_bytes()
        for p in sorted(SAMPLES.rglob("*"))
        if p.is_file()
    }


def check_node_archive(body: bytes, *, notes: bool) -> None:
    members = unzip(body)
    expected = sample_files()
    assert {n for n in members if not n.endswith("/")} == set(expected) | (
        {"samples/NOTES.txt"} if notes else set()
    )
    for name, data in expected.items():
        assert members[name] == data, name
    assert infos(body)["samples/empty/"].is_dir()


def test_node_page(node_stack: NodeStack) -> None:
    answer = fetch(node_stack.proxy.port, "/")
    assert answer.status == 200
    assert answer.get("Content-Type") == "text/html; charset=utf-8"
    assert b'href="/download"' in answer.body


def test_node_manifest_download(node_stack: NodeStack) -> None:
    answer = fetch(node_stack.proxy.port, "/download")
    assert answer.status == 200, answer.body[:300]
    assert answer.get("Content-Disposition") == 'attachment; filename="samples.zip"'
    assert answer.get("Content-Length") == str(len(answer.body))
    check_node_archive(answer.body, notes=True)
    assert unzip(answer.body)["samples/NOTES.txt"].startswith(b"These files")
    # Node >= 20.15 declares CRCs: ranges
    assert answer.get("Accept-Ranges") == "bytes"
    part = fetch(node_stack.proxy.port, "/download", headers={"Range": "bytes=50-400"})
    assert (part.status, part.body) == (206, answer.body[50:401])


def test_node_modzip_download(node_stack: NodeStack) -> None:
    answer = fetch(node_stack.proxy.port, "/download-modzip")
    assert answer.status == 200, answer.body[:300]
    assert answer.get("Content-Disposition") == 'attachment; filename="samples-modzip.zip"'
    check_node_archive(answer.body, notes=False)


def test_node_files_with_range(node_stack: NodeStack) -> None:
    data = (SAMPLES / "README.txt").read_bytes()
    answer = fetch(node_stack.proxy.port, "/files/README.txt", headers={"Range": "bytes=5-9"})
    assert (answer.status, answer.body) == (206, data[5:10])


# -- examples/nginx in front of the proxy and the backend ------------------------------------


def nginx_config(example: str, tmp: Path, port: int, backend: int, proxy: int) -> str:
    """The example's nginx.conf on test ports, every path inside ``tmp``, in the foreground."""
    user = ""
    if os.geteuid() == 0:  # workers would otherwise become "nobody", shut out of tmp
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};\n"
    replacements = {
        "worker_processes auto;": f"daemon off;\n{user}worker_processes 1;",
        "pid /run/nginx-zipware.pid;": f"pid {tmp}/nginx.pid;",
        "error_log /var/log/nginx/error.log;": "error_log stderr info;",
        "access_log /var/log/nginx/access.log;": (
            f"access_log {tmp}/access.log;\n"
            + "".join(
                f"    {kind}_temp_path {tmp}/{kind}_temp;\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
        ),
        "listen 8080;": f"listen {HOST}:{port};",
        "server 127.0.0.1:3000;": f"server {HOST}:{backend};",
        "server 127.0.0.1:8000;": f"server {HOST}:{proxy};",
    }
    for old, new in replacements.items():
        assert example.count(old) == 1, f"examples/nginx/nginx.conf no longer has {old!r}"
        example = example.replace(old, new)
    return example


@pytest.fixture(scope="module")
def nginx(node_stack: NodeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    nginx_bin = require_tool("nginx", "/usr/sbin/nginx")
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        nginx_config(NGINX_CONF.read_text(), tmp, port, node_stack.node.port, node_stack.proxy.port)
    )
    proc = Proc(
        "nginx",
        [nginx_bin, "-p", str(tmp), "-c", str(conf), "-e", "stderr"],
        port=port,
        log=tmp / "nginx.log",
    )
    start_all([proc])
    try:
        yield proc
    finally:
        proc.stop()


def test_nginx_download_through_all_three(nginx: Proc, node_stack: NodeStack) -> None:
    direct = fetch(node_stack.proxy.port, "/download")
    answer = fetch(nginx.port, "/download")
    assert answer.status == 200, answer.body[:300]
    assert answer.get("Content-Length") == str(len(answer.body))
    # deterministic bytes: the same archive, whoever serves it
    assert answer.body == direct.body
    assert answer.get("ETag") == direct.get("ETag")
    check_node_archive(answer.body, notes=True)
    modzip = fetch(nginx.port, "/download-modzip")
    assert modzip.status == 200
    check_node_archive(modzip.body, notes=False)


def test_nginx_range_through_all_three(nginx: Proc, node_stack: NodeStack) -> None:
    whole = fetch(nginx.port, "/download").body
    answer = fetch(nginx.port, "/download", headers={"Range": "bytes=100-"})
    assert answer.status == 206
    assert answer.get("Content-Range") == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    assert answer.body == whole[100:]
    etag = fetch(nginx.port, "/download", method="HEAD").get("ETag")
    assert etag
    resumed = fetch(nginx.port, "/download", headers={"Range": "bytes=10-19", "If-Range": etag})
    assert (resumed.status, resumed.body) == (206, whole[10:20])


def test_nginx_sends_the_rest_to_the_backend(nginx: Proc) -> None:
    page = fetch(nginx.port, "/")
    assert page.status == 200
    assert b'href="/download"' in page.body
    data = (SAMPLES / "README.txt").read_bytes()
    assert fetch(nginx.port, "/files/README.txt").body == data
