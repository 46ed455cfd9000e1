"""Independent ZIP readers for the reader-matrix tests.

Each reader opens an archive with one real implementation and reports what that reader
*extracted*: one :class:`Found` per entry, whose size and CRC-32 are computed here (or by the
Java checker) from the bytes the reader produced, never copied from the archive's headers.
:func:`read` turns that into ``{name: (size, crc32)}``; :func:`check_all` runs the matrix and
compares every reader with the expected listing.

An archive is given as a path, or as a *stream*: a zero-argument callable returning a fresh
iterable of the archive's bytes (``lambda: Archive(make_members())``), so a multi-GiB archive
can be fed to a reader through a pipe without touching the disk. Readers that need a seekable
file (zipfile, unzip, 7-Zip, JDK ``ZipFile``) take a path only. Streaming readers
(stream-unzip, bsdtar on stdin, JDK ``ZipInputStream`` on stdin) take either and always read
through a pipe: a file redirected to bsdtar's stdin would be seekable and libarchive would use
its central-directory reader instead of its streaming one.

Directories are reported with a trailing ``/`` and ``(0, 0)``. Readers that write every
member's bytes into one stream (``unzip -p``, ``7zz x -so``) are split by
the sizes in the same reader's own listing, and the total must match to the byte, so a member
the reader extracted short or long shows up as a size or CRC difference.

A missing tool makes the test fail when the ``CI`` environment variable is set, and skips it
with the reason otherwise. Subprocesses run with ``LC_ALL=C.UTF-8`` (non-ASCII names) and
``TZ=UTC`` (listings show the UTC modification time).
"""

from __future__ import annotations

import atexit
import calendar
import contextlib
import fcntl
import functools
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

try:  # the fast CRC when installed (zipware's "fast" extra); the result is the same
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - depends on what is installed
    from zlib import crc32 as _crc32

__all__ = [
    "COMMENT_READERS",
    "READERS",
    "Found",
    "Listing",
    "Reader",
    "ReaderError",
    "check_all",
    "crc32",
    "diff_listing",
    "file_chunks",
    "read",
    "reader",
    "require",
]

Listing = dict[str, tuple[int, int]]
"""``{name: (size, crc32)}``; directories end with ``/`` and are ``(0, 0)``."""

Stream = Callable[[], Iterable[bytes]]
ArchiveInput = str | os.PathLike[str] | Stream

T = TypeVar("T")

