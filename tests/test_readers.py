"""The reader matrix: every kind of archive zipware writes, read back by every reader.

Rows are archive kinds, columns the readers of ``readers.py`` (CPython zipfile, stream-unzip,
Info-ZIP unzip, 7-Zip, bsdtar on a pipe, JDK ZipFile, JDK ZipInputStream on a pipe). Each
test compares what one reader *extracted* (size and CRC-32 of the bytes it produced) with
what the test put in. The small kinds are built once, checked against the predicted size,
and written to a temporary file; the ZIP64 kinds (``slow``) generate their gigabytes on the
fly and feed the streaming readers through a pipe, while the readers that need a seekable
file get one temporary file per archive, written only if the disk has room for it.

A missing reader fails the test when ``CI`` is set and skips it otherwise.
"""

from __future__ import annotations

import functools
import random
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zipware import Archive, BytesSource, IterSource, Member

try:
    from . import readers
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    import readers

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
MAX32 = 0xFFFFFFFF

READER_NAMES = [r.name for r in readers.READERS]

# JDK ZipInputStream refuses a STORED entry with a data descriptor before reading it ("only
# DEFLATED entries can have EXT descriptor"): a known limit of that reader, and the reason
# zipware's default never writes one (ZIP-COMPAT.md).
NO_JDK_STREAM = {
    "jdk-zipinputstream": "JDK ZipInputStream cannot read a stored member with a data "
    "descriptor (explicit storage='store' without a crc32); expected, see ZIP-COMPAT.md"
}


