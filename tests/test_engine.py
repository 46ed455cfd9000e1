"""The engine: plan arithmetic, streaming, ranges, failures, and source lifetimes."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zipware import (
    Archive,
    AsyncIterSource,
    BytesSource,
    CRCMismatchError,
    FileSource,
    InvalidMemberError,
    IterSource,
    Member,
    MissingCRCError,
    Plan,
    Source,
    SourceError,
    SourceSizeError,
    Storage,
    ZipwareError,
)
from zipware.archive import CHUNK_SIZE
from zipware.plan import deflate_stored_size


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def collect(archive: Archive) -> bytes:
    return b"".join(archive)


async def acollect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


class Tracked(Source):
    """A real source that records when it is opened and closed (and can misbehave)."""

    log: list[tuple[str, str]]

    def __init__(
        self,
        name: str,
        data: bytes,
        log: list[tuple[str, str]],
        *,
        fail_after: int | None = None,
        chunk: int = 7000,
    ) -> None:
        self.name = name
        self.data = data
        self.log = log
        self.fail_after = fail_after
        self.chunk = chunk

    def iter_chunks(self, offset: int = 0) -> Iterator[bytes]:
        self.log.append(("open", self.name))
        try:
            sent = 0
            for i in range(offset, len(self.data), self.chunk):
                if self.fail_after is not None and sent >= self.fail_after:
                    raise OSError("disk on fire")
                piece = self.data[i : i + self.chunk]
                sent += len(piece)
                yield piece
        finally:
            self.log.append(("close", self.name))


def open_count(log: list[tuple[str, str]]) -> int:
    return sum(1 if e == "open" else -1 for e, _ in log)


# -- members and storage --------------------------------------------------------------------


def members_of_every_kind() -> list[Member]:
    big = os.urandom(200_000)
    text = b"hello zip " * 500
    packed = raw_deflate(text)
    return [
        Member("dir/"),
        Member("dir/nested/"),
        Member("dir/empty.txt"),
        Member("dir/auto.bin", size=len(big), source=BytesSource(big)),
        Member(
            "stored-crc.bin",
            size=len(big),
            source=BytesSource(big),
            crc32=zlib.crc32(big),
            mtime=1_700_000_000,
            mode=0o600,
        ),
        Member("stored-nocrc.txt", size=5, source=BytesSource(b"hello"), storage="store"),
        Member(
            "packed.txt",
            size=len(text),
            source=BytesSource(packed),
            storage=Storage.PRECOMPRESSED,
            crc32=zlib.crc32(text),
            compressed_size=len(packed),
        ),
        Member("été/naïve.txt", size=3, source=BytesSource(b"abc")),
        Member("framed-empty", storage="deflate-stored", source=BytesSource(b"")),
    ]


def test_every_kind_reads_back_and_the_size_is_exact() -> None:
    members = members_of_every_kind()
    archive = Archive(members, comment="a comment")
    data = collect(archive)
    assert len(data) == archive.size
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.comment == b"a comment"
        for m in members:
            info = zf.getinfo(m.name)
            assert info.file_size == m.size
            if not m.name.endswith("/") and m.source is not None:
                expected = b"".join(m.source.iter_chunks())
                if m.storage == Storage.PRECOMPRESSED:
                    expected = zlib.decompress(expected, -15)
                assert zf.read(m.name) == expected
        info = zf.getinfo("stored-crc.bin")
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.external_attr >> 16 == 0o100600
        assert info.date_time == (2023, 11, 14, 22, 13, 20)  # UTC
        assert info.flag_bits & 0x08 == 0  # CRC known: no data descriptor
        auto = zf.getinfo("dir/auto.bin")
        assert auto.compress_type == zipfile.ZIP_DEFLATED and auto.flag_bits & 0x08
        assert zf.getinfo("dir/").external_attr & 0x10
        assert zf.getinfo("été/naïve.txt").flag_bits & 0x800
        assert zf.getinfo("dir/empty.txt").flag_bits & 0x800 == 0


def test_the_same_members_give_the_same_bytes() -> None:
    members = members_of_every_kind()
    assert collect(Archive(members)) == collect(Archive(members))


def test_crc_is_learned_during_a_full_pass() -> None:
    data = os.urandom(1000)
    archive = Archive([Member("a", size=len(data), source=BytesSource(data))])
    assert archive.crcs[0] == -1
    collect(archive)
    assert archive.crcs[0] == zlib.crc32(data)


@pytest.mark.parametrize("size", [0, 1, 65_534, 65_535, 65_536, 131_070, 131_071, 200_000])
def test_deflate_stored_block_boundaries(size: int) -> None:
    data = os.urandom(size)
    archive = Archive([Member("m", size=size, source=BytesSource(data), storage="deflate-stored")])
    assert archive.plan.compressed_size(0) == deflate_stored_size(size)
    out = collect(archive)
    assert len(out) == archive.size
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert zf.read("m") == data


def test_chunks_are_large_but_for_the_last() -> None:
    members = [
        Member(f"f{i}", size=100, source=BytesSource(bytes([i % 256]) * 100)) for i in range(3000)
    ]
    members.append(Member("big", size=1_000_000, source=BytesSource(os.urandom(1_000_000))))
    chunks = list(Archive(members))
    assert all(len(c) >= CHUNK_SIZE for c in chunks[:-1])
    assert all(isinstance(c, bytes) for c in chunks)


# -- the layout at the ZIP64 limits, without writing gigabytes -------------------------------


def sparse_archive(archive: Archive, path: str) -> None:
    """Write everything but the data spans; the holes read as zeros (fine for listings)."""
    plan = archive.plan
    with open(path, "wb") as f:
        f.truncate(plan.size)
        for piece in plan.pieces():
            if piece.kind == 1:  # DATA
                continue
            f.seek(piece.start)
            f.write(b"".join(archive.iter_range(piece.start, piece.end)))


class Zeros(Source):
    def __init__(self, size: int) -> None:
        self.size = size

    def iter_chunks(self, offset: int = 0) -> Iterator[bytes]:
        block = bytes(1 << 20)
        left = self.size - offset
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)


def zeros_crc(size: int) -> int:
    crc = 0
    block = bytes(1 << 20)
    while size > 0:
        crc = zlib.crc32(block[: min(size, len(block))], crc)
        size -= len(block)
    return crc


@pytest.mark.parametrize(
    ("sizes", "zip64_members"),
    [
        ([0xFFFFFFFE, 10], []),
        ([0xFFFFFFFF, 10], [0]),
        ([2**32 + 1, 10], [0]),
        ([3 * 2**30, 2**30, 10, 10], []),  # the last members sit past 4 GiB: offsets only
    ],
)
def test_zip64_fields_only_where_they_overflow(
    tmp_path: os.PathLike[str], sizes: list[int], zip64_members: list[int]
) -> None:
    members = [
        Member(f"m{i}", size=s, source=Zeros(s), crc32=0, storage="store")
        for i, s in enumerate(sizes)
    ]
    # CRCs must be declared for a range; the holes are never read, so any value will do
    archive = Archive(members)
    path = os.path.join(tmp_path, "sparse.zip")
    sparse_archive(archive, path)
    plan = archive.plan
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert [i.file_size for i in infos] == sizes
        for i, info in enumerate(infos):
            assert info.header_offset == plan.member_span(i)[0]
            local = plan.local_header(i)
            has_local64 = struct.pack("<HH", 1, 16) in local[30 + len(info.filename) :]
            assert has_local64 == (i in zip64_members)
            assert info.extract_version == (45 if info.extra else 10) or info.extra
    with open(path, "rb") as f:
        f.seek(plan.cd_start)
        cd = f.read(plan.cd_end - plan.cd_start)
    for i in range(len(sizes)):
        header = plan.central_header(i, 0)
        assert header in cd
        offset_overflows = plan.member_span(i)[0] >= 0xFFFFFFFF
        sizes_overflow = sizes[i] >= 0xFFFFFFFF
        if offset_overflows or sizes_overflow:
            # the zip64 extra holds both sizes, and the offset only when it overflows
            tag, length = struct.unpack_from("<HH", header, 46 + len(f"m{i}"))
            assert (tag, length) == (1, 24 if offset_overflows else 16)
            assert struct.unpack_from("<II", header, 20) == (0xFFFFFFFF, 0xFFFFFFFF)
        else:
            assert struct.pack("<HH", 1, 16) not in header[46:]


@pytest.mark.parametrize("count", [65_534, 65_535, 65_536, 70_000])
def test_entry_count_limit(count: int) -> None:
    archive = Archive([Member(f"{i}") for i in range(count)])
    data = collect(archive)
    assert len(data) == archive.size
    assert archive.plan.zip64_end == (count >= 0xFFFF)
    end = data[-22:]
    assert struct.unpack_from("<HH", end, 8) == (min(count, 0xFFFF), min(count, 0xFFFF))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.infolist()) == count


def test_names_at_the_length_limit() -> None:
    ok = "a" * 65_535
    Plan([Member(ok)])
    with pytest.raises(InvalidMemberError, match="65536 bytes"):
        Plan([Member(ok + "b")])
    # the limit counts UTF-8 bytes, not characters
    with pytest.raises(InvalidMemberError):
        Plan([Member("é" * 32_768)])


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/..", "'..'"),
        ("a\\b", "backslash"),
        ("C:/x", "drive letter"),
        ("c:x", "drive letter"),
        ("a\x00b", "NUL"),
        ("a//b", "empty component"),
        ("./a", "'.'"),
        ("\udcff", "Unicode"),
    ],
)
def test_bad_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidMemberError, match=message) as info:
        Plan([Member("fine.txt"), Member(name)])
    assert isinstance(info.value, ValueError)
    assert [p[0] for p in info.value.problems] == [1]


def test_names_that_only_look_suspect_are_fine() -> None:
    names = [".bashrc", "a/.git/config", "a/..b", "a/b..", "1:2", "dir/"]
    assert len(Plan([Member(n) for n in names])) == len(names)


def test_every_problem_is_reported_at_once() -> None:
    members = [
        Member("ok"),
        Member("ok"),
        Member("dir/"),
        Member("dir"),
        Member("neg", size=-1, source=BytesSource(b"")),
        Member("nosrc", size=3),
        Member("badcrc", size=1, source=BytesSource(b"x"), crc32=2**32),
        Member("emptycrc", crc32=5),
        Member("d/", size=3),
        Member("pc", size=3, source=BytesSource(b"x"), storage="precompressed"),
        Member("st", size=3, source=BytesSource(b"x"), storage="zstd"),
        Member("float", size=1.5, source=BytesSource(b"x")),  # type: ignore[arg-type]
    ]
    with pytest.raises(InvalidMemberError) as info:
        Plan(members)
    messages = {i: msg for i, _, msg in info.value.problems}
    assert sorted(messages) == [1, *range(3, len(members))], messages
    assert "duplicate" in messages[1] and "duplicate" in messages[3]
    assert "non-negative" in messages[4]
    assert "needs a source" in messages[5]
    assert "crc32" in messages[6]
    assert "empty file" in messages[7]
    assert "directory" in messages[8]
    assert "precompressed" in messages[9]
    assert "unknown storage" in messages[10]
    assert "non-negative integer" in messages[11]


def test_comment_limit() -> None:
    Plan([], comment=b"x" * 65_535)
    with pytest.raises(InvalidMemberError, match="comment"):
        Plan([], comment=b"x" * 65_536)


# -- ranges -----------------------------------------------------------------------------------


def test_ranges_need_the_crcs_they_cover() -> None:
    data = os.urandom(300_000)
    members = [
        Member("known", size=len(data), source=BytesSource(data), crc32=zlib.crc32(data)),
        Member("unknown", size=len(data), source=BytesSource(data)),
    ]
    archive = Archive(members)
    first_end = archive.plan.member_span(0)[1]
    # the first member's bytes need no unknown CRC
    assert b"".join(archive.iter_range(0, first_end)) == collect(Archive(members))[:first_end]
    data_start, data_end = archive.plan.data_span(1)
    assert archive.missing_crcs(data_start, data_end) == []
    with pytest.raises(MissingCRCError):
        archive.iter_range(data_end, data_end + 1)  # the descriptor
    with pytest.raises(MissingCRCError):
        archive.iter_range(archive.plan.cd_end - 1, archive.plan.cd_end)  # its central header
    full = collect(archive)  # learns the CRC
    assert b"".join(archive.iter_range(10, archive.size - 10)) == full[10:-10]
    fresh = Archive(members, known_crcs={1: zlib.crc32(data)})
    assert b"".join(fresh.iter_range(archive.size - 100)) == full[-100:]


def test_end_records_alone_need_no_crc() -> None:
    members = [Member("unknown", size=5, source=BytesSource(b"hello"))]
    archive = Archive(members)
    assert archive.missing_crcs(archive.plan.cd_end, archive.size) == []
    assert (
        b"".join(archive.iter_range(archive.plan.cd_end))
        == collect(Archive(members))[archive.plan.cd_end :]
    )


def test_a_range_reads_only_the_members_it_overlaps() -> None:
    log: list[tuple[str, str]] = []
    payloads = [os.urandom(50_000) for _ in range(5)]
    members = [
        Member(f"m{i}", size=len(p), source=Tracked(f"m{i}", p, log), crc32=zlib.crc32(p))
        for i, p in enumerate(payloads)
    ]
    archive = Archive(members)
    start, end = archive.plan.data_span(2)
    assert b"".join(archive.iter_range(start + 10, end - 10)) == payloads[2][10:-10]
    assert log == [("open", "m2"), ("close", "m2")]


# -- property: planned size, bytes, ranges and async agree ----------------------------------

SIZES = st.sampled_from([0, 1, 2, 100, 65_534, 65_535, 65_536, 131_070, 131_071]) | st.integers(
    0, 140_000
)


@st.composite
def member_sets(draw: st.DrawFn) -> list[tuple[str, bytes, str, bool, int | None]]:
    count = draw(st.integers(0, 6))
    out = []
    for i in range(count):
        size = draw(SIZES)
        data = (bytes([i + 1]) * 997)[: size % 997] + bytes(size - size % 997)
        storage = draw(st.sampled_from(["auto", "store", "deflate-stored", "precompressed"]))
        declared = draw(st.booleans()) or storage == "precompressed"
        mtime = draw(st.none() | st.integers(0, 2**33))
        name = draw(st.sampled_from(["f", "dir/f", "é/ü", "a b"])) + f"-{i}"
        out.append((name, data, storage, declared, mtime))
    if draw(st.booleans()):
        out.append(("a-directory/", b"", "auto", True, None))
    return out


def build(spec: list[tuple[str, bytes, str, bool, int | None]]) -> list[Member]:
    members = []
    for name, data, storage, declared, mtime in spec:
        if name.endswith("/"):
            members.append(Member(name, mtime=mtime))
            continue
        source_bytes = raw_deflate(data) if storage == "precompressed" else data
        members.append(
            Member(
                name,
                size=len(data),
                source=BytesSource(source_bytes),
                crc32=zlib.crc32(data) if declared else None,
                mtime=mtime,
                storage=storage,
                compressed_size=len(source_bytes) if storage == "precompressed" else None,
            )
        )
    return members


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=member_sets(), cuts=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=8))
def test_property_size_bytes_ranges_and_async_agree(
    spec: list[tuple[str, bytes, str, bool, int | None]], cuts: list[tuple[float, float]]
) -> None:
    archive = Archive(build(spec))
    full = collect(archive)
    assert len(full) == archive.size
    with zipfile.ZipFile(io.BytesIO(full)) as zf:
        assert zf.testzip() is None
        for name, data, *_ in spec:
            assert zf.read(name) == data
    assert asyncio.run(acollect(Archive(build(spec)).aiter_range())) == full
    for a, b in cuts:
        start, end = sorted((int(a * archive.size), int(b * archive.size)))
        assert b"".join(archive.iter_range(start, end)) == full[start:end]
        assert asyncio.run(acollect(archive.aiter_range(start, end))) == full[start:end]


# -- failures and source lifetimes -------------------------------------------------------------


def failing_members(kind: str, log: list[tuple[str, str]]) -> list[Member]:
    good = os.urandom(100_000)
    bad = os.urandom(100_000)
    declared = len(bad)
    crc = zlib.crc32(bad)
    fail_after = None
    if kind == "short":
        declared += 1
    elif kind == "long":
        declared -= 1
    elif kind == "crc":
        crc ^= 1
    elif kind == "error":
        fail_after = 30_000
    return [
        Member("good", size=len(good), source=Tracked("good", good, log)),
        Member(
            "bad",
            size=declared,
            source=Tracked("bad", bad, log, fail_after=fail_after),
            crc32=None if kind in ("short", "long") else crc,
        ),
        Member("after", size=10, source=Tracked("after", b"0123456789", log)),
    ]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("short", SourceSizeError),
        ("long", SourceSizeError),
        ("crc", CRCMismatchError),
        ("error", SourceError),
    ],
)
def test_a_failing_source_stops_the_stream_and_everything_is_closed(
    kind: str, error: type[Exception]
) -> None:
    log: list[tuple[str, str]] = []
    archive = Archive(failing_members(kind, log))
    received = []
    with pytest.raises(error) as info:
        for chunk in archive:
            received.append(chunk)
    assert info.value.name == "bad"  # type: ignore[attr-defined]
    assert sum(map(len, received)) < archive.size
    assert ("open", "after") not in log
    assert open_count(log) == 0
    if kind == "error":
        assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("kind", ["short", "long", "crc", "error"])
def test_a_failing_source_stops_the_async_stream_too(kind: str) -> None:
    log: list[tuple[str, str]] = []
    archive = Archive(failing_members(kind, log))

    async def run() -> int:
        got = 0
        async for chunk in archive:
            got += len(chunk)
        return got

    with pytest.raises(SourceError):
        asyncio.run(run())
    assert open_count(log) == 0 and ("open", "after") not in log


def test_sources_open_lazily_one_at_a_time_and_close_on_early_exit() -> None:
    log: list[tuple[str, str]] = []
    payloads = [os.urandom(300_000) for _ in range(4)]
    members = [
        Member(f"m{i}", size=len(p), source=Tracked(f"m{i}", p, log))
        for i, p in enumerate(payloads)
    ]
    archive = Archive(members)
    assert log == []  # planning opens nothing
    it = iter(archive)
    next(it)
    assert log == [("open", "m0")]
    max_open = 0
    for _ in range(6):
        next(it)
        max_open = max(max_open, open_count(log))
    assert max_open == 1
    it.close()  # the consumer goes away mid-member
    assert open_count(log) == 0


def test_async_early_exit_closes_the_source() -> None:
    log: list[tuple[str, str]] = []
    data = os.urandom(1_000_000)
    archive = Archive([Member("m", size=len(data), source=Tracked("m", data, log))])

    async def run() -> None:
        it = archive.aiter_range()
        await it.__anext__()
        await it.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())
    assert log == [("open", "m"), ("close", "m")]


def test_file_source_changed_after_planning(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(500_000))
    archive = Archive([Member("f", size=500_000, source=FileSource(path))])
    os.truncate(path, 100_000)
    with pytest.raises(SourceSizeError, match="ended after 100000"):
        collect(archive)
    os.remove(path)
    with pytest.raises(SourceError, match="FileNotFoundError"):
        collect(Archive([Member("f", size=500_000, source=FileSource(path))]))


def test_precompressed_bytes_are_checked() -> None:
    text = b"abc" * 1000
    packed = raw_deflate(text)
    member = Member(
        "p",
        size=len(text),
        source=BytesSource(packed),
        storage="precompressed",
        crc32=zlib.crc32(text) ^ 1,
        compressed_size=len(packed),
    )
    with pytest.raises(CRCMismatchError):
        collect(Archive([member]))


def test_iterator_sources() -> None:
    chunks = [b"ab", b"cde", b"", b"f"]
    archive = Archive([Member("it", size=6, source=IterSource(iter(chunks)), crc32=None)])
    with zipfile.ZipFile(io.BytesIO(collect(archive))) as zf:
        assert zf.read("it") == b"abcdef"

    async def agen() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    member = Member("ait", size=6, source=AsyncIterSource(agen()))
    data = asyncio.run(acollect(Archive([member]).aiter_range()))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("ait") == b"abcdef"
    with pytest.raises(ZipwareError, match="asynchronously"):
        collect(Archive([Member("ait", size=6, source=AsyncIterSource(agen()))]))


def test_file_source_reads_from_an_offset(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f.bin")
    data = os.urandom(700_000)
    with open(path, "wb") as f:
        f.write(data)
    assert b"".join(FileSource(path).iter_chunks(123_456)) == data[123_456:]
    assert asyncio.run(acollect(FileSource(path).aiter_chunks(5))) == data[5:]


# -- astream: the async push form with read-ahead ------------------------------------------


async def astream_bytes(
    archive: Archive, start: int = 0, end: int | None = None, **kw: int
) -> bytes:
    out: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        out.append(chunk)

    await archive.astream(sink, start, end, **kw)
    return b"".join(out)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=member_sets(),
    cuts=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=5),
    lookahead=st.integers(0, 3),
)
def test_property_astream_agrees(
    spec: list[tuple[str, bytes, str, bool, int | None]],
    cuts: list[tuple[float, float]],
    lookahead: int,
) -> None:
    archive = Archive(build(spec))
    full = asyncio.run(astream_bytes(archive, lookahead=lookahead))
    assert full == collect(Archive(build(spec)))
    for a, b in cuts:
        start, end = sorted((int(a * archive.size), int(b * archive.size)))
        assert (
            asyncio.run(astream_bytes(archive, start, end, lookahead=lookahead)) == full[start:end]
        )


def test_astream_opens_the_next_member_while_one_streams() -> None:
    log: list[tuple[str, str]] = []
    payloads = [os.urandom(400_000) for _ in range(4)]
    members = [
        Member(f"m{i}", size=len(p), source=Tracked(f"m{i}", p, log, chunk=65_536))
        for i, p in enumerate(payloads)
    ]
    archive = Archive(members)
    seen_open: list[int] = []

    async def sink(chunk: bytes) -> None:
        seen_open.append(open_count(log))
        await asyncio.sleep(0.001)  # a slow client: read-ahead gets its chance

    asyncio.run(archive.astream(sink, lookahead=1))
    assert max(seen_open) == 2  # the current member and the one after it, no more
    assert open_count(log) == 0
    assert [n for e, n in log if e == "open"] == ["m0", "m1", "m2", "m3"]


@pytest.mark.parametrize("kind", ["short", "long", "crc", "error"])
def test_astream_failures_surface_in_order_and_close_everything(kind: str) -> None:
    log: list[tuple[str, str]] = []
    archive = Archive(failing_members(kind, log))
    received: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        received.append(chunk)

    with pytest.raises(SourceError) as info:
        asyncio.run(archive.astream(sink, lookahead=2))
    assert info.value.name == "bad"  # not "after", though it was read ahead
    assert sum(map(len, received)) < archive.size
    assert open_count(log) == 0


def test_astream_stops_when_the_sink_fails() -> None:
    log: list[tuple[str, str]] = []
    payloads = [os.urandom(300_000) for _ in range(3)]
    members = [
        Member(f"m{i}", size=len(p), source=Tracked(f"m{i}", p, log))
        for i, p in enumerate(payloads)
    ]

    async def sink(chunk: bytes) -> None:
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(Archive(members).astream(sink))
    assert open_count(log) == 0


def test_a_framed_member_never_ends_at_exactly_0xffffffff() -> None:
    """JDK 17 and libarchive disagree on the descriptor of such a member: 5 bytes of pad."""
    size = 4_294_639_630  # 65,533 blocks: 0xFFFFFFFF framed bytes without the pad
    assert deflate_stored_size(size) == 0xFFFFFFFF
    archive = Archive([Member("big", size=size, source=Zeros(size))])
    plan = archive.plan
    assert plan.framing_pad(0) == 5
    assert plan.compressed_size(0) == 0xFFFFFFFF + 5
    assert len(plan.descriptor(0, 0)) == 24
    start, end = plan.data_span(0)
    head = b"".join(archive.iter_range(start, start + 20))
    assert head == b"\x00\x00\x00\xff\xff" + b"\x00\xff\xff\x00\x00" + bytes(10)
    assert b"".join(archive.iter_range(start + 2, start + 7)) == b"\x00\xff\xff\x00\xff"
    last_len = size - 65_532 * 65_535
    tail = b"".join(archive.iter_range(end - last_len - 5, end))
    assert tail[:5] == struct.pack("<BHH", 1, last_len, last_len ^ 0xFFFF)
    assert tail[5:] == bytes(last_len)
    out: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        out.append(chunk)

    asyncio.run(archive.astream(sink, start + 3, start + 15))
    assert b"".join(out) == head[3:15]