READ_SIZE = 1 << 20
JAVA_SOURCE = Path(__file__).parent / "java" / "ZipCheck.java"


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32 as in zlib (ISA-L's when installed: same result, much faster)."""
    return _crc32(data, value)


class ReaderError(Exception):
    """A reader refused the archive, failed, or produced bytes its own listing cannot explain."""


@dataclass(frozen=True)
class Found:
    """One entry as a reader extracted it.

    ``size`` and ``crc`` describe the bytes the reader produced. ``mtime`` (Unix seconds, as
    the reader shows it with ``TZ=UTC``) and ``mode`` (``st_mode``) are None where the reader
    does not show them.
    """

    name: str
    size: int
    crc: int
    mtime: int | None = None
    mode: int | None = None


# -- plumbing -------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
    return env


def _is_path(archive: ArchiveInput) -> bool:
    return isinstance(archive, (str, os.PathLike))


def _path(archive: ArchiveInput, who: str) -> str:
    if not _is_path(archive):
        raise TypeError(f"{who} needs a seekable file: give it a path, not a stream")
    return os.fspath(archive)  # type: ignore[arg-type]


def file_chunks(path: str | os.PathLike[str], size: int = READ_SIZE) -> Iterator[bytes]:
    """The bytes of a file, ``size`` at a time."""
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(size):
            yield chunk


def _feed(archive: ArchiveInput) -> Iterable[bytes]:
    """A fresh iterable of the archive's bytes, from a file or a stream."""
    if _is_path(archive):
        return file_chunks(archive)  # type: ignore[arg-type]
    return archive()  # type: ignore[operator]


def _grow_pipe(f: IO[bytes] | None) -> None:
    # 1 MiB pipes instead of 64 KiB: far fewer system calls for multi-GiB streams (Linux)
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if f is None or setsize is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(f.fileno(), setsize, READ_SIZE)


def _read_all(f: IO[bytes]) -> bytes:
    return f.read()


def _run(
    cmd: Sequence[str],
    *,
    feed: Iterable[bytes] | None = None,
    consume: Callable[[IO[bytes]], T] = _read_all,  # type: ignore[assignment]
) -> tuple[T, str, int]:
    """Run ``cmd``, write ``feed`` to its stdin from a thread, hand its stdout to ``consume``.

    Returns what ``consume`` returned (it must read to the end), the standard error and the
    exit status. An exception raised while producing ``feed`` (a zipware error, say) is
    raised here, since the reader's own complaint would only be its consequence.
    """
    failure: list[BaseException] = []
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=_env(),
        )
        _grow_pipe(proc.stdout)
        _grow_pipe(proc.stdin)
        writer = None
        if feed is not None:
            stdin = proc.stdin
            assert stdin is not None

            def write() -> None:
                try:
                    for chunk in feed:
                        stdin.write(chunk)
                except (BrokenPipeError, ValueError):
                    pass  # the reader stopped early (or was killed): its status says why
                except BaseException as exc:  # re-raised in the caller
                    failure.append(exc)
                finally:
                    with contextlib.suppress(OSError, ValueError):
                        stdin.close()

            writer = threading.Thread(target=write, name=f"feed {cmd[0]}", daemon=True)
            writer.start()
        assert proc.stdout is not None
        try:
            result = consume(proc.stdout)
            if proc.stdout.read(1):
                raise ReaderError(f"{cmd[0]}: output left unread")  # pragma: no cover
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            status = proc.wait()
            if writer is not None:
                writer.join()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if failure:
        raise failure[0]
    return result, stderr, status


def _fail(cmd: Sequence[str], status: int, stderr: str, stdout: str = "") -> ReaderError:
    text = (stderr.strip() or stdout.strip())[-3000:]
    return ReaderError(f"{' '.join(cmd[:2])} exited {status}: {text}")


def _splitter(sizes: Sequence[int]) -> Callable[[IO[bytes]], list[tuple[int, int]]]:
    """A consumer that cuts one concatenated output into members of the listed ``sizes``.

    Returns ``(bytes received, crc32)`` per member; raises if the output is longer than the
    listing explains (shorter output shows as short members).
    """

    def consume(f: IO[bytes]) -> list[tuple[int, int]]:
        n = len(sizes)
        ends: list[int] = []
        total = 0
        for size in sizes:
            total += size
            ends.append(total)
        crcs = [0] * n
        k = 0
        pos = 0
        extra = 0
        read = getattr(f, "read1", f.read)
        while chunk := read(READ_SIZE):
            view = memoryview(chunk)
            off = 0
            while off < len(view):
                while k < n and ends[k] <= pos:
                    k += 1
                if k == n:
                    extra += len(view) - off
                    break
                take = min(len(view) - off, ends[k] - pos)
                crcs[k] = crc32(view[off : off + take], crcs[k])
                off += take
                pos += take
        if extra:
            raise ReaderError(f"extracted {extra} bytes more than its own listing's sizes")
        out = []
        start = 0
        for end, crc in zip(ends, crcs, strict=True):
            out.append((max(0, min(pos, end) - start), crc))
            start = end
        return out

    return consume


@functools.lru_cache(maxsize=4096)
def _timegm(digits: str) -> int:
    """Unix seconds of a UTC time given as its digits, ``YYYYMMDDhhmmss``."""
    d = [int(digits[i : i + 2]) for i in range(4, 14, 2)]
    return calendar.timegm((int(digits[:4]), *d, 0, 0, 0))


_PERM_TYPES = {"-": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK}