def data(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible random bytes."""
    return random.Random(seed).randbytes(n)


def text(n: int) -> bytes:
    """``n`` bytes of compressible text."""
    line = b"zipware streams ZIP64 archives with an exact size known up front.\n"
    return (line * (n // len(line) + 1))[:n]


def file(name: str, content: bytes, *, crc: bool = False, **kw: object) -> Member:
    """A member holding ``content``; ``crc=True`` declares its CRC-32."""
    if crc:
        kw["crc32"] = zlib.crc32(content)
    return Member(name, size=len(content), source=BytesSource(content), **kw)  # type: ignore[arg-type]


def precompressed(name: str, content: bytes, level: int = 6, **kw: object) -> Member:
    """A member whose source is a raw DEFLATE stream made by zlib (wbits=-15)."""
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    raw = z.compress(content) + z.flush()
    return Member(
        name,
        size=len(content),
        source=BytesSource(raw),
        crc32=zlib.crc32(content),
        storage="precompressed",
        compressed_size=len(raw),
        **kw,  # type: ignore[arg-type]
    )


# -- the small kinds --------------------------------------------------------------------------

BOUNDARY_SIZES = (0, 1, 65_534, 65_535, 65_536, 131_070, 131_071)
MTIMES = {
    "dos-epoch.txt": 315_532_800,  # 1980-01-01 00:00:00, the first DOS time
    "leap-odd-second.txt": 951_827_697,  # 2000-02-29 12:34:57: odd, DOS keeps 56
    "summer.txt": 1_623_745_801,  # 2021-06-15 08:30:01
    "y2038-minus-1.txt": 0x7FFF_FFFF,  # the last second the 0x5455 extra can hold
    "year-2100.txt": 4_102_444_800,  # past 2038: no extended timestamp, DOS fields only
    "dir-with-mtime/": 1_700_000_000,
}


def k_stored_crc() -> list[Member]:
    return [
        file("hello.txt", b"hello world\n", crc=True),
        file("random.bin", data(200_000, 1), crc=True),
        file("text.txt", text(100 * KiB), crc=True),
    ]


def k_deflate_stored() -> list[Member]:
    return [
        file("hello.txt", b"hello world\n"),
        file("random.bin", data(200_000, 2)),
        file("text.txt", text(100 * KiB)),
    ]


def k_deflate_stored_boundaries() -> list[Member]:
    return [file(f"ds-{n}.bin", data(n, n)) for n in BOUNDARY_SIZES]


def k_deflate_stored_crc_boundaries() -> list[Member]:
    # declared CRC with explicit deflate-stored: no data descriptor, bit 3 clear
    return [
        file(f"dsc-{n}.bin", data(n, n + 1), crc=True, storage="deflate-stored")
        for n in BOUNDARY_SIZES
    ]


def k_store_no_crc() -> list[Member]:
    return [
        file("one.bin", b"x", storage="store"),
        file("small.txt", b"stored, CRC unknown\n", storage="store"),
        file("two-blocks.bin", data(70_000, 3), storage="store"),
        file("empty.bin", b"", storage="store"),
    ]


def k_precompressed() -> list[Member]:
    return [
        precompressed("text.txt", text(300 * KiB)),
        precompressed("random.bin", data(50_000, 4), level=9),
        precompressed("tiny.txt", b"a", level=1),
        precompressed("empty.txt", b""),  # an empty final block: 2 bytes
    ]


def k_directories() -> list[Member]:
    return [
        Member("top/"),
        Member("top/nested/"),
        Member("top/nested/deeper/"),  # nested and empty
        file("top/nested/file.txt", b"in a nested directory\n", crc=True),
        file("top/data.bin", data(1000, 5)),
        Member("top/other/"),  # empty
        Member("empty-dir/"),
        file("no-dir-entry/inside.txt", b"its directory has no entry\n"),
    ]


def k_empty_files() -> list[Member]:
    return [
        Member("empty-auto.txt", size=0),
        Member("empty-bytes.txt", size=0, source=BytesSource(b""), crc32=0),
        Member("empty-unknown-crc.txt", size=0, source=BytesSource(b"")),
        Member("empty-store.txt", size=0, source=BytesSource(b""), storage="store"),
        Member("empty-deflate-stored.txt", size=0, storage="deflate-stored"),
        Member("dir/"),
        Member("dir/empty.txt", size=0),
        precompressed("empty-precompressed.txt", b""),
    ]


def k_empty_archive() -> list[Member]:
    return []


def k_non_ascii() -> list[Member]:
    return [
        file("café.txt", b"caf\xc3\xa9\n", crc=True),
        Member("日本語/"),
        file("日本語/ファイル.txt", "こんにちは\n".encode()),
        file("emoji 😀/smile.bin", data(3000, 6)),
        file("Ωmega/ünïcödé name with spaces.txt", b"spaces and accents\n", crc=True),
        precompressed("ελληνικά.txt", "αβγ".encode() * 100),
    ]


def k_modes() -> list[Member]:
    return [
        file("run.sh", b"#!/bin/sh\necho hi\n", mode=0o755),
        file("secret.key", b"0123", mode=0o600, crc=True),
        file("default.txt", b"default mode\n"),
        file("full-st-mode.txt", b"0o100640\n", mode=0o100640),
        Member("private/", mode=0o700),
        Member("public/"),
    ]


def k_mtimes() -> list[Member]:
    members = []
    for name, mtime in MTIMES.items():
        if name.endswith("/"):
            members.append(Member(name, mtime=mtime))
        else:
            members.append(file(name, name.encode(), mtime=mtime))
    members.append(file("no-mtime.txt", b"no mtime: the DOS epoch\n"))
    return members


def k_comment() -> list[Member]:
    return [file("readme.txt", b"see the archive comment\n", crc=True)]


def _prefixed(prefix: str, members: list[Member]) -> list[Member]:
    for m in members:
        m.name = prefix + m.name
    return members


def k_mixed_streamable() -> list[Member]:
    """Every kind but a stored member without CRC, so every reader applies."""
    return [
        Member("mixed/"),
        *_prefixed("mixed/stored/", k_stored_crc()),
        *_prefixed("mixed/ds/", k_deflate_stored()),
        *_prefixed("mixed/ds-crc/", k_deflate_stored_crc_boundaries()[:3]),
        *_prefixed("mixed/pre/", k_precompressed()),
        *_prefixed("mixed/dirs/", k_directories()),
        *_prefixed("mixed/empty/", k_empty_files()),
        *_prefixed("mixed/名前/", k_non_ascii()),
        *_prefixed("mixed/modes/", k_modes()),
        *_prefixed("mixed/mtimes/", k_mtimes()),
    ]


def k_mixed() -> list[Member]:
    return [*k_mixed_streamable(), *_prefixed("mixed/store-no-crc/", k_store_no_crc())]


@dataclass(frozen=True)
class Kind:
    id: str
    members: Callable[[], list[Member]]
    comment: str = ""
    skip: dict[str, str] = field(default_factory=dict)


COMMENT = "zipware test comment ✓ (UTF-8)"

KINDS = [
    Kind("stored-crc", k_stored_crc),
    Kind("deflate-stored", k_deflate_stored),
    Kind("deflate-stored-boundaries", k_deflate_stored_boundaries),
    Kind("deflate-stored-crc-boundaries", k_deflate_stored_crc_boundaries),
    Kind("store-no-crc", k_store_no_crc, skip=NO_JDK_STREAM),
    Kind("precompressed", k_precompressed),
    Kind("directories", k_directories),
    Kind("empty-files", k_empty_files),
    Kind("empty-archive", k_empty_archive),
    Kind("non-ascii", k_non_ascii),
    Kind("modes", k_modes),
    Kind("mtimes", k_mtimes),
    Kind("comment", k_comment, comment=COMMENT),
    Kind("mixed-streamable", k_mixed_streamable, comment=COMMENT),
    Kind("mixed", k_mixed, comment=COMMENT, skip=NO_JDK_STREAM),
]


def member_bytes(m: Member) -> bytes:
    """What a member holds, uncompressed."""
    if m.source is None:
        return b""
    assert isinstance(m.source, BytesSource)
    if m.storage == "precompressed":
        return zlib.decompress(m.source.data, -15)
    return m.source.data


def expected_listing(members: list[Member]) -> readers.Listing:
    out: readers.Listing = {}
    for m in members:
        content = member_bytes(m)
        assert len(content) == m.size
        out[m.name] = (len(content), zlib.crc32(content))
    return out


@pytest.fixture(scope="session", autouse=True)
def zipcheck_classes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile the JDK checker once per session into a pytest temporary directory."""
    if shutil.which("javac") and shutil.which("java"):
        readers.compile_zipcheck(tmp_path_factory.mktemp("java"))


@dataclass(frozen=True)
class Built:
    path: Path
    members: list[Member]
    expected: readers.Listing


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Kind], Built]:
    """Builds each kind's archive once: streamed, checked against its size, written."""
    cache: dict[str, Built] = {}
    directory = tmp_path_factory.mktemp("archives")

    def get(kind: Kind) -> Built:
        if kind.id not in cache:
            members = kind.members()
            archive = Archive(members, comment=kind.comment)
            blob = b"".join(archive)
            assert len(blob) == archive.size, "predicted size differs from the bytes"
            path = directory / f"{kind.id}.zip"
            path.write_bytes(blob)
            cache[kind.id] = Built(path, members, expected_listing(members))
        return cache[kind.id]

    return get


