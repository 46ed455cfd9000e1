"""The manifest subcommands: ``build``, ``size``, ``check`` and ``schema``.

Run for real (``python -m zipware`` in a subprocess) and in-process (``main()``); archives
are read back with :mod:`zipfile` and compared with what the manifest describes. URL entries
are served by a loopback ``http.server`` in a thread.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zipware import FileSource
from zipware.cli import main
from zipware.manifest import schema

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    "NO_PROXY": "*",  # the loopback server must be reached directly
}
MTIME = calendar.timegm((2001, 2, 3, 4, 5, 6))  # even seconds: DOS times have 2 s steps


def zipware(
    *args: str | os.PathLike[str],
    cwd: Path | str | None = None,
    input: bytes | None = None,
    **kw: Any,
) -> subprocess.CompletedProcess[bytes]:
    """``python -m zipware ARGS`` with this checkout first on the path; output captured."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    if input is None:
        kw["stdin"] = subprocess.DEVNULL
    return subprocess.run(
        [sys.executable, "-m", "zipware", *map(str, args)],
        check=False,
        cwd=cwd,
        env=ENV,
        input=input,
        timeout=120,
        **kw,
    )


def write_manifest(path: Path, entries: list[dict[str, Any]], **head: Any) -> Path:
    path.write_text(json.dumps({"version": 1, **head, "entries": entries}))
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory holding files and, next to them, a manifest naming them by relative path."""
    root = tmp_path / "site"
    (root / "media" / "2024").mkdir(parents=True)
    (root / "media" / "a.txt").write_text("alpha\n")
    (root / "media" / "2024" / "b.bin").write_bytes(os.urandom(150_000))  # several blocks
    (root / "media" / "empty.txt").write_bytes(b"")
    for p in (root / "media").rglob("*"):
        os.utime(p, (MTIME, MTIME))
    write_manifest(
        root / "manifest.json",
        [
            {"name": "docs/a.txt", "path": "media/a.txt"},
            {"name": "b.bin", "path": "media/2024/b.bin", "mode": 0o600},
            {"name": "empty.txt", "path": "media/empty.txt"},
            {"name": "folder/"},
            {"name": "note.txt", "text": "héllo\n", "mtime": "2020-01-01T00:00:00Z"},
            {"name": "raw.bin", "data": base64.b64encode(b"\x00\x01\x02").decode()},
        ],
        filename="site.zip",
    )
    return root


def expected(site: Path) -> dict[str, bytes]:
    media = site / "media"
    return {
        "docs/a.txt": (media / "a.txt").read_bytes(),
        "b.bin": (media / "2024" / "b.bin").read_bytes(),
        "empty.txt": b"",
        "folder/": b"",
        "note.txt": "héllo\n".encode(),
        "raw.bin": b"\x00\x01\x02",
    }


def assert_archive(data: bytes | Path, members: dict[str, bytes]) -> zipfile.ZipFile:
    """The archive holds exactly ``members``, in order, and passes zipfile's CRC checks."""
    z = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    assert z.namelist() == list(members)
    assert z.testzip() is None
    for name, content in members.items():
        assert z.read(name) == content, name
    return z


# -- build -------------------------------------------------------------------------------