@functools.lru_cache(maxsize=4096)
def _parse_perm(text: str) -> int | None:
    """``drwxr-sr-x`` -> st_mode; None if it is not a Unix permission string."""
    if len(text) != 10 or text[0] not in _PERM_TYPES:
        return None
    mode = _PERM_TYPES[text[0]]
    bits = text[1:]
    for i, (flag, bit) in enumerate(zip("rwxrwxrwx", range(8, -1, -1), strict=True)):
        c = bits[i]
        if c == flag or (flag == "x" and c in "sst"):
            mode |= 1 << bit
        elif c not in "-SsTt":
            return None
    specials = {2: stat.S_ISUID, 5: stat.S_ISGID, 8: stat.S_ISVTX}
    for i, bit in specials.items():
        if bits[i] in "sStT":
            mode |= bit
    return mode


# -- the readers ----------------------------------------------------------------------------


def scan_zipfile(archive: ArchiveInput) -> list[Found]:
    """CPython ``zipfile``: reads every member (it checks the CRC at the end of each)."""
    path = _path(archive, "zipfile")
    found = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                crc = 0
                size = 0
                with zf.open(info) as f:
                    while chunk := f.read(READ_SIZE):
                        crc = crc32(chunk, crc)
                        size += len(chunk)
                mode = info.external_attr >> 16
                found.append(
                    Found(
                        info.filename,
                        size,
                        crc,
                        # the DOS fields, which zipware writes in UTC, 2-second grained
                        calendar.timegm((*info.date_time, 0, 0, 0)),
                        mode or None,
                    )
                )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as exc:
        raise ReaderError(f"zipfile: {type(exc).__name__}: {exc}") from exc
    return found


def scan_stream_unzip(archive: ArchiveInput) -> list[Found]:
    """stream-unzip, fed the archive chunk by chunk (it never seeks)."""
    from stream_unzip import stream_unzip

    found = []
    try:
        for bname, _size, chunks in stream_unzip(_feed(archive)):
            crc = 0
            size = 0
            for chunk in chunks:
                crc = crc32(chunk, crc)
                size += len(chunk)
            found.append(Found(bname.decode("utf-8"), size, crc))
    except Exception as exc:
        if type(exc).__module__.startswith("zipware"):
            raise  # the archive could not be produced: not the reader's fault
        raise ReaderError(f"stream-unzip: {type(exc).__name__}: {exc}") from exc
    return found


# zipinfo -l -T: permissions, version, OS, size, text/binary + extra flags, compressed size,
# method, yyyymmdd.hhmmss, name (the rest of the line).
_ZIPINFO_LINE = re.compile(
    r"^(?P<perm>\S+)\s+\d+\.\d+\s+\S+\s+(?P<size>\d+)\s+\S\S\s+\d+\s+\S+\s+"
    r"(?P<when>\d{8}\.\d{6}) (?P<name>.*)$"
)


def _unzip_empty(status: int, text: str) -> bool:
    # Info-ZIP unzip 6.0 exits 1 ("warning") on an archive with no entries; ZIP-COMPAT.md
    # notes it. Only that warning is accepted, and only with the message that says so.
    return status == 1 and ("zipfile is empty" in text or "Empty zipfile." in text)


