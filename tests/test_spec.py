"""The specification's own files: the JSON Schema is current, and every example does what
``spec/examples/README.md`` says it does.

Valid examples must prepare into a Download whose archive streams exactly ``size`` bytes and
reads back with :mod:`zipfile`: each member's bytes, storage, mode and mtime are checked
against the rules of ``spec/manifest.md``, computed here from the example itself. Invalid
examples must raise one ManifestError listing exactly the problems of their ``.expected``
file, in order (all of them at once).

The examples are written for a server with the root ``/srv/files`` and the allow-list
``https://cdn.example.com/media/``; the tests substitute a temporary copy of
``spec/examples/files`` and a loopback HTTP server that serves its ``media/`` folder.
"""

from __future__ import annotations

import base64
import email.utils
import importlib.util
import io
import json
import shutil
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import pytest

from zipware.manifest import ManifestError
from zipware.policy import Policy
from zipware.prepare import Download, aprepare, prepare

SPEC = Path(__file__).resolve().parent.parent / "spec"
EXAMPLES = SPEC / "examples"
FILES = EXAMPLES / "files"
VALID = sorted((EXAMPLES / "valid").glob("*.json"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.json"))

EXAMPLE_HOST = "https://cdn.example.com"  # replaced by the loopback server's base URL
EXAMPLE_ROOT = "/srv/files"  # replaced by the temporary root
TOKEN = "Bearer example-token"  # what the server wants for media/private/
LAST_MODIFIED = "Tue, 02 Jan 2024 03:04:06 GMT"  # every URL's Last-Modified
DOS_EPOCH = (1980, 1, 1, 0, 0, 0)

# the policy the examples are written for (spec/examples/README.md)
MAX_ENTRIES = 64
MAX_MANIFEST_BYTES = 8192
MAX_ARCHIVE_BYTES = 1_000_000


# -- the loopback server --------------------------------------------------------------------


class MediaHandler(BaseHTTPRequestHandler):
    """Serves ``FILES/media`` under ``/media/``, with HEAD, Last-Modified and ``Range: N-``.

    ``/media/private/`` wants ``Authorization: Bearer example-token``; ``/media/no-length/X``
    answers X without a Content-Length (as a chunked or streaming origin would).
    """

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if not path.startswith("/media/"):
            self.send_error(404)
            return
        rel = path.removeprefix("/media/")
        no_length = rel.startswith("no-length/")
        rel = rel.removeprefix("no-length/")
        if rel.startswith("private/") and self.headers.get("Authorization") != TOKEN:
            self.send_error(401)
            return
        file = FILES / "media" / rel
        if ".." in rel.split("/") or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Last-Modified", LAST_MODIFIED)
        if no_length:
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if body:
            self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), MediaHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of spec/examples/files, plus what cannot ship in the repository."""
    top = tmp_path_factory.mktemp("spec")
    root = top / "files"
    shutil.copytree(FILES, root)
    # exists, but outside the root: '..' must be refused, not reported as missing
    (top / "outside.txt").write_text("outside the root\n")
    # a symbolic link inside the root that leads out of it (invalid/symlink-out.json)
    (root / "escape.txt").symlink_to(top / "outside.txt")
    return root


@pytest.fixture(scope="module")
def policy(root: Path, base_url: str) -> Policy:
    return Policy(
        roots=(str(root),),
        allow_urls=(f"{base_url}/media/",),
        max_entries=MAX_ENTRIES,
        max_manifest_bytes=MAX_MANIFEST_BYTES,
        max_archive_bytes=MAX_ARCHIVE_BYTES,
        url_timeout=10,
    )


def load(example: Path, root: Path, base_url: str) -> bytes:
    """The example's bytes with the example host and root replaced by the test's."""
    text = example.read_text(encoding="utf-8")
    text = text.replace(EXAMPLE_HOST, base_url)
    text = text.replace(EXAMPLE_ROOT, json.dumps(str(root))[1:-1])
    return text.encode("utf-8")


# -- the schema -----------------------------------------------------------------------------


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("spec_generate", SPEC / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schema_is_current() -> None:
    current = (SPEC / "manifest.schema.json").read_text(encoding="utf-8")
    assert current == _generator().schema_text(), (
        "spec/manifest.schema.json is stale (zipware/manifest.py changed): "
        "regenerate it with `python spec/generate.py` and commit the result"
    )


def test_valid_examples_match_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SPEC / "manifest.schema.json").read_text(encoding="utf-8"))
    for example in VALID:
        jsonschema.validate(json.loads(example.read_text(encoding="utf-8")), schema)


@pytest.mark.parametrize(
    "name",
    ["wrong-types", "unknown-field", "reserved-field", "wrong-version", "missing-entries"],
)
def test_structural_invalid_examples_fail_the_schema(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SPEC / "manifest.schema.json").read_text(encoding="utf-8"))
    example = json.loads((EXAMPLES / "invalid" / f"{name}.json").read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)


def test_schema_crc32_examples_are_one_value() -> None:
    schema = json.loads((SPEC / "manifest.schema.json").read_text(encoding="utf-8"))
    (crc,) = [
        branch
        for branch in schema["$defs"]["Entry"]["properties"]["crc32"]["anyOf"]
        if "examples" in branch
    ]
    as_hex, as_int = crc["examples"]
    assert int(as_hex, 16) == as_int


def test_there_are_enough_examples() -> None:
    assert len(VALID) >= 6
    assert len(INVALID) >= 15
    for example in INVALID:
        assert example.with_suffix(".expected").is_file(), f"{example.name} has no .expected"
    strays = {p.stem for p in (EXAMPLES / "invalid").glob("*.expected")} - {p.stem for p in INVALID}
    assert not strays, f".expected files without an example: {sorted(strays)}"


# -- valid examples -------------------------------------------------------------------------


def _content(entry: dict[str, Any], root: Path) -> bytes:
    """The bytes the entry's source holds (compressed, for precompressed entries)."""
    if "text" in entry:
        return str(entry["text"]).encode("utf-8")
    if "data" in entry:
        return base64.b64decode(entry["data"])
    if "path" in entry:
        path = Path(entry["path"])
        return (path if path.is_absolute() else root / path).read_bytes()
    url_path = unquote(urlsplit(entry["url"]).path)
    return (FILES / url_path.lstrip("/")).read_bytes()


def _uncompressed(entry: dict[str, Any], root: Path) -> bytes:
    data = _content(entry, root)
    if entry.get("storage") == "precompressed":
        inflater = zlib.decompressobj(-15)
        data = inflater.decompress(data) + inflater.flush()
    return data


def _seconds(value: str | float) -> float:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value)