@pytest.mark.parametrize("reader", READER_NAMES)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.id)
def test_reader_matrix(kind: Kind, reader: str, build: Callable[[Kind], Built]) -> None:
    """One reader extracts exactly the members put into one kind of archive."""
    built = build(kind)
    readers.check_all(built.path, built.expected, readers=[reader], skip=kind.skip)


def test_check_all_runs_the_whole_matrix(build: Callable[[Kind], Built]) -> None:
    """``check_all`` with every reader at once, on the archive with every streamable kind."""
    built = build(KINDS[-2])
    results = readers.check_all(built.path, built.expected)
    assert set(results) <= set(READER_NAMES)


def test_check_all_reports_a_wrong_listing(build: Callable[[Kind], Built]) -> None:
    """The comparison itself: a changed CRC and a missing name are both reported."""
    built = build(KINDS[0])
    wrong = dict(built.expected)
    _, crc = wrong.pop("hello.txt")
    wrong["random.bin"] = (wrong["random.bin"][0], crc)
    with pytest.raises(AssertionError, match=r"zipfile disagrees: .*unexpected.*random\.bin"):
        readers.check_all(built.path, wrong, readers=["zipfile"])


def test_split_output_is_checked_against_the_listing() -> None:
    """Concatenated output (unzip -p, 7zz x -so) is cut by the listing's sizes, strictly."""
    import io

    split = readers._splitter([3, 0, 2])
    assert split(io.BytesIO(b"abcde")) == [
        (3, zlib.crc32(b"abc")),
        (0, 0),
        (2, zlib.crc32(b"de")),
    ]
    assert split(io.BytesIO(b"abcd")) == [(3, zlib.crc32(b"abc")), (0, 0), (1, zlib.crc32(b"d"))]
    with pytest.raises(readers.ReaderError, match="1 bytes more"):
        split(io.BytesIO(b"abcdef"))