def scan_unzip(archive: ArchiveInput, only: Collection[str] | None = None) -> list[Found]:
    """Info-ZIP unzip: ``unzip -t`` (its own CRC check), ``zipinfo`` listing, ``unzip -p``.

    ``only`` restricts the test and the extraction to those members (names with no wildcard
    characters); the listing always covers every entry, so all names and sizes are still
    reported, and the members not extracted are reported with their size from the listing and
    the CRC -1.
    """
    path = _path(archive, "unzip")
    patterns = sorted(only) if only is not None else []
    assert not any(set(p) & set("*?[]\\") for p in patterns), "no wildcards in names"

    cmd = ["unzip", "-Z", "-l", "-T", path]
    out, err, status = _run(cmd)
    listing = out.decode("utf-8")
    if _unzip_empty(status, listing + err):
        cmd = ["unzip", "-tq", path]
        out, err, status = _run(cmd)
        if not _unzip_empty(status, out.decode("utf-8", "replace") + err):
            raise _fail(cmd, status, err, out.decode("utf-8", "replace"))
        return []
    if status != 0:
        raise _fail(cmd, status, err, listing)
    entries = []
    for line in listing.splitlines():
        m = _ZIPINFO_LINE.match(line)
        if m:
            entries.append(m)
    count = re.search(r"number of entries: (\d+)", listing)
    if count is None or int(count.group(1)) != len(entries):
        raise ReaderError(f"unzip: cannot parse the listing:\n{listing[-3000:]}")

    cmd = ["unzip", "-tq", path, *patterns]
    out, err, status = _run(cmd)
    if status != 0 or b"No errors detected" not in out:
        raise _fail(cmd, status, err, out.decode("utf-8", "replace"))

    wanted = [
        m
        for m in entries
        if not m["name"].endswith("/") and (only is None or m["name"] in patterns)
    ]
    cmd = ["unzip", "-p", path, *patterns]
    parts, err, status = _run(cmd, consume=_splitter([int(m["size"]) for m in wanted]))
    if status != 0:
        raise _fail(cmd, status, err)
    extracted = {id(m): part for m, part in zip(wanted, parts, strict=True)}

    found = []
    for m in entries:
        name = m["name"]
        if name.endswith("/"):
            size, crc = 0, 0
        elif id(m) in extracted:
            size, crc = extracted[id(m)]
        else:
            size, crc = int(m["size"]), -1
        found.append(
            Found(name, size, crc, _timegm(m["when"].replace(".", "")), _parse_perm(m["perm"]))
        )
    return found


def _sevenzip_blocks(text: str) -> list[dict[str, str]]:
    """The ``Key = Value`` blocks of ``7zz l -slt -ba``, one per entry."""
    blocks = []
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.rstrip("\r").partition(" =")
        if sep:
            fields[key] = value[1:]
        elif not line.strip() and fields:
            blocks.append(fields)
            fields = {}
    if fields:
        blocks.append(fields)
    return [b for b in blocks if "Path" in b]


def scan_7zip(archive: ArchiveInput, test: bool = True) -> list[Found]:
    """7-Zip: ``7zz t`` (its own CRC check), ``7zz l -slt`` listing, ``7zz x -so``.

    ``test=False`` leaves out ``7zz t``, a second pass over the data (``7zz x`` checks the
    CRCs too, and exits 2 on a mismatch).
    """
    path = _path(archive, "7zz")
    if test:
        cmd = ["7zz", "t", "-bd", path]
        out, err, status = _run(cmd)
        if status != 0 or b"Everything is Ok" not in out:
            raise _fail(cmd, status, err, out.decode("utf-8", "replace"))

    cmd = ["7zz", "l", "-slt", "-ba", path]
    out, err, status = _run(cmd)
    if status != 0:
        raise _fail(cmd, status, err)
    blocks = _sevenzip_blocks(out.decode("utf-8"))

    files = [b for b in blocks if b.get("Folder") != "+"]
    cmd = ["7zz", "x", "-so", "-bd", path]
    parts, err, status = _run(cmd, consume=_splitter([int(b["Size"]) for b in files]))
    if status != 0:
        raise _fail(cmd, status, err)
    extracted = {id(b): part for b, part in zip(files, parts, strict=True)}

    found = []
    for b in blocks:
        modified = b.get("Modified", "")
        mtime = _timegm(re.sub(r"\D", "", modified[:19])) if modified else None
        mode = _parse_perm(b.get("Attributes", "").split(" ")[-1])
        if b.get("Folder") == "+":
            found.append(Found(b["Path"] + "/", 0, 0, mtime, mode))
        else:
            size, crc = extracted[id(b)]
            found.append(Found(b["Path"], size, crc, mtime, mode))
    return found