def _expected_mtime(entry: dict[str, Any], manifest: dict[str, Any], root: Path) -> int | None:
    """The spec's mtime rule: the entry's, else the source's, else the manifest's, else none."""
    if "mtime" in entry:
        return int(_seconds(entry["mtime"]))
    if "path" in entry:
        path = Path(entry["path"])
        return int((path if path.is_absolute() else root / path).stat().st_mtime)
    if "url" in entry and "size" not in entry:  # a HEAD request was needed
        return int(email.utils.parsedate_to_datetime(LAST_MODIFIED).timestamp())
    if "mtime" in manifest:
        return int(_seconds(manifest["mtime"]))
    return None


def _crc_known(entry: dict[str, Any]) -> bool:
    return (
        entry["name"].endswith("/")
        or "crc32" in entry
        or "text" in entry
        or "data" in entry
        or entry.get("size") == 0
    )


def _extended_time(info: zipfile.ZipInfo) -> int | None:
    """The UTC mtime of the Info-ZIP extended timestamp extra (0x5455), if present."""
    extra = info.extra
    while len(extra) >= 4:
        tag, length = struct.unpack_from("<HH", extra)
        if tag == 0x5455 and length >= 5:
            return int(struct.unpack_from("<I", extra, 5)[0])
        extra = extra[4 + length :]
    return None