# -- metadata: times, modes, comment ----------------------------------------------------------

# every reader but stream-unzip, which reports no time
MTIME_READERS = ["zipfile", "unzip", "7zz", "bsdtar", "jdk-zipfile", "jdk-zipinputstream"]
MODE_READERS = ["zipfile", "unzip", "7zz"]  # the JDK API and a streaming reader have no mode


@pytest.mark.parametrize("reader", MTIME_READERS)
def test_mtimes(reader: str, build: Callable[[Kind], Built]) -> None:
    """Times agree with the UTC mtime: exactly where the 0x5455 extra is read, else DOS.

    zipfile shows the DOS fields, which zipware writes in UTC with 2-second steps; the
    others read the extended timestamp (and, past 2038, the DOS fields as local time: UTC
    here).
    """
    r = readers.reader(reader)
    readers.require(r)
    built = build(next(k for k in KINDS if k.id == "mtimes"))
    found = {f.name: f.mtime for f in r.scan(built.path)}
    expected = {m.name: m.mtime if m.mtime is not None else 315_532_800 for m in built.members}
    if reader == "zipfile":
        expected = {name: t - t % 2 for name, t in expected.items()}
    assert found == expected


@pytest.mark.parametrize("reader", MODE_READERS)
def test_modes(reader: str, build: Callable[[Kind], Built]) -> None:
    """Unix modes from the external attributes, file type included."""
    r = readers.reader(reader)
    readers.require(r)
    built = build(next(k for k in KINDS if k.id == "modes"))
    found = {f.name: f.mode for f in r.scan(built.path)}
    assert found == {
        "run.sh": 0o100755,
        "secret.key": 0o100600,
        "default.txt": 0o100644,
        "full-st-mode.txt": 0o100640,
        "private/": 0o040700,
        "public/": 0o040755,
    }


@pytest.mark.parametrize("reader", sorted(readers.COMMENT_READERS))
def test_comment(reader: str, build: Callable[[Kind], Built]) -> None:
    readers.require(readers.reader(reader))
    built = build(next(k for k in KINDS if k.id == "comment"))
    assert readers.COMMENT_READERS[reader](built.path) == COMMENT


def test_non_ascii_names_carry_the_utf8_flag(build: Callable[[Kind], Built]) -> None:
    import zipfile

    built = build(next(k for k in KINDS if k.id == "non-ascii"))
    with zipfile.ZipFile(built.path) as zf:
        flags = {i.filename: bool(i.flag_bits & 0x800) for i in zf.infolist()}
    assert flags == {name: not name.isascii() for name in built.expected}


# -- many members -----------------------------------------------------------------------------


def many_members(n: int) -> list[Member]:
    """``n`` tiny members cycling through stored+CRC, deflate-stored, empty file, directory."""
    members = []
    for i in range(n):
        kind = i % 4
        if kind == 3:
            members.append(Member(f"d{i:05d}/"))
        elif kind == 2:
            members.append(Member(f"e{i:05d}.txt", size=0))
        else:
            content = b"%d\n" % i
            members.append(file(f"m{i:05d}.txt", content, crc=kind == 0))
    return members


# 65,536 is left out for time (about 20 s): past 0xFFFF it is read like 70,000 (the classic
# count holds 0xFFFF, the true one is in the ZIP64 end record), and 70,000 would also catch
# a count written modulo 65,536.
MANY = [65_534, 65_535, 70_000]