def _tar_number(field: bytes) -> int:
    """A numeric tar header field: octal digits, or base-256 when the high bit is set."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _pax_records(body: bytes) -> dict[str, str]:
    """The ``LEN key=value\\n`` records of a pax extended header."""
    records = {}
    pos = 0
    while pos < len(body):
        space = body.index(b" ", pos)
        length = int(body[pos:space])
        key, _, value = body[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8")
        pos += length
    return records


def _untar(f: IO[bytes]) -> tuple[list[Found], str | None]:
    """Members of a tar stream (ustar with pax extended headers) with the CRC of their data.

    Returns what it could parse and, if the stream ended early or is not tar, why.
    """
    found: list[Found] = []
    pax: dict[str, str] = {}
    while True:
        header = f.read(512)
        if len(header) < 512:
            return found, "the tar stream ended before its end-of-archive blocks"
        if header == bytes(512):
            while f.read(READ_SIZE):  # the second zero block and the record padding
                pass
            return found, None
        if header[257:262] != b"ustar":
            return found, f"not a ustar header: {header[:80]!r}"
        size = _tar_number(header[124:136])
        kind = header[156:157]
        if kind in (b"x", b"g"):  # pax extended header: for the next member, or global
            body = f.read(size)
            f.read(-size % 512)
            if kind == b"x":
                pax = _pax_records(body)
            continue
        size = int(pax.get("size", size))
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0]
        path = pax.get("path") or (prefix + b"/" + name if prefix else name).decode("utf-8")
        mtime = int(float(pax["mtime"])) if "mtime" in pax else _tar_number(header[136:148])
        crc = 0
        got = 0
        while got < size:
            chunk = f.read(min(READ_SIZE, size - got))
            if not chunk:
                found.append(Found(path, got, crc, mtime))
                return found, f"the tar stream ended inside {path!r}"
            crc = crc32(chunk, crc)
            got += len(chunk)
        f.read(-size % 512)
        if kind == b"5" and not path.endswith("/"):
            path += "/"
        found.append(Found(path, got, crc, mtime))
        pax = {}


def scan_bsdtar(archive: ArchiveInput) -> list[Found]:
    """libarchive's bsdtar reading the archive on stdin, a pipe: ``bsdtar -cf - @-``.

    bsdtar copies every entry it reads from the ZIP on stdin into a pax tar stream on stdout,
    which is parsed here: names, sizes and the CRC of the bytes bsdtar extracted, in one pass
    (``-tvf -`` then ``-xOf -`` would read a multi-GiB stream twice). On a pipe libarchive
    uses its streaming ZIP reader, which sees local headers only: the mtime (from the 0x5455
    extra or the DOS fields) is reported, the Unix mode (0666 less the umask) is not.
    """
    cmd = ["bsdtar", "-c", "-f", "-", "--format", "pax", "@-"]
    (found, problem), err, status = _run(cmd, feed=_feed(archive), consume=_untar)
    if status != 0:
        raise _fail(cmd, status, err + (f"\n({problem})" if problem else ""))
    if problem is not None:
        raise ReaderError(f"bsdtar: {problem}")
    return found


_java_classes: dict[str, Path] = {}  # "dir": where ZipCheck.class was compiled
_java_lock = threading.Lock()


def compile_zipcheck(directory: str | os.PathLike[str]) -> Path:
    """Compile ``java/ZipCheck.java`` into ``directory`` (once); later runs use the class."""
    with _java_lock:
        if "dir" not in _java_classes:
            out = Path(directory)
            cmd = ["javac", "-d", str(out), str(JAVA_SOURCE)]
            _, err, status = _run(cmd)
            if status != 0:
                raise _fail(cmd, status, err)
            _java_classes["dir"] = out
        return _java_classes["dir"]


def _java(*args: str) -> list[str]:
    # javac once per session when there is one; else the single-file source launcher
    if "dir" not in _java_classes and shutil.which("javac"):
        directory = tempfile.mkdtemp(prefix="zipcheck-")
        atexit.register(shutil.rmtree, directory, True)
        compile_zipcheck(directory)
    # serial GC and the C1 compiler only: less start-up work, no threads competing for the
    # cores; CRC32 is an intrinsic in C1 too, so multi-GiB members read as fast
    head = ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    if "dir" in _java_classes:
        return [*head, "-cp", str(_java_classes["dir"]), "ZipCheck", *args]
    return [*head, str(JAVA_SOURCE), *args]


def _parse_zipcheck(text: str) -> list[Found]:
    found = []
    for line in text.splitlines():
        size, crc, mtime, name = line.split(" ", 3)
        found.append(Found(name, int(size), int(crc, 16), None if mtime == "-" else int(mtime)))
    return found


def scan_jdk_zipfile(archive: ArchiveInput) -> list[Found]:
    """JDK ``java.util.zip.ZipFile`` (central directory), via ``java/ZipCheck.java``."""
    cmd = _java("zipfile", _path(archive, "java.util.zip.ZipFile"))
    out, err, status = _run(cmd)
    if status != 0:
        raise _fail(cmd[-3:], status, err)
    return _parse_zipcheck(out.decode("utf-8"))


def scan_jdk_zipinputstream(archive: ArchiveInput) -> list[Found]:
    """JDK ``java.util.zip.ZipInputStream`` reading standard input (a pipe)."""
    cmd = _java("stream")
    out, err, status = _run(cmd, feed=_feed(archive))
    if status != 0:
        raise _fail(cmd[-2:], status, err)
    return _parse_zipcheck(out.decode("utf-8"))


def comment_zipfile(path: str | os.PathLike[str]) -> str:
    """The archive comment as CPython ``zipfile`` reads it."""
    with zipfile.ZipFile(path) as zf:
        return zf.comment.decode("utf-8")


def comment_unzip(path: str | os.PathLike[str]) -> str:
    """The archive comment as ``unzip -z`` prints it (after its "Archive:" line)."""
    cmd = ["unzip", "-z", os.fspath(path)]
    out, err, status = _run(cmd)
    if status != 0:
        raise _fail(cmd, status, err)
    lines = out.decode("utf-8").split("\n")
    assert lines[0].startswith("Archive:"), lines
    return "\n".join(lines[1:]).rstrip("\n")


def comment_7zip(path: str | os.PathLike[str]) -> str:
    """The archive comment from the archive block of ``7zz l -slt`` (one line)."""
    cmd = ["7zz", "l", "-slt", os.fspath(path)]
    out, err, status = _run(cmd)
    if status != 0:
        raise _fail(cmd, status, err)
    head = out.decode("utf-8").split("\n----------\n")[0]
    m = re.search(r"^Comment = (.*)$", head, re.MULTILINE)
    return m.group(1) if m else ""


COMMENT_READERS: dict[str, Callable[[str | os.PathLike[str]], str]] = {
    "zipfile": comment_zipfile,
    "unzip": comment_unzip,
    "7zz": comment_7zip,
}


# -- the matrix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """One reader of the matrix. ``streaming`` readers take a stream as well as a path."""

    name: str
    scan: Callable[..., list[Found]]
    tools: tuple[str, ...]
    streaming: bool

    def missing(self) -> list[str]:
        """The tools this reader needs that are not installed."""
        missing = [tool for tool in self.tools if shutil.which(tool) is None]
        if self.name == "stream-unzip":
            try:
                import stream_unzip  # noqa: F401
            except ImportError:
                missing.append("the stream-unzip package")
        return missing

    def __str__(self) -> str:
        return self.name


READERS: tuple[Reader, ...] = (
    Reader("zipfile", scan_zipfile, (), streaming=False),
    Reader("stream-unzip", scan_stream_unzip, (), streaming=True),
    Reader("unzip", scan_unzip, ("unzip",), streaming=False),
    Reader("7zz", scan_7zip, ("7zz",), streaming=False),
    Reader("bsdtar", scan_bsdtar, ("bsdtar",), streaming=True),
    Reader("jdk-zipfile", scan_jdk_zipfile, ("java",), streaming=False),
    Reader("jdk-zipinputstream", scan_jdk_zipinputstream, ("java",), streaming=True),
)
_BY_NAME = {r.name: r for r in READERS}


def reader(name: str) -> Reader:
    """The reader called ``name``."""
    return _BY_NAME[name]


def in_ci() -> bool:
    """Whether missing tools must fail rather than skip (the ``CI`` variable is set)."""
    return bool(os.environ.get("CI"))


def require(r: Reader) -> None:
    """Skip the running test if ``r``'s tools are missing (fail instead when CI is set)."""
    missing = r.missing()
    if not missing:
        return
    message = f"reader {r.name}: {', '.join(missing)} not installed"
    if in_ci():
        pytest.fail(f"{message} (CI is set: every reader of the matrix is required)", False)
    pytest.skip(message)