def test_build_writes_the_manifest_archive(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    r = zipware("build", site / "manifest.json", "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    z = assert_archive(out, expected(site))
    assert z.getinfo("b.bin").external_attr >> 16 & 0o7777 == 0o600
    assert z.getinfo("docs/a.txt").date_time == (2001, 2, 3, 4, 5, 6)
    assert z.getinfo("note.txt").date_time == (2020, 1, 1, 0, 0, 0)
    assert z.getinfo("folder/").is_dir()
    assert not (tmp_path / "out.zip.part").exists()
    assert f"wrote {out}: 6 entries, {out.stat().st_size:,} bytes" in r.stderr.decode()


def test_size_and_check_agree_with_build(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    assert zipware("build", site / "manifest.json", "-o", out).returncode == 0
    r = zipware("size", site / "manifest.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{out.stat().st_size}\n".encode()
    r = zipware("check", site / "manifest.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"ok: 6 entries, {out.stat().st_size} bytes\n".encode()
    assert r.stderr == b""


def test_default_root_is_the_manifest_directory(site: Path, tmp_path: Path) -> None:
    """Relative paths resolve next to the manifest, whatever the current directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "media").mkdir()
    (elsewhere / "media" / "a.txt").write_text("the wrong file\n")
    r = zipware("build", "../site/manifest.json", "-o", "out.zip", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert_archive(elsewhere / "out.zip", expected(site))
    # and nothing outside that directory: not even a file next to it
    (tmp_path / "secret.txt").write_text("secret")
    bad = write_manifest(site / "bad.json", [{"name": "s.txt", "path": "../secret.txt"}])
    r = zipware("check", bad)
    assert r.returncode == 1
    assert r.stdout == b"$.entries[0].path: path '../secret.txt' is outside the allowed roots\n"


def test_stdin_manifest_and_stdout_archive(site: Path, tmp_path: Path) -> None:
    """``-`` reads the manifest from stdin (root: the current directory); ``-o -`` writes
    the archive to stdout, the same bytes as the file."""
    body = (site / "manifest.json").read_bytes()
    out = tmp_path / "out.zip"
    r = zipware("build", "-", "-o", out, cwd=site, input=body)
    assert r.returncode == 0, r.stderr
    assert_archive(out, expected(site))
    r = zipware("build", "-", "-o", "-", cwd=site, input=body)
    assert r.returncode == 0, r.stderr
    assert r.stdout == out.read_bytes()
    assert b"wrote standard output" in r.stderr
    r = zipware("size", "-", cwd=site, input=body)
    assert int(r.stdout) == out.stat().st_size
    r = zipware("check", "-", cwd=site, input=body)
    assert r.stdout.startswith(b"ok: 6 entries")
    # stdin's root is the current directory: from elsewhere, the paths are missing
    r = zipware("check", "-", cwd=tmp_path, input=body)
    assert r.returncode == 1
    assert b"$.entries[0].path: path 'media/a.txt' does not exist" in r.stdout


def test_roots_option(site: Path, tmp_path: Path) -> None:
    """Relative paths resolve against the first --root; absolute ones may be in any root."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.txt").write_text("gamma\n")
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {"name": "a.txt", "path": "a.txt"},
            {"name": "c.txt", "path": str(other / "c.txt")},
        ],
    )
    out = tmp_path / "out.zip"
    r = zipware("build", manifest, "--root", site / "media", "--root", other, "-o", out)
    assert r.returncode == 0, r.stderr
    assert_archive(out, {"a.txt": b"alpha\n", "c.txt": b"gamma\n"})
    # with --root given, the manifest's directory is no root
    r = zipware("check", manifest, "--root", site / "media")
    assert r.returncode == 1
    outside = f"path {str(other / 'c.txt')!r} is outside the allowed roots"
    assert r.stdout.decode() == f"$.entries[1].path: {outside}\n"


def test_in_process_main(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.zip"
    assert main(["build", "-q", str(site / "manifest.json"), "-o", str(out)]) == 0
    assert capsys.readouterr() == ("", "")  # --quiet: no progress, no summary
    assert_archive(out, expected(site))
    assert main(["size", str(site / "manifest.json")]) == 0
    assert capsys.readouterr().out == f"{out.stat().st_size}\n"
    assert main(["check", str(site / "manifest.json")]) == 0
    assert capsys.readouterr().out == f"ok: 6 entries, {out.stat().st_size} bytes\n"


def test_in_process_stdin(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(site)
    body = (site / "manifest.json").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    assert main(["size", "-"]) == 0
    size = int(capsys.readouterr().out)
    monkeypatch.setattr(sys, "stdin", io.StringIO(body.decode()))  # no .buffer
    assert main(["build", "-", "-o", str(tmp_path / "out.zip")]) == 0
    assert (tmp_path / "out.zip").stat().st_size == size


def test_progress_display(site: Path, tmp_path: Path) -> None:
    r = zipware("build", site / "manifest.json", "-o", tmp_path / "out.zip", "--progress")
    assert r.returncode == 0
    assert b"\r[" in r.stderr
    assert b"100.0%" in r.stderr
    r = zipware("build", site / "manifest.json", "-o", tmp_path / "out.zip")
    assert b"\r" not in r.stderr  # stderr is not a terminal: no display
    r = zipware("build", site / "manifest.json", "-o", tmp_path / "out.zip", "-q")
    assert r.stderr == b""


# -- reading no member data --------------------------------------------------------------


def test_size_and_check_read_no_member(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_reading(self: FileSource, offset: int = 0) -> Iterator[bytes]:
        raise AssertionError(f"{self.path} was read")

    monkeypatch.setattr(FileSource, "iter_chunks", no_reading)
    assert main(["size", str(site / "manifest.json")]) == 0
    assert int(capsys.readouterr().out) > 150_000
    assert main(["check", str(site / "manifest.json")]) == 0
    assert capsys.readouterr().out.startswith("ok: 6 entries")


def test_size_of_a_sparse_terabyte(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    try:
        with open(big, "wb") as f:
            f.truncate(1 << 40)
    except OSError as exc:
        pytest.skip(f"no 1 TiB sparse file here: {exc}")
    try:
        manifest = write_manifest(tmp_path / "m.json", [{"name": "big.bin", "path": "big.bin"}])
        r = zipware("size", manifest)
        assert r.returncode == 0, r.stderr
        assert int(r.stdout) > 1 << 40  # ZIP64 sizes, planned from stat alone
    finally:
        big.unlink()


# -- invalid manifests -------------------------------------------------------------------

BAD_ENTRIES: list[dict[str, Any]] = [
    {"name": "/etc/passwd", "text": "x"},
    {"name": "missing.txt", "path": "media/missing.txt"},
    {"name": "typo.txt", "text": "x", "sise": 1},
    {"name": "remote.bin", "url": "https://example.com/remote.bin", "size": 3},
    {"name": "ok.txt", "text": "x"},
    {"name": "ok.txt", "text": "y"},
    {"name": "two.txt", "text": "x", "path": "media/a.txt"},
]
BAD_PROBLEMS = [
    "$.entries[0].name: name is absolute",
    "$.entries[1].path: path 'media/missing.txt' does not exist",
    "$.entries[2]: Object contains unknown field `sise`",
    "$.entries[3].url: URL https://example.com/remote.bin is not in the allow-list",
    "$.entries[5].name: duplicate name",
    "$.entries[6]: has path and text: an entry takes exactly one source",
]


def test_invalid_manifest_lists_every_problem(site: Path, tmp_path: Path) -> None:
    manifest = write_manifest(site / "bad.json", BAD_ENTRIES)
    out = tmp_path / "out.zip"
    r = zipware("build", manifest, "-o", out)
    assert r.returncode == 2
    err = r.stderr.decode().splitlines()
    assert err[0] == f"zipware: error: invalid manifest '{manifest}' (6 problems):"
    assert [line.strip() for line in err[1:]] == BAD_PROBLEMS
    assert sorted(os.listdir(tmp_path)) == ["site"]  # nothing written, no .part

    r = zipware("size", manifest)
    assert r.returncode == 2
    assert r.stdout == b""
    assert [line.strip() for line in r.stderr.decode().splitlines()[1:]] == BAD_PROBLEMS

    r = zipware("check", manifest)
    assert r.returncode == 1  # check: problems found is status 1
    assert r.stdout.decode().splitlines() == BAD_PROBLEMS
    assert r.stderr.decode() == f"zipware: '{manifest}': 6 problems\n"


def test_every_problem_is_printed_however_many(tmp_path: Path) -> None:
    """ManifestError's message stops at 50 problems; the command line prints them all."""
    entries = [{"name": f"../up{i}.txt", "text": "x"} for i in range(70)]
    manifest = write_manifest(tmp_path / "m.json", entries)
    r = zipware("check", manifest)
    assert r.returncode == 1
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 70
    assert lines[69].startswith("$.entries[69].name: ")
    r = zipware("build", manifest, "-o", tmp_path / "out.zip")
    assert r.returncode == 2
    assert len(r.stderr.decode().splitlines()) == 71
    assert not (tmp_path / "out.zip").exists()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "$: not valid JSON: "),
        (b'{"version": 2, "entries": []}', "$.version: "),
        (b'{"version": 1}', "$: Object missing required field `entries`"),
        (b'{"version": 1, "entries": [], "filename": ""}', "$.filename: "),
    ],
)
def test_unusable_manifests(tmp_path: Path, body: bytes, problem: str) -> None:
    (tmp_path / "m.json").write_bytes(body)
    r = zipware("check", tmp_path / "m.json")
    assert r.returncode == 1
    assert r.stdout.decode().startswith(problem)
    r = zipware("build", "-", "-o", tmp_path / "out.zip", input=body)
    assert r.returncode == 2
    assert f"\n  {problem}" in r.stderr.decode()
    assert "invalid manifest standard input (1 problem)" in r.stderr.decode()
    assert not (tmp_path / "out.zip").exists()


def test_bad_command_lines(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = str(site / "manifest.json")
    for command in ("build", "size", "check"):
        extra = ["-o", str(tmp_path / "out.zip")] if command == "build" else []
        assert main([command, str(tmp_path / "missing.json"), *extra]) == 2, command
        err = capsys.readouterr().err
        assert "cannot read" in err and "No such file or directory" in err
        assert main([command, manifest, "--root", str(tmp_path / "nowhere"), *extra]) == 2
        assert "is not a directory" in capsys.readouterr().err
        assert main([command, manifest, "--allow-url", "ftp://example.com/", *extra]) == 2
        assert "error: --allow-url: " in capsys.readouterr().err
    assert main(["build", manifest]) == 2  # no -o
    assert main(["build", manifest, "-o", str(tmp_path)]) == 2  # -o names a directory
    assert "is a directory" in capsys.readouterr().err
    assert main(["build", manifest, "-o", str(tmp_path / "out.zip"), "-q", "--progress"]) == 2
    assert main(["size"]) == 2
    assert not (tmp_path / "out.zip").exists()
    r = zipware("build", tmp_path / "missing.json", "-o", tmp_path / "out.zip")
    assert r.returncode == 2
    assert r.stderr.startswith(b"zipware: error: cannot read")


# -- failures while writing --------------------------------------------------------------


def test_wrong_declared_crc_fails_while_writing(site: Path, tmp_path: Path) -> None:
    """The CRC is only known once the file is read: exit 1, no output, no .part file."""
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {"name": "b.bin", "path": "media/2024/b.bin"},
            {"name": "a.txt", "path": "media/a.txt", "crc32": "00000000"},
        ],
    )
    out = tmp_path / "out.zip"
    out.write_bytes(b"previous")
    r = zipware("build", manifest, "--root", site, "-o", out)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "$.entries[1] ('a.txt'): CRC-32 is " in err
    assert "declared 00000000" in err
    assert f"nothing was written to '{out}'" in err
    assert out.read_bytes() == b"previous"
    assert not (tmp_path / "out.zip.part").exists()
    r = zipware("build", manifest, "--root", site, "-o", "-")
    assert r.returncode == 1
    assert b"the output on standard output is incomplete" in r.stderr


class _ShrinkOnFirstDraw(io.StringIO):
    """A stand-in for stderr that truncates a file when the progress display first draws:
    after the size was planned from stat, before any member is read."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def write(self, s: str) -> int:
        if "\r" in s and self.path.stat().st_size > 10:
            os.truncate(self.path, 10)
        return super().write(s)


def test_file_changing_size_leaves_no_output(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    stderr = _ShrinkOnFirstDraw(site / "media" / "2024" / "b.bin")
    with contextlib.redirect_stderr(stderr):
        code = main(["build", "--progress", str(site / "manifest.json"), "-o", str(out)])
    assert code == 1
    err = stderr.getvalue()
    assert "$.entries[1] ('b.bin'): source ended after 10 of 150000 bytes" in err
    assert f"nothing was written to '{out}'" in err
    assert sorted(os.listdir(tmp_path)) == ["site"]


# -- URLs --------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[tuple[str, str]]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path))
        super().do_GET()

    def do_HEAD(self) -> None:
        self.requests.append(("HEAD", self.path))
        super().do_HEAD()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[tuple[str, str]]]]:
    """A loopback HTTP server for ``served/``: its base URL, directory and request log."""
    served = tmp_path / "served"
    (served / "files").mkdir(parents=True)
    log: list[tuple[str, str]] = []
    handler = type("Handler", (_Handler,), {"requests": log})

    def make(*args: Any) -> _Handler:
        return handler(*args, directory=str(served))

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_allow_url(
    server: tuple[str, Path, list[tuple[str, str]]], site: Path, tmp_path: Path
) -> None:
    base, served, log = server
    remote = os.urandom(100_000)
    (served / "files" / "remote.bin").write_bytes(remote)
    (served / "secret.txt").write_text("not under the prefix")
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {"name": "remote.bin", "url": f"{base}/files/remote.bin"},  # size found by HEAD
            {"name": "a.txt", "path": "media/a.txt"},
        ],
    )
    prefix = f"{base}/files/"
    out = tmp_path / "out.zip"

    r = zipware("check", manifest, "--root", site)  # no --allow-url: no URL at all
    assert r.returncode == 1
    assert r.stdout.decode() == (
        f"$.entries[0].url: URL {base}/files/remote.bin is not in the allow-list\n"
    )
    assert log == []

    r = zipware("size", manifest, "--root", site, "--allow-url", prefix)
    assert r.returncode == 0, r.stderr
    size = int(r.stdout)
    assert log == [("HEAD", "/files/remote.bin")]  # the size: a HEAD, no member data read

    r = zipware("build", manifest, "--root", site, "--allow-url", prefix, "-o", out)
    assert r.returncode == 0, r.stderr
    assert_archive(out, {"remote.bin": remote, "a.txt": b"alpha\n"})
    assert out.stat().st_size == size
    assert ("GET", "/files/remote.bin") in log

    # a URL outside the prefix is refused, as is a missing one (HEAD answers 404)
    bad = write_manifest(
        tmp_path / "bad.json",
        [
            {"name": "s.txt", "url": f"{base}/secret.txt"},
            {"name": "gone.bin", "url": f"{base}/files/gone.bin"},
        ],
    )
    r = zipware("check", bad, "--allow-url", prefix)
    assert r.returncode == 1
    lines = r.stdout.decode().splitlines()
    assert lines[0] == f"$.entries[0].url: URL {base}/secret.txt is not in the allow-list"
    assert lines[1].startswith("$.entries[1].url: size unknown: HTTP 404")


def test_allow_url_in_process(
    server: tuple[str, Path, list[tuple[str, str]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "*")
    base, served, log = server
    (served / "files" / "r.txt").write_bytes(b"remote\n")
    manifest = write_manifest(
        tmp_path / "m.json",
        [{"name": "r.txt", "url": f"{base}/files/r.txt", "size": 7, "crc32": "17e2624c"}],
    )
    out = tmp_path / "out.zip"
    code = main(["build", "-q", str(manifest), "--allow-url", base, "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert_archive(out, {"r.txt": b"remote\n"})
    assert log == [("GET", "/files/r.txt")]  # the size was declared: no HEAD


# -- schema and help ---------------------------------------------------------------------


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    r = zipware("schema")
    assert r.returncode == 0
    assert r.stdout.decode() == json.dumps(schema(), indent=2, sort_keys=True) + "\n"
    assert json.loads(r.stdout)["title"] == "zipware manifest v1"
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema()


def test_help() -> None:
    r = zipware("--help")
    assert r.returncode == 0
    for word in (b"build", b"size", b"check", b"schema", b"except for 'zipware check': 1"):
        assert word in r.stdout
    r = zipware("build", "--help")
    text = " ".join(r.stdout.decode().split())
    for words in (
        "the one root is the manifest file's directory (the current directory when "
        "MANIFEST is '-')",
        "--allow-url PREFIX",
        "written as ARCHIVE.part, then renamed",
        "exit status",
    ):
        assert words in text
    r = zipware("check", "--help")
    assert b"1    the manifest has problems" in r.stdout