def _check_member(
    info: zipfile.ZipInfo, zf: zipfile.ZipFile, entry: dict[str, Any], manifest: dict[str, Any]
) -> None:
    root = Path(manifest["_root"])
    name = entry["name"]
    assert info.filename == name
    is_dir = name.endswith("/")
    assert info.is_dir() == is_dir
    if not is_dir:
        assert zf.read(info) == _uncompressed(entry, root), name

    # storage: which method, and whether the CRC follows the data (bit 3)
    storage = entry.get("storage", "auto")
    known = _crc_known(entry)
    descriptor = bool(info.flag_bits & 0x08)
    if is_dir or (storage in ("auto", "store") and known) or entry.get("size") == 0:
        assert (info.compress_type, descriptor) == (zipfile.ZIP_STORED, False), name
    elif storage == "store":
        assert (info.compress_type, descriptor) == (zipfile.ZIP_STORED, True), name
    elif storage == "precompressed":
        assert (info.compress_type, descriptor) == (zipfile.ZIP_DEFLATED, False), name
    else:  # deflate-stored, or auto without a CRC
        assert (info.compress_type, descriptor) == (zipfile.ZIP_DEFLATED, not known), name

    # mode: the declared permission bits, else 0o644 / 0o755
    default_mode = 0o755 if is_dir else 0o644
    assert (info.external_attr >> 16) & 0o7777 == entry.get("mode", default_mode), name

    # mtime: DOS fields in UTC (2 s resolution) and the exact UTC seconds in 0x5455
    mtime = _expected_mtime(entry, manifest, root)
    if mtime is None:
        assert info.date_time == DOS_EPOCH, name
        assert _extended_time(info) is None, name
    else:
        t = time.gmtime(mtime)
        want = (*t[:5], t.tm_sec // 2 * 2) if t.tm_year >= 1980 else DOS_EPOCH
        assert info.date_time == want, name
        assert _extended_time(info) == mtime, name


def _check_download(download: Download, manifest: dict[str, Any], body: bytes) -> None:
    assert download.filename == manifest.get("filename", "download.zip")
    entries = manifest["entries"]
    assert len(body) == download.size == download.archive.size
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        assert zf.comment == manifest.get("comment", "").encode("utf-8")
        infos = zf.infolist()
        assert [i.filename for i in infos] == [e["name"] for e in entries]
        for info, entry in zip(infos, entries):
            _check_member(info, zf, entry, manifest)


@pytest.mark.parametrize("example", VALID, ids=[p.stem for p in VALID])
def test_valid_example(example: Path, root: Path, base_url: str, policy: Policy) -> None:
    body = load(example, root, base_url)
    manifest = json.loads(body)
    manifest["_root"] = str(root)
    download = prepare(body, policy)
    # Range support, before any byte: exactly the members without a known CRC are missing
    missing = [i for i, e in enumerate(manifest["entries"]) if not _crc_known(e)]
    assert download.archive.missing_crcs() == missing
    streamed = b"".join(download.archive)
    assert download.archive.missing_crcs() == []  # learned while streaming
    _check_download(download, manifest, streamed)

    async def run_async() -> tuple[Download, bytes]:
        adownload = await aprepare(body, policy)
        return adownload, b"".join([chunk async for chunk in adownload.archive])

    adownload, astreamed = anyio.run(run_async)
    assert adownload.fingerprint == download.fingerprint
    assert adownload.last_modified == download.last_modified
    assert astreamed == streamed


# -- invalid examples -----------------------------------------------------------------------


def _expected_problems(example: Path) -> list[tuple[str, str]]:
    """``PATH: substring`` lines, in the order the problems are reported."""
    out = []
    for line in example.with_suffix(".expected").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            path, sep, substring = line.partition(": ")
            assert sep, f"{example.name}.expected: no ': ' in {line!r}"
            out.append((path, substring))
    return out


def _problems_match(problems: list[Any], expected: list[tuple[str, str]]) -> None:
    got = [str(p) for p in problems]
    assert len(problems) == len(expected), f"got {got}"
    for problem, (path, substring) in zip(problems, expected):
        assert problem.path == path, f"got {got}"
        assert substring in problem.message, f"got {got}"


@pytest.mark.parametrize("example", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_example(example: Path, root: Path, base_url: str, policy: Policy) -> None:
    body = load(example, root, base_url)
    expected = _expected_problems(example)
    with pytest.raises(ManifestError) as caught:
        prepare(body, policy)
    _problems_match(caught.value.problems, expected)
    # the message lists every problem, one `path: message` per line
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]

    async def run_async() -> None:
        await aprepare(body, policy)

    with pytest.raises(ManifestError) as acaught:
        anyio.run(run_async)
    assert acaught.value.problems == caught.value.problems