def to_listing(found: Iterable[Found], who: str = "reader") -> Listing:
    """``{name: (size, crc32)}``; a name seen twice is an error."""
    listing: Listing = {}
    for f in found:
        if f.name in listing:
            raise ReaderError(f"{who}: {f.name!r} listed twice")
        listing[f.name] = (f.size, f.crc)
    return listing


def read(r: Reader | str, archive: ArchiveInput, **options: Any) -> Listing:
    """What reader ``r`` extracted from ``archive``: ``{name: (size, crc32)}``."""
    r = reader(r) if isinstance(r, str) else r
    return to_listing(r.scan(archive, **options), r.name)


def diff_listing(got: Listing, expected: Listing, limit: int = 10) -> list[str]:
    """Human-readable differences between two listings (empty when they are equal)."""
    problems = []
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    wrong = [n for n in expected if n in got and got[n] != expected[n]]
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[:limit]}")
    if extra:
        problems.append(f"{len(extra)} unexpected, e.g. {extra[:limit]}")
    for n in wrong[:limit]:
        (gs, gc), (es, ec) = got[n], expected[n]
        problems.append(f"{n!r}: got {gs} bytes crc {gc:08x}, expected {es} bytes crc {ec:08x}")
    if len(wrong) > limit:
        problems.append(f"... and {len(wrong) - limit} more members differ")
    return problems


