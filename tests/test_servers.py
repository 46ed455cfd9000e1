"""The middlewares under real servers over loopback: gunicorn (sync workers) and uvicorn.

Every server is a subprocess on a free port, started once for the module (all three at
once), with its stderr in a file that a failing test prints (``servers/harness.py``):

* ``gunicorn``: ``-w 2 -k sync``, ``ZipMiddleware(app)`` (``servers/wsgi_app.py``).
* ``gunicorn-lint``: ``-w 1``, ``Lint(ZipMiddleware(Lint(app)))``; every Lint warning goes
  to stderr labelled with its request, and the last test reads them. One worker because
  the CRC cache lives in a worker process: with two, whether a Range request of a manifest
  that declares no CRC gets 206 after a full download depends on which worker answers, so
  the exact cold -> warm sequence is tested on the single-process servers (this one and
  uvicorn) and ``gunicorn`` is held to "a correct 206, or the whole archive without
  Accept-Ranges".
* ``uvicorn``: a starlette app in the ASGI ``ZipMiddleware`` (``servers/asgi_app.py``).

The apps serve the routes listed in ``servers/common.py``; URL entries point to an
``http.server`` in this process. An audit hook in each server logs every ``open()`` of a
file under the root, which proves that HEAD opens no member and GET opens each once; the
descriptors of the server processes (``/proc/PID/fd``) are compared with a baseline after
downloads, failures and client disconnects.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import subprocess
import threading
import time
import uuid
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from stream_unzip import stream_unzip
from werkzeug.http import http_date, parse_options_header
from werkzeug.middleware.lint import HTTPWarning, WSGIWarning
from werkzeug.test import Client

pytest.register_assert_rewrite("servers.harness")

from servers import asgi_app, harness, wsgi_app  # noqa: E402
from servers.harness import Server, Servers  # noqa: E402

try:
    from . import readers
except ImportError:
    import readers  # type: ignore[no-redef]

pytest_plugins = ("servers.harness",)

SEED = 20240611
SERVER_NAMES = ("gunicorn", "gunicorn-lint", "uvicorn")
ZIP_NAME = "données été.zip"
SECRET = "SECRET-7f3a9c"
BIG = 64 * 1024 * 1024  # sparse: more than loopback socket buffers can hold ahead
BLOB = random.Random(SEED + 1).randbytes(300_000)
DIES_SIZE = 1_000_000


# -- the URL origin: a loopback http.server in this process ---------------------------------


class Origin(BaseHTTPRequestHandler):
    """``/blob.bin`` (HEAD, Range), ``/dies`` (sends 40 % then closes), 404 otherwise."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.answer(head=True)

    def do_GET(self) -> None:
        self.answer(head=False)

    def answer(self, *, head: bool) -> None:
        path = self.path.partition("?")[0]
        if path == "/blob.bin":
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(BLOB) - start))
            self.end_headers()
            if not head:
                self.wfile.write(BLOB[start:])
        elif path == "/dies":
            self.send_response(200)
            self.send_header("Content-Length", str(DIES_SIZE))
            self.end_headers()
            if not head:
                self.wfile.write(b"d" * (DIES_SIZE * 4 // 10))
                self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)


# -- the site: files, manifests, config -----------------------------------------------------


@dataclass
class Site:
    base: Path
    root: Path
    flags: Path
    origin: str
    config_path: Path
    config: dict[str, Any]
    files: dict[str, bytes]  # relative path -> content
    expected: dict[str, dict[str, bytes]]  # route -> {member name: content}
    opens: dict[str, list[str]]  # route -> real paths a GET opens
    made: list[Path] = field(default_factory=list)

    def real(self, rel: str) -> str:
        return os.path.realpath(self.root / rel)

    def new_file(self, content: bytes = b"", *, size: int | None = None) -> str:
        """A fresh file under the root (new inode: no CRC cache knows it); its name."""
        name = f"new-{uuid.uuid4().hex[:12]}.bin"
        path = self.root / name
        with open(path, "wb") as f:
            f.write(content)
            if size is not None:
                f.truncate(size)  # sparse
        self.made.append(path)
        return name


def zip_entries(files: dict[str, bytes], *, crc: bool) -> list[dict[str, Any]]:
    names = {
        "a.txt": "a.txt",
        "b.bin": "data/b.bin",
        "sub/c.bin": "data/sub/c.bin",
        "été.txt": "été.txt",
        "empty.txt": "empty.txt",
    }
    entries = []
    for rel, name in names.items():
        entry: dict[str, Any] = {"name": name, "path": rel}
        if crc:
            entry["crc32"] = f"{zlib.crc32(files[rel]):08x}"
        entries.append(entry)
    return entries


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("servers")
    root = base / "root"
    flags = base / "flags"
    for d in (root / "sub", flags):
        d.mkdir(parents=True)
    rng = random.Random(SEED)
    files = {
        "a.txt": b"alpha\n" * 1000,
        "b.bin": rng.randbytes(1_200_000),
        "sub/c.bin": rng.randbytes(600_000),
        "été.txt": "été\n".encode() * 100,
        "empty.txt": b"",
    }
    for rel, content in files.items():
        (root / rel).write_bytes(content)
    (base / "outside.txt").write_text("outside the root\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"

    data = rng.randbytes(1000)
    text = "héllo wörld\n"
    manifests: dict[str, Any] = {
        "zip": {"version": 1, "filename": ZIP_NAME, "entries": zip_entries(files, crc=False)},
        "zip-crc": {"version": 1, "filename": "crc.zip", "entries": zip_entries(files, crc=True)},
        "mixed": {
            "version": 1,
            "filename": "mixed.zip",
            "entries": [
                {"name": "docs/"},
                {"name": "docs/readme.txt", "text": text},
                {"name": "bin/data.bin", "data": base64.b64encode(data).decode()},
                {"name": "files/a.txt", "path": "a.txt"},
                {"name": "remote/blob.bin", "url": f"{origin}/blob.bin"},  # size by HEAD
            ],
        },
        "bad": {
            "version": 1,
            "entries": [
                {"name": "a.txt", "path": "a.txt", "sise": 3},
                {"name": "dup", "text": "x"},
                {"name": "dup", "text": "y"},
                {"name": "remote", "url": f"{origin}/missing?signature={SECRET}"},
            ],
        },
        "forbidden": {
            "version": 1,
            "entries": [
                {"name": "ok.txt", "path": "a.txt"},
                {"name": "passwd", "path": "/etc/passwd"},
                {"name": "up.txt", "path": "../outside.txt"},
            ],
        },
        # fail after the headers: first a big local member, then a URL that 404s / dies
        "late-404": {
            "version": 1,
            "entries": [
                {"name": "b.bin", "path": "b.bin"},
                {"name": "remote.bin", "url": f"{origin}/missing?signature={SECRET}", "size": 10},
            ],
        },
        "dies": {
            "version": 1,
            "entries": [
                {"name": "b.bin", "path": "b.bin"},
                {"name": "dies.bin", "url": f"{origin}/dies", "size": DIES_SIZE},
            ],
        },
    }
    config = {
        "root": os.path.realpath(root),
        "origin": origin,
        "flags": str(flags),
        "manifests": manifests,
    }
    config_path = base / "config.json"
    config_path.write_text(json.dumps(config), "utf-8")

    zip_expected = {e["name"]: files[e["path"]] for e in manifests["zip"]["entries"]}
    site = Site(
        base=base,
        root=Path(config["root"]),
        flags=flags,
        origin=origin,
        config_path=config_path,
        config=config,
        files=files,
        expected={
            "/zip": zip_expected,
            "/zip-crc": zip_expected,
            "/zip-split": zip_expected,
            "/mixed": {
                "docs/": b"",
                "docs/readme.txt": text.encode(),
                "bin/data.bin": data,
                "files/a.txt": files["a.txt"],
                "remote/blob.bin": BLOB,
            },
        },
        opens={},
    )
    every = [site.real(e["path"]) for e in manifests["zip"]["entries"]]
    site.opens = {"/zip": every, "/zip-crc": every, "/zip-split": every}
    site.opens["/mixed"] = [site.real("a.txt")]
    yield site
    httpd.shutdown()
    httpd.server_close()
    for path in site.made:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def servers(site: Site) -> Iterator[Servers]:
    logs = site.base / "logs"
    logs.mkdir()
    started: dict[str, Server] = {}
    try:
        for name in SERVER_NAMES:  # all at once: they boot in parallel
            started[name] = harness.launch(name, site.config_path, logs, str(site.root))
        for server in started.values():
            harness.wait_ready(server)
        for server in started.values():
            # every kind of request once, so lazily made state is there before the baseline
            (site.flags / "warm-up").touch()
            for method, path in [
                ("GET", "/zip-crc"),
                ("GET", "/mixed"),
                ("GET", "/bad"),
                ("HEAD", "/zip-crc"),
                ("GET", "/plain?flag=warm-up"),
            ]:
                server.request(method, path, timeout=30)
            server.baseline = server.stable_fds()
        yield Servers(started)
    finally:
        problems = [
            f"{s.name} died early ({s.proc.returncode})"
            for s in started.values()
            if s.proc.poll() is not None
        ]
        harness.stop_all(started.values())
        if problems:
            pytest.fail("; ".join(problems))


@pytest.fixture(params=SERVER_NAMES)
def server(request: pytest.FixtureRequest, servers: Servers) -> Server:
    return servers[request.param]


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


# -- helpers --------------------------------------------------------------------------------


def read_zipfile(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        return {info.filename: zf.read(info) for info in zf.infolist()}


def read_stream_unzip(body: bytes) -> dict[str, bytes]:
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    return {name.decode(): b"".join(data) for name, _, data in stream_unzip(chunks)}


def check_full(r: httpx.Response) -> bytes:
    """A complete 200 archive: its length is the one announced, with no chunking."""
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"] == "application/zip"
    assert "transfer-encoding" not in r.headers
    assert int(r.headers["content-length"]) == len(r.content)
    return r.content


def raw(server: Server, request_head: str) -> tuple[bytes, bytes]:
    """Send a request on a fresh socket (Connection: close); the head and body received."""
    data = f"{request_head}\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    head, sep, body = received.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {received[:300]!r}"
    return head, body


def random_ranges(rng: random.Random, size: int, n: int = 20) -> list[tuple[str, int, int]]:
    """``(Range header, start, end)``: bounded, open-ended, suffix, and past-the-end forms."""
    out = [("bytes=0-0", 0, 1), (f"bytes={size - 1}-", size - 1, size)]
    while len(out) < n:
        kind = len(out) % 4
        a = rng.randrange(size)
        if kind == 0:
            b = rng.randrange(a, size)
            out.append((f"bytes={a}-{b}", a, b + 1))
        elif kind == 1:
            out.append((f"bytes={a}-", a, size))
        elif kind == 2:
            k = rng.randrange(1, size + 1)
            out.append((f"bytes=-{k}", size - k, size))
        else:
            b = a + rng.randrange(0, 200_000)
            out.append((f"bytes={a}-{b}", a, min(b + 1, size)))
    return out


def check_ranges(client: httpx.Client, path: str, full: bytes, etag: str, seed: int) -> None:
    size = len(full)
    for header, a, b in random_ranges(random.Random(seed), size):
        r = client.get(path, headers={"Range": header})
        assert r.status_code == 206, (header, r.status_code)
        assert r.headers["content-range"] == f"bytes {a}-{b - 1}/{size}", header
        assert int(r.headers["content-length"]) == len(r.content) == b - a, header
        assert r.headers["etag"] == etag
        assert r.content == full[a:b], header


def read_cut(
    client: httpx.Client, path: str, *, after: int = 1, then: Callable[[], None] | None = None
) -> tuple[int, int, Exception | None]:
    """GET ``path``; once ``after`` bytes came, call ``then``; read on. Returns
    ``(Content-Length, bytes received, the error that ended the transfer or None)``."""
    with client.stream("GET", path) as r:
        assert r.status_code == 200
        length = int(r.headers["content-length"])
        received = 0
        error: Exception | None = None
        try:
            for chunk in r.iter_raw():
                received += len(chunk)
                if then is not None and received >= after:
                    then()
                    then = None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            error = exc
    return length, received, error


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", *args], capture_output=True, text=True, timeout=60, check=False
    )


def curl_resume(server: Server, path: str, full: bytes, out: Path) -> None:
    """A download cut short (its first 100,000 bytes, by ``--range``), finished with
    ``curl -C -``, which asks for the rest with ``Range: bytes=100000-``.

    curl's ``--limit-rate`` with ``--max-time`` does not cut an archive this small: the
    whole of it fits in the loopback socket buffers and curl 7.88 takes it in one go.
    """
    url = server.url + path
    cut = curl("--range", "0-99999", "-o", str(out), "-w", "%{http_code}", url)
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == "206"
    assert out.read_bytes() == full[:100_000]
    done = curl("-C", "-", "-o", str(out), "-w", "%{http_code}", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "206"
    assert out.read_bytes() == full
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None


def no_leak(server: Server, client: httpx.Client) -> None:
    """Close our keep-alive connection (uvicorn would hold it for 5 s), then check the
    server's descriptors are back to the baseline."""
    client.close()
    server.assert_no_leak()


# -- downloads ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/zip", "/zip-crc", "/zip-split", "/mixed"])
def test_download_reads_back(server: Server, client: httpx.Client, site: Site, route: str) -> None:
    mark = server.audit_mark()
    body = check_full(client.get(route))
    assert read_zipfile(body) == site.expected[route]
    assert read_stream_unzip(body) == site.expected[route]
    # each member file opened once, by this request
    assert Counter(server.opened(mark)) == Counter(site.opens[route])


def test_split_manifest_gives_the_same_archive(server: Server, client: httpx.Client) -> None:
    whole = client.get("/zip")
    split = client.get("/zip-split")
    assert check_full(split) == check_full(whole)
    assert split.headers["etag"] == whole.headers["etag"]


def test_reader_matrix(server: Server, client: httpx.Client, site: Site, tmp_path: Path) -> None:
    path = tmp_path / "mixed.zip"
    path.write_bytes(check_full(client.get("/mixed")))
    expected = {
        name: (len(data), zlib.crc32(data)) for name, data in site.expected["/mixed"].items()
    }
    ran = readers.check_all(path, expected)
    assert {"zipfile", "stream-unzip"} <= set(ran)


def test_crc_manifest_accepts_ranges(server: Server, client: httpx.Client) -> None:
    r = client.get("/zip-crc")
    check_full(r)
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-disposition"] == 'attachment; filename="crc.zip"'


# -- HEAD -----------------------------------------------------------------------------------

_VARYING = {"date", "server", "connection", "keep-alive"}


@pytest.mark.parametrize("route", ["/zip", "/zip-crc", "/mixed"])
def test_head_same_headers_no_body_no_open(
    server: Server, client: httpx.Client, site: Site, route: str
) -> None:
    mark = server.audit_mark()
    head = client.head(route)
    head_opened = server.opened(mark)
    get = client.get(route)
    assert head.status_code == get.status_code == 200
    assert head_opened == [], "HEAD opened member files"
    ignore = set(_VARYING)
    if server.workers > 1 and route == "/zip":
        ignore.add("accept-ranges")  # the CRC cache of the worker that answered
    assert {k: v for k, v in head.headers.items() if k not in ignore} == {
        k: v for k, v in get.headers.items() if k not in ignore
    }
    assert int(head.headers["content-length"]) == len(get.content)
    # on the wire: nothing follows the header block
    status_line, body = raw(server, f"HEAD {route} HTTP/1.1")
    assert status_line.startswith(b"HTTP/1.1 200 ")
    assert body == b""
    # the ASGI driver opens the next member while one streams: compare as multisets
    assert Counter(server.opened(mark)) == Counter(site.opens[route])


def test_content_disposition_non_ascii(server: Server, client: httpx.Client) -> None:
    value = client.head("/zip").headers["content-disposition"]
    assert value.isascii()
    assert f"filename*=UTF-8''{quote(ZIP_NAME, safe='')}" in value  # RFC 5987
    assert parse_options_header(value) == ("attachment", {"filename": ZIP_NAME})
    assert parse_options_header(value.split("; filename*=")[0])[1]["filename"].isascii()


# -- not a manifest -------------------------------------------------------------------------


def test_plain_response_passes_through_streamed(
    server: Server, client: httpx.Client, site: Site
) -> None:
    flag = f"flag-{uuid.uuid4().hex}"
    with client.stream("GET", f"/plain?flag={flag}") as r:
        assert r.status_code == 200
        assert r.headers["x-app"] == "plain"
        assert r.headers["content-type"].startswith("text/plain")
        assert "etag" not in r.headers and "content-disposition" not in r.headers
        chunks = r.iter_bytes()
        first = b""
        while len(first) < len(b"first\n"):
            first += next(chunks)
        # the first chunk came before the app could go on: nothing buffered the response
        assert first == b"first\n"
        (site.flags / flag).touch()
        rest = b"".join(chunks)
    assert rest == b"go\n"
    head = client.head(f"/plain?flag={flag}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["x-app"] == "plain"


# -- Range, conditionals, resume ------------------------------------------------------------


def test_random_ranges_of_crc_manifest(server: Server, client: httpx.Client) -> None:
    r = client.get("/zip-crc")
    check_ranges(client, "/zip-crc", check_full(r), r.headers["etag"], SEED)


def test_range_before_and_after_the_crc_cache_is_warm(
    server: Server, client: httpx.Client, site: Site, tmp_path: Path
) -> None:
    content = random.Random(SEED + 2).randbytes(500_000)
    names = [site.new_file(content), site.new_file(b"small\n")]
    path = "/one?" + "&".join(f"p={n}" for n in names)
    head = client.head(path)
    assert "accept-ranges" not in head.headers
    # cold: a Range cannot be served, the whole archive comes instead (and warms the cache)
    cold = client.get(path, headers={"Range": "bytes=100-199"})
    full = check_full(cold)
    assert "accept-ranges" not in cold.headers and "content-range" not in cold.headers
    assert read_zipfile(full) == {names[0]: content, names[1]: b"small\n"}
    etag = cold.headers["etag"]
    if server.workers == 1:
        warm = client.head(path)
        assert warm.headers["accept-ranges"] == "bytes"
        assert warm.headers["etag"] == etag  # learned CRCs do not change the archive
        check_ranges(client, path, full, etag, SEED + 3)
        curl_resume(server, path, full, tmp_path / "resumed.zip")
    else:
        # per-worker caches: a correct slice from a warm worker, the whole from a cold one
        for header, a, b in random_ranges(random.Random(SEED + 3), len(full), 10):
            r = client.get(path, headers={"Range": header})
            assert r.headers["etag"] == etag
            if r.status_code == 206:
                assert r.headers["accept-ranges"] == "bytes"
                assert r.content == full[a:b]
            else:
                assert "accept-ranges" not in r.headers
                assert check_full(r) == full


def test_curl_resume(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    full = check_full(client.get("/zip-crc"))
    curl_resume(server, "/zip-crc", full, tmp_path / "crc.zip")


def test_conditionals_and_odd_ranges(server: Server, client: httpx.Client) -> None:
    r = client.get("/zip-crc")
    full = check_full(r)
    size = len(full)
    etag, last_modified = r.headers["etag"], r.headers["last-modified"]

    def get(**headers: str) -> httpx.Response:
        return client.get("/zip-crc", headers={k.replace("_", "-"): v for k, v in headers.items()})

    r = get(Range="bytes=10-19", If_Range=etag)
    assert r.status_code == 206 and r.content == full[10:20]
    r = get(Range="bytes=10-19", If_Range='"stale"')
    assert check_full(r) == full and "content-range" not in r.headers
    r = get(Range="bytes=10-19", If_Range=last_modified)
    assert r.status_code == 206 and r.content == full[10:20]
    r = get(Range="bytes=10-19", If_Range=http_date(time.time() - 86400 * 365 * 30))
    assert check_full(r) == full

    for conditional in (
        {"If_None_Match": etag},
        {"If_None_Match": f'"x", {etag}'},
        {"If_Modified_Since": last_modified},
    ):
        r = get(**conditional)
        assert r.status_code == 304, conditional
        assert r.content == b""
        assert r.headers["etag"] == etag
    assert get(If_None_Match='"other"').status_code == 200
    status_line, body = raw(server, f"GET /zip-crc HTTP/1.1\r\nIf-None-Match: {etag}")
    assert status_line.startswith(b"HTTP/1.1 304 ") and body == b""

    r = get(Range=f"bytes={size}-")
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"
    # malformed, reversed and several ranges: the whole archive (documented choice)
    for header in ("bytes=abc", "bytes=5-2", "bytes=0-9,20-29", "bytes 0-9"):
        r = get(Range=header)
        assert check_full(r) == full, header
        assert "content-range" not in r.headers


def test_range_in_unknown_unit_is_ignored(server: Server, client: httpx.Client) -> None:
    r = client.get("/zip-crc", headers={"Range": "items=0-5"})
    assert r.status_code == 200


# -- failures before the status line --------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "needles"),
    [
        (
            "/bad",
            [
                "GET /bad: invalid manifest",
                "$.entries[0]: Object contains unknown field `sise`",
                "$.entries[2].name: duplicate name",
                "$.entries[3].url: size unknown: HTTP 404 from",
                "/missing",
            ],
        ),
        (
            "/forbidden",
            [
                "GET /forbidden: invalid manifest",
                "$.entries[1].path: path '/etc/passwd' is outside the allowed roots",
                "$.entries[2].path: path '../outside.txt' is outside the allowed roots",
            ],
        ),
    ],
)
def test_invalid_manifest_gives_500_and_a_log_line(
    server: Server, client: httpx.Client, route: str, needles: list[str]
) -> None:
    mark = server.mark()
    audit = server.audit_mark()
    r = client.get(route)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("text/plain")
    assert int(r.headers["content-length"]) == len(r.content) < 200
    assert r.text.startswith("zipware: invalid manifest")
    assert SECRET not in r.text and "signature" not in r.text
    log = server.wait_log(mark, needles)
    for needle in needles:
        assert needle in log
    assert SECRET not in log and "signature=" not in log
    assert server.opened(audit) == []  # nothing opened for a refused manifest
    head = client.head(route)
    assert head.status_code == 500 and head.content == b""
    no_leak(server, client)


# -- failures after the headers -------------------------------------------------------------


def expect_cut(server: Server, result: tuple[int, int, Exception | None], mark: int) -> str:
    length, received, error = result
    assert error is not None, f"the transfer ended cleanly after {received}/{length} bytes"
    assert received < length
    log = server.wait_log(mark, ["archive aborted"])
    assert "archive aborted" in log
    return log


def test_member_truncated_while_streaming(server: Server, client: httpx.Client, site: Site) -> None:
    name = site.new_file(size=BIG)
    mark = server.mark()
    result = read_cut(
        client,
        f"/one?p={name}&cut=1",
        after=1 << 20,
        then=lambda: os.truncate(site.root / name, 1 << 20),
    )
    log = expect_cut(server, result, mark)
    assert name in log
    no_leak(server, client)


def test_later_member_deleted_while_streaming(
    server: Server, client: httpx.Client, site: Site
) -> None:
    # two big members first: the ASGI driver opens the member after the current one
    # ahead of time, so ``later`` must still be two members away when it is deleted
    bigs = [site.new_file(size=BIG // 2), site.new_file(size=BIG // 2)]
    later = site.new_file(b"later\n")
    mark = server.mark()
    result = read_cut(
        client,
        f"/one?p={bigs[0]}&p={bigs[1]}&p={later}&cut=1",
        after=1 << 20,
        then=lambda: os.unlink(site.root / later),
    )
    log = expect_cut(server, result, mark)
    assert later in log
    no_leak(server, client)


def test_url_source_dies_mid_body(server: Server, client: httpx.Client) -> None:
    mark = server.mark()
    log = expect_cut(server, read_cut(client, "/dies?cut=1"), mark)
    assert "/dies" in log
    no_leak(server, client)


def test_url_source_404_after_headers_keeps_the_secret(
    server: Server, client: httpx.Client
) -> None:
    mark = server.mark()
    log = expect_cut(server, read_cut(client, "/late-404?cut=1"), mark)
    assert "HTTP 404" in log and "/missing" in log
    assert SECRET not in log and "signature=" not in log


# -- client disconnects ---------------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_client_disconnect(server: Server, client: httpx.Client, site: Site, reset: bool) -> None:
    name = site.new_file(size=BIG)
    path = f"/one?p={name}&cut=1"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        got = 0
        while got < 256 * 1024:
            data = s.recv(65536)
            assert data, "the server closed first"
            got += len(data)
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # the server keeps working, lets go of the file, and learned nothing from a cut transfer
    assert check_full(client.get("/zip-crc")) == check_full(client.get("/zip-crc"))
    assert "accept-ranges" not in client.head(path).headers
    no_leak(server, client)


# -- in-process, with werkzeug's LintMiddleware on both sides ---------------------------------


def _lint_problems(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, (WSGIWarning, HTTPWarning))
    ]


def test_lint_in_process(site: Site) -> None:
    (site.flags / "lint").touch()
    client = Client(wsgi_app.make_app(site.config, lint=True))
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/zip", {}),
        ("GET", "/zip-crc", {"Range": "bytes=100-20000"}),
        ("GET", "/zip-crc", {"Range": "bytes=99999999-"}),
        ("GET", "/zip-split", {}),
        ("GET", "/mixed", {}),
        ("GET", "/bad", {}),
        ("GET", "/plain?flag=lint", {}),
        ("HEAD", "/plain?flag=lint", {}),
    ]
    for method, path, headers in requests:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            response = client.open(path, method=method, headers=headers)
            response.get_data()
            response.close()
        assert _lint_problems(caught) == [], (method, path)


def test_lint_in_process_early_close(site: Site) -> None:
    """A server that stops iterating (client gone) closes the response: file closed, and
    the inner app's response closed too (the inner Lint would warn otherwise)."""
    name = site.new_file(size=8 << 20)
    app = wsgi_app.make_app(site.config, lint=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app_iter, status, _ = _run_wsgi(app, f"/one?p={name}")
        assert status.startswith("200")
        next(iter(app_iter))
        assert any(t.endswith(name) for t in harness.fd_targets(os.getpid()))
        app_iter.close()  # type: ignore[attr-defined]
    assert not any(t.endswith(name) for t in harness.fd_targets(os.getpid()))
    # Lint (outside) rightly notes that fewer bytes than Content-Length were sent
    assert _lint_problems(caught) == [
        "WSGIWarning: Content-Length and the number of bytes sent to the client do not match."
    ]


def _run_wsgi(app: Any, path: str, method: str = "GET") -> tuple[Any, str, list[Any]]:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, method=method).get_environ()
    started: list[Any] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    app_iter = app(environ, start_response)
    return app_iter, started[0], started[1]


async def _call_asgi(app: Any, method: str, path: str) -> list[dict[str, Any]]:
    """Run one request through an ASGI app by hand; the messages it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    incoming = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("driver", ["wsgi", "asgi"])
def test_head_error_reply_has_no_body_in_process(site: Site, driver: str) -> None:
    if driver == "wsgi":
        response = Client(wsgi_app.make_app(site.config)).head("/bad")
        status, body = response.status_code, response.get_data()
    else:
        sent = anyio.run(_call_asgi, asgi_app.make_app(site.config), "HEAD", "/bad")
        status = sent[0]["status"]
        body = b"".join(m.get("body", b"") for m in sent[1:])
    assert status == 500
    assert body == b""


# -- last: what the servers said over the whole module ----------------------------------------


def test_lint_server_warnings(servers: Servers) -> None:
    """Every Lint warning of the linted gunicorn, bar the expected: HEAD (Lint does not
    know that HEAD has no body) and the transfers the tests cut on purpose (``cut=1``)."""
    server = servers["gunicorn-lint"]
    mismatch = "Content-Length and the number of bytes sent to the client do not match."
    unexpected = []
    for line in server.log().splitlines():
        if not line.startswith("LINT ["):
            continue
        label, _, message = line[len("LINT [") :].partition("] ")
        if message.endswith(mismatch) and (label.startswith("HEAD ") or "cut=1" in label):
            continue
        unexpected.append(line)
    assert unexpected == []


def test_no_descriptor_leak_at_the_end(servers: Servers) -> None:
    for server in servers:
        server.assert_no_leak()
