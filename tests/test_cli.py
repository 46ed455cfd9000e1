"""The command line, run for real: ``python -m zipware`` in a subprocess and ``main()`` in-process.

Archives are read back with the standard library's :mod:`zipfile`, member by member, and
compared with the files they came from.
"""

from __future__ import annotations

import calendar
import contextlib
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from zipware import Archive, FileSource, Member
from zipware.cli import SAMPLES_DIR, main

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
MTIME = calendar.timegm((2001, 2, 3, 4, 5, 6))  # even seconds: DOS times have 2 s steps


def zipware(
    *args: str | os.PathLike[str], cwd: Path | str | None = None, **kw
) -> subprocess.CompletedProcess[bytes]:
    """``python -m zipware ARGS`` with this checkout first on the path; output captured."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "zipware", *map(str, args)],
        check=False,
        cwd=cwd,
        env=ENV,
        stdin=subprocess.DEVNULL,
        timeout=120,
        **kw,
    )


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A small tree: nested files, an empty file, an empty directory, set modes and mtimes."""
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "hollow").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "empty.txt").write_bytes(b"")
    # over 65,535 bytes: several stored deflate blocks
    (root / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (root / "sub" / "deeper" / "c.txt").write_text("gamma " * 1000)
    (root / "a.txt").chmod(0o600)
    for p in [*root.rglob("*"), root]:
        os.utime(p, (MTIME, MTIME))
    return root


TREE_NAMES = [
    "src/",
    "src/a.txt",
    "src/empty.txt",
    "src/hollow/",
    "src/sub/",
    "src/sub/b.bin",
    "src/sub/deeper/",
    "src/sub/deeper/c.txt",
]


def assert_matches(archive: str | Path | bytes, files: dict[str, Path]) -> zipfile.ZipFile:
    """The archive holds exactly ``files`` (name -> path), in that order, with their bytes."""
    z = zipfile.ZipFile(io.BytesIO(archive) if isinstance(archive, bytes) else archive)
    assert z.testzip() is None  # every CRC checks
    assert z.namelist() == list(files)
    for info in z.infolist():
        path = files[info.filename]
        if info.is_dir():
            assert path.is_dir()
        else:
            assert z.read(info) == path.read_bytes(), info.filename
    return z


def tree_files(src: Path) -> dict[str, Path]:
    return {name: src.parent / name.rstrip("/") for name in TREE_NAMES}


# -- create ------------------------------------------------------------------------------


def test_create_zips_a_tree_recursively(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    r = zipware("create", out, "src", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""
    assert b"wrote" in r.stderr
    assert not (tmp_path / "out.zip.part").exists()
    z = assert_matches(out, tree_files(src))
    for info in z.infolist():
        st = (src.parent / info.filename.rstrip("/")).stat()
        assert info.external_attr >> 16 == st.st_mode, info.filename  # mode from stat
        assert info.date_time == (2001, 2, 3, 4, 5, 6), info.filename  # mtime from stat


def test_empty_directories_are_entries(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    assert zipware("create", out, src).returncode == 0
    info = zipfile.ZipFile(out).getinfo("src/hollow/")
    assert info.is_dir()
    assert info.file_size == 0
    zipfile.ZipFile(out).extractall(tmp_path / "x")
    assert (tmp_path / "x" / "src" / "hollow").is_dir()


def test_names_are_relative_to_each_paths_parent(src: Path, tmp_path: Path) -> None:
    """An absolute directory and a file deep down both keep only their own name."""
    out = tmp_path / "out.zip"
    r = zipware("create", out, src / "sub", src / "sub" / "deeper" / "c.txt", cwd="/")
    assert r.returncode == 0, r.stderr
    assert zipfile.ZipFile(out).namelist() == [
        "sub/",
        "sub/b.bin",
        "sub/deeper/",
        "sub/deeper/c.txt",
        "c.txt",
    ]


def test_trailing_slash_and_dot(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    assert zipware("create", out, "src/", cwd=tmp_path).returncode == 0
    assert zipfile.ZipFile(out).namelist() == TREE_NAMES
    assert zipware("create", out, ".", cwd=src).returncode == 0
    assert zipfile.ZipFile(out).namelist() == TREE_NAMES


@pytest.mark.parametrize("storage", ["auto", "store", "deflate-stored"])
def test_size_only_equals_the_archive_size(src: Path, tmp_path: Path, storage: str) -> None:
    out = tmp_path / "out.zip"
    r = zipware("create", "--size-only", "--storage", storage, "-", src)
    assert r.returncode == 0, r.stderr
    predicted = int(r.stdout.decode())
    assert r.stdout == f"{predicted}\n".encode()
    r = zipware("create", "--size-only", "--storage", storage, out, src)
    assert int(r.stdout) == predicted
    assert not out.exists()  # --size-only writes nothing
    assert zipware("create", "--storage", storage, out, src).returncode == 0
    assert out.stat().st_size == predicted
    z = assert_matches(out, tree_files(src))
    method = zipfile.ZIP_STORED if storage == "store" else zipfile.ZIP_DEFLATED
    assert z.getinfo("src/sub/b.bin").compress_type == method


def test_size_only_reads_no_file_data(tmp_path: Path) -> None:
    """A 1 TiB sparse file: reading it would take minutes; --size-only answers at once.

    The answer is the engine's own plan for the same stat data (ZIP64 sizes included).
    """
    big = tmp_path / "big.bin"
    try:
        with open(big, "wb") as f:
            f.truncate(1 << 40)
    except OSError as exc:
        pytest.skip(f"no 1 TiB sparse file here: {exc}")
    try:
        st = big.stat()
        start = time.monotonic()
        r = zipware("create", "--size-only", "-", big)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - start < 60
        expected = Archive(
            [
                Member(
                    "big.bin",
                    size=1 << 40,
                    source=FileSource(big),
                    mtime=st.st_mtime,
                    mode=st.st_mode,
                )
            ]
        ).size
        assert int(r.stdout) == expected > 1 << 40
    finally:
        big.unlink()  # pytest keeps old tmp dirs: leave no 1 TiB file behind


def test_stdout_archive_is_the_same_bytes_as_the_file(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    assert zipware("create", out, src).returncode == 0
    r = zipware("create", "-", src)
    assert r.returncode == 0, r.stderr
    assert r.stdout == out.read_bytes()
    assert_matches(r.stdout, tree_files(src))


def test_seed_form_without_subcommand(tmp_path: Path) -> None:
    (tmp_path / "file1.txt").write_text("one\n")
    (tmp_path / "file2.txt").write_text("two\n")
    r = zipware("files.zip", "file1.txt", "file2.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_matches(
        tmp_path / "files.zip",
        {"file1.txt": tmp_path / "file1.txt", "file2.txt": tmp_path / "file2.txt"},
    )


def test_in_process_main(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.zip"
    assert main(["create", "--quiet", str(out), str(src)]) == 0
    assert capsys.readouterr() == ("", "")  # --quiet: no summary, no progress
    assert_matches(out, tree_files(src))
    assert main(["create", "--size-only", "-", str(src)]) == 0
    assert int(capsys.readouterr().out) == out.stat().st_size
    # the seed form goes through main() too
    assert main([str(tmp_path / "seed.zip"), str(src)]) == 0
    assert (tmp_path / "seed.zip").read_bytes() == out.read_bytes()


def test_symlinks(src: Path, tmp_path: Path) -> None:
    """Links to files are followed; links to directories and broken links are skipped."""
    (src / "link.txt").symlink_to("a.txt")
    (src / "loop").symlink_to(".")
    (src / "broken").symlink_to("nowhere")
    out = tmp_path / "out.zip"
    r = zipware("create", out, src)
    assert r.returncode == 0, r.stderr
    assert b"'" + str(src / "loop").encode() + b"': symbolic link to a directory" in r.stderr
    assert b"'" + str(src / "broken").encode() + b"': broken symbolic link" in r.stderr
    z = zipfile.ZipFile(out)
    assert "src/loop/" not in z.namelist()
    assert not any(n.startswith(("src/loop", "src/broken")) for n in z.namelist())
    assert z.read("src/link.txt") == b"alpha\n"
    assert z.getinfo("src/link.txt").external_attr >> 16 == (src / "a.txt").stat().st_mode
    # a link named on the command line is followed, even to a directory
    (tmp_path / "alias").symlink_to(src)
    assert zipware("create", out, tmp_path / "alias").returncode == 0
    assert "alias/sub/deeper/c.txt" in zipfile.ZipFile(out).namelist()


def test_previous_archive_inside_the_tree_is_left_out(src: Path) -> None:
    out = src / "out.zip"
    assert zipware("create", out, src).returncode == 0
    size = zipware("create", "--size-only", out, src).stdout
    r = zipware("create", out, src)
    assert r.returncode == 0
    assert b"it is the output archive" in r.stderr
    assert int(size) == out.stat().st_size
    assert "src/out.zip" not in zipfile.ZipFile(out).namelist()


# -- progress ----------------------------------------------------------------------------


def test_progress_display(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    r = zipware("create", "--progress", out, src)
    assert r.returncode == 0
    assert b"\r[" in r.stderr
    assert b"100.0%" in r.stderr
    r = zipware("create", out, src)  # stderr is not a terminal: no display
    assert b"\r" not in r.stderr
    r = zipware("create", "--quiet", out, src)
    assert r.stderr == b""
    r = zipware("create", "--quiet", "--progress", out, src)
    assert r.returncode == 2  # one or the other


# -- failures ----------------------------------------------------------------------------


def test_file_shrinking_while_streamed_to_stdout(tmp_path: Path) -> None:
    """A file truncated after the size was announced: exit 1, and the output is no ZIP.

    Deterministic through back-pressure: ``a.bin`` (32 MiB) is archived before ``z.txt``.
    The size is planned before the first byte is written, so once the test has read the
    first bytes from the pipe, ``z.txt`` has been stat'ed. The process cannot get further
    ahead than its write buffer (4 MiB), the pipe and one read (256 KiB) before the test
    reads more, so ``z.txt`` has not been opened yet when the test truncates it.
    """
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(32 << 20))
    (root / "z.txt").write_bytes(b"z" * 100_000)
    size = int(zipware("create", "--size-only", "-", root).stdout)
    with subprocess.Popen(
        [sys.executable, "-m", "zipware", "create", "-", str(root)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        head = proc.stdout.read(65536)
        assert len(head) == 65536
        os.truncate(root / "z.txt", 50_000)
        data = head + proc.stdout.read()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 1
    assert len(data) < size
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(data))
    assert f"'{root / 'z.txt'}' changed size while it was being archived" in err
    assert "source ended after 50000 of 100000 bytes" in err
    assert "standard output is incomplete" in err


class _ChangeOnFirstDraw(io.StringIO):
    """A stand-in for stderr that changes a file when the progress display first draws."""

    def __init__(self, path: Path, change: str) -> None:
        super().__init__()
        self.path = path
        self.change = change
        self.fired = False

    def write(self, s: str) -> int:
        if "\r" in s and not self.fired:
            self.fired = True
            if self.change == "grow":
                with open(self.path, "ab") as f:
                    f.write(b"more")
            else:
                os.truncate(self.path, 10)
        return super().write(s)


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_file_changing_size_leaves_no_output(src: Path, tmp_path: Path, change: str) -> None:
    """A file that grows or shrinks during the run: exit 1, no output file, no ``.part``.

    Deterministic: with ``--progress`` the display is drawn once right after the size has
    been planned from stat and before any member is read; stderr is a stand-in whose
    first carriage return changes ``sub/b.bin``. An existing archive is left untouched.
    """
    out = tmp_path / "out.zip"
    out.write_bytes(b"previous")
    stderr = _ChangeOnFirstDraw(src / "sub" / "b.bin", change)
    with contextlib.redirect_stderr(stderr):
        code = main(["create", "--progress", str(out), str(src)])
    assert stderr.fired
    assert code == 1
    assert out.read_bytes() == b"previous"
    assert not (tmp_path / "out.zip.part").exists()
    err = stderr.getvalue()
    assert f"'{src / 'sub' / 'b.bin'}' changed size while it was being archived" in err
    assert "more than the declared" in err if change == "grow" else "source ended" in err
    assert f"nothing was written to '{out}'" in err
    # the same, with no previous archive: nothing is left behind
    out.unlink()
    (src / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    stderr = _ChangeOnFirstDraw(src / "sub" / "b.bin", change)
    with contextlib.redirect_stderr(stderr):
        assert main(["create", "--progress", str(out), str(src)]) == 1
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_backslash_in_a_name_is_refused(src: Path, tmp_path: Path) -> None:
    """On Linux ``a\\b`` is a file name; in a ZIP name the backslash is refused (exit 2)."""
    bad = src / "sub" / "a\\b"
    bad.write_text("x")
    out = tmp_path / "out.zip"
    r = zipware("create", out, src)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "error: cannot archive" in err
    assert f"'{bad}' as 'src/sub/a\\b': name contains a backslash" in err
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    try:
        with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as f:
            f.write(b"x")
    except OSError:
        pytest.skip("this file system wants UTF-8 names")
    r = zipware("create", tmp_path / "out.zip", root)
    assert r.returncode == 2
    assert b"caf\\xe9.txt': the name is not valid UTF-8" in r.stderr
    assert not (tmp_path / "out.zip").exists()


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "a.txt").write_text(d)
    r = zipware("create", "out.zip", "x/a.txt", "y/a.txt", cwd=tmp_path)
    assert r.returncode == 2
    assert b"as 'a.txt': duplicate name" in r.stderr
    assert not (tmp_path / "out.zip").exists()


def test_bad_command_lines(src: Path, tmp_path: Path) -> None:
    r = zipware("create", tmp_path / "out.zip", tmp_path / "missing")
    assert r.returncode == 2
    assert b"missing': No such file or directory" in r.stderr
    r = zipware("create", tmp_path, src)  # the archive would replace a directory
    assert r.returncode == 2
    assert b"is a directory" in r.stderr
    assert zipware().returncode == 2
    assert zipware("create", "out.zip").returncode == 2  # no PATH
    assert zipware("create", "--storage", "deflate", "out.zip", src).returncode == 2
    assert zipware("nonsense").returncode == 2
    r = zipware("create", tmp_path / "no" / "such" / "dir.zip", src)
    assert r.returncode == 1
    assert b"cannot create" in r.stderr
    assert main(["create", str(tmp_path / "out.zip")]) == 2
    assert main(["create", str(tmp_path / "out.zip"), str(tmp_path / "missing")]) == 2


def test_refuses_to_write_to_a_terminal(src: Path) -> None:
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    try:
        r = zipware("create", "-", src, stdout=follower, stderr=subprocess.PIPE)
    finally:
        os.close(follower)
        os.close(leader)
    assert r.returncode == 2
    assert b"refusing to write a ZIP archive to a terminal" in r.stderr


def test_help_documents_commands_and_exit_codes() -> None:
    r = zipware("--help")
    assert r.returncode == 0
    for word in (b"create", b"demo", b"exit status", b"backslash", b"ARCHIVE.zip PATH"):
        assert word in r.stdout
    r = zipware("create", "--help")
    assert r.returncode == 0
    text = b" ".join(r.stdout.split())
    for word in (b"--size-only", b"symbolic links to directories", b"deflate-stored"):
        assert word in text
    assert main(["--version"]) == 0


# -- demo --------------------------------------------------------------------------------


def sample_files() -> dict[str, Path]:
    """The shipped samples as the demo names them: depth first, in name order."""
    files: dict[str, Path] = {}

    def walk(d: Path, prefix: str) -> None:
        files[prefix] = d
        for p in sorted(d.iterdir(), key=lambda p: p.name):
            if p.is_dir():
                walk(p, f"{prefix}{p.name}/")
            else:
                files[prefix + p.name] = p

    walk(Path(SAMPLES_DIR), "zipware-demo/")
    return files


def test_demo_writes_the_samples(tmp_path: Path) -> None:
    r = zipware("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "zipware-demo.zip"
    z = assert_matches(out, sample_files())
    assert "zipware-demo/données/été.txt" in z.namelist()
    assert z.getinfo("zipware-demo/données/été.txt").flag_bits & 0x800  # UTF-8 name
    text = r.stdout.decode()
    assert "zipware-demo/données/été.txt" in text
    size = f"{out.stat().st_size:,} bytes"
    assert f"predicted size (before reading any file): {size}" in text
    assert f"produced size:                            {size} (match)" in text


def test_demo_output_option_and_stdout(tmp_path: Path) -> None:
    out = tmp_path / "d.zip"
    assert main(["demo", "-q", "-o", str(out)]) == 0
    r = zipware("demo", "-o", "-")
    assert r.returncode == 0
    assert r.stdout == out.read_bytes()  # the listing goes to stderr then
    assert b"(match)" in r.stderr
    assert_matches(r.stdout, sample_files())