@pytest.fixture(scope="module", params=MANY, ids=lambda n: f"{n}-members")
def many(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    members = many_members(request.param)
    archive = Archive(members)
    path = tmp_path_factory.mktemp("many") / f"{request.param}.zip"
    with open(path, "wb") as f:
        for chunk in archive:
            f.write(chunk)
    assert path.stat().st_size == archive.size
    return Built(path, members, expected_listing(members))


@pytest.mark.parametrize("reader", READER_NAMES)
def test_many_members(many: Built, reader: str) -> None:
    """65,534 members (no ZIP64), 65,535 and more (ZIP64 end record, count 0xFFFF)."""
    readers.check_all(many.path, many.expected, readers=[reader])


# -- ZIP64 for real ---------------------------------------------------------------------------


@functools.cache
def _pattern(seed: int) -> bytes:
    return random.Random(seed).randbytes(MiB)


def generate(size: int, seed: int) -> Iterator[bytes]:
    """``size`` bytes: a random MiB repeated (the last chunk cut short)."""
    block = _pattern(seed)
    full, rest = divmod(size, MiB)
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


@functools.cache
def generated_crc(size: int, seed: int) -> int:
    """CRC-32 of :func:`generate` (computed once per size)."""
    crc = 0
    for chunk in generate(size, seed):
        crc = readers.crc32(chunk, crc)
    return crc


@dataclass(frozen=True)
class Big:
    id: str
    size: int
    declare_crc: bool
    skip: dict[str, str] = field(default_factory=dict)


AFTER = data(70_000, 7)  # two stored deflate blocks
FOLLOWERS = ("after.txt", "after-ds.bin", "tail/")

# The readers that need a file read the central directory and skip data descriptors. For
# the two deflate-stored cases at the limit, what is new is the data descriptor right at
# 0xFFFFFFFF, which only streaming readers use; their central directories are read in the
# cases above (a 0xFFFFFFFF-byte member in 0xFFFFFFFF-stored-crc, a deflate member past
# 4 GiB in 4GiB+1-deflate-stored). Leaving those readers out saves writing a 4 GiB file and
# about 25 s of CPU per case, within the suite's 5-minute budget.
_COVERED = (
    "time budget: this case adds a data descriptor at the 0xFFFFFFFF limit, which only the "
    "streaming readers read; this reader's path (central directory) is covered by "
    "0xFFFFFFFF-stored-crc and 4GiB+1-deflate-stored"
)
FILE_READERS_COVERED = {r.name: _COVERED for r in readers.READERS if not r.streaming}

BIGS = [
    Big("4GiB+1-stored-crc", 4 * GiB + 1, declare_crc=True),
    Big("4GiB+1-deflate-stored", 4 * GiB + 1, declare_crc=False),
    Big("0xFFFFFFFF-stored-crc", MAX32, declare_crc=True),
    Big("0xFFFFFFFF-deflate-stored", MAX32, declare_crc=False, skip=FILE_READERS_COVERED),
    # 4,294,639,630 bytes framed as 65,533 stored blocks: the compressed size is exactly
    # 0xFFFFFFFF, the uncompressed size below it. JDK 17's ZipInputStream expects 8-byte
    # descriptor sizes only when a count is *over* 0xFFFFFFFF.
    Big(
        "csize-0xFFFFFFFF-deflate-stored",
        4_294_639_630,
        declare_crc=False,
        skip=FILE_READERS_COVERED,
    ),
]


def big_members(big: Big) -> list[Member]:
    crc = generated_crc(big.size, big.size) if big.declare_crc else None
    return [
        Member(
            "big.bin", size=big.size, source=IterSource(generate(big.size, big.size)), crc32=crc
        ),
        file("after.txt", b"after the big one\n", crc=True),  # offset >= 4 GiB: zip64 offset
        file("after-ds.bin", AFTER),  # deflate-stored, data descriptor past 4 GiB
        Member("tail/"),
    ]


class BigArchive:
    """A multi-GiB archive: streamed afresh for each streaming reader, written to a file
    (once, on the first reader that needs one) only if the disk has room."""

    def __init__(self, big: Big, directory: Path) -> None:
        self.big = big
        self.directory = directory
        self.size = Archive(big_members(big)).size
        self.expected = {
            "big.bin": (big.size, generated_crc(big.size, big.size)),
            "after.txt": (18, zlib.crc32(b"after the big one\n")),
            "after-ds.bin": (len(AFTER), zlib.crc32(AFTER)),
            "tail/": (0, 0),
        }
        self._path: Path | None = None

    def stream(self) -> Iterator[bytes]:
        archive = Archive(big_members(self.big))
        total = 0
        for chunk in archive:
            total += len(chunk)
            yield chunk
        assert total == archive.size == self.size, "streamed size differs from the prediction"

    def path(self) -> Path:
        if self._path is None:
            free = shutil.disk_usage(self.directory).free
            if free < self.size + 2 * GiB:
                pytest.skip(
                    f"a reader that needs a seekable file would need a {self.size:,}-byte "
                    f"temporary file; only {free:,} bytes are free"
                )
            path = self.directory / f"{self.big.id}.zip"
            with open(path, "wb") as f:
                for chunk in self.stream():
                    f.write(chunk)
            self._path = path
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None


@pytest.fixture(scope="module", params=BIGS, ids=lambda b: b.id)
def big(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BigArchive]:
    archive = BigArchive(request.param, tmp_path_factory.mktemp("zip64"))
    yield archive
    archive.remove()  # gigabytes: do not leave them in pytest's kept temp dirs


# Info-ZIP unzip checks and extracts at about 150 MB/s here (30 s for each 4 GiB member,
# against 1-3 s for the other readers): it lists every entry (names and sizes), and tests
# and extracts the members after the big one, which is where its ZIP64 traps are
# (ZIP-COMPAT.md). The big member's bytes are checked by the six other readers.
UNZIP_OPTIONS = {"unzip": {"only": [n for n in FOLLOWERS if not n.endswith("/")]}}
# 7zz x checks every CRC too: its separate test pass would read 4 GiB once more
SEVENZIP_OPTIONS = {"7zz": {"test": False}}


@pytest.mark.slow
@pytest.mark.parametrize("reader", READER_NAMES)
def test_zip64(big: BigArchive, reader: str) -> None:
    """A member at or past 4 GiB followed by small ones, through one reader.

    Streaming readers get the archive as zipware streams it, through a pipe; the others
    read a temporary file.
    """
    reason = big.big.skip.get(reader)
    if reason:
        pytest.skip(reason)
    r = readers.reader(reader)
    readers.require(r)
    readers.check_all(
        big.stream,
        big.expected,
        file=big.path,
        readers=[r],
        options={**UNZIP_OPTIONS, **SEVENZIP_OPTIONS},
    )


@pytest.mark.parametrize("size", [4_294_639_629, 4_294_639_630, 4_294_639_631, MAX32, 4 * GiB + 1])
def test_descriptor_sizes_follow_the_jdk17_rule(size: int) -> None:
    """The quick twin of csize-0xFFFFFFFF-deflate-stored: no gigabytes streamed.

    JDK 17's ZipInputStream reads a data descriptor with 8-byte sizes only when the bytes it
    inflated or consumed are over 0xFFFFFFFF, else with 4-byte sizes; a deflate-stored
    member whose compressed size is exactly 0xFFFFFFFF gets 8-byte sizes from zipware.
    """
    plan = Archive([Member("big.bin", size=size, source=IterSource([]))]).plan
    over = size > MAX32 or plan.compressed_size(0) > MAX32
    assert plan.has_descriptor(0)
    assert len(plan.descriptor(0, 0)) == (24 if over else 16)


def test_generated_crc_is_the_crc_of_the_bytes() -> None:
    """The cached CRC of generated bytes, on a size small enough to check with zlib."""
    size = 3 * MiB + 12_345
    assert generated_crc(size, 1) == zlib.crc32(b"".join(generate(size, 1)))