def check_all(
    archive: ArchiveInput,
    expected: Listing,
    *,
    file: str | os.PathLike[str] | Callable[[], str | os.PathLike[str]] | None = None,
    readers: Iterable[Reader | str] | None = None,
    skip: dict[str, str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Listing]:
    """Run ``readers`` (all of them by default) on ``archive``; compare with ``expected``.

    ``archive`` is a path or a stream. Readers that need a seekable file get ``archive`` if it
    is a path, else ``file`` (a path, or a callable that writes the archive and returns its
    path, called only if such a reader runs); without one they are skipped. ``skip`` maps
    reader names to the reason they do not apply to this archive. ``options`` passes keyword
    arguments to a reader's scan (``{"unzip": {"only": [...]}}``); members left out by
    ``only`` are compared by size alone.

    Raises AssertionError naming every reader that failed or disagreed; returns the listing
    of every reader that ran. A missing tool fails under CI and is skipped otherwise; if
    nothing at all ran, the test is skipped with the reasons.
    """
    chosen = [reader(r) if isinstance(r, str) else r for r in (readers or READERS)]
    skip = skip or {}
    options = options or {}
    problems: list[str] = []
    skipped: list[str] = []
    results: dict[str, Listing] = {}
    for r in chosen:
        if r.name in skip:
            skipped.append(f"{r.name}: {skip[r.name]}")
            continue
        missing = r.missing()
        if missing:
            message = f"{r.name}: {', '.join(missing)} not installed"
            if in_ci():
                problems.append(f"{message} (CI is set: every reader is required)")
            else:
                skipped.append(message)
            continue
        target: ArchiveInput | None = archive
        if not r.streaming and not _is_path(archive):
            target = file() if callable(file) else file
            if target is None:
                skipped.append(f"{r.name}: needs a seekable file and none was given")
                continue
        try:
            got = read(r, target, **options.get(r.name, {}))
        except ReaderError as exc:
            problems.append(f"{r.name} failed: {exc}")
            continue
        want = expected
        if "only" in options.get(r.name, {}):
            only = set(options[r.name]["only"])
            want = {
                n: v if n in only or n.endswith("/") else (v[0], -1) for n, v in expected.items()
            }
        results[r.name] = got
        diff = diff_listing(got, want)
        if diff:
            problems.append(f"{r.name} disagrees: " + "; ".join(diff))
    if problems:
        raise AssertionError("\n".join(problems))
    if not results and skipped:
        pytest.skip("; ".join(skipped))
    return results
