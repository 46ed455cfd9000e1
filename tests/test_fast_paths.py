"""The fast paths give what the reference paths give.

A list of members is planned a column at a time (``Plan._plan_columns``); any other iterable,
and any list the column checks find unusual, goes through the single pass
(``Plan._plan_loop``). A whole archive streams through ``Archive._iter_whole``; byte ranges
and the async drivers go through the general walk. These tests hold each pair to the same
layout, bytes and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zipware import (
    Archive,
    BytesSource,
    FileSource,
    InvalidMemberError,
    IterSource,
    Member,
    Plan,
    Source,
    Storage,
)
from zipware import archive as archive_module
from zipware.errors import CRCMismatchError, SourceError, SourceSizeError


def outcome(members: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Everything a plan determines, or the error it raised."""
    try:
        plan = kwargs.pop("make", Plan)(members, **kwargs)
    except InvalidMemberError as exc:
        return ("refused", exc.problems)
    except (TypeError, ValueError, OverflowError) as exc:
        return ("raised", type(exc), str(exc))
    n = len(plan)
    return (
        plan.size,
        plan.cd_start,
        plan.cd_end,
        b"".join(plan.layout_material()),
        [plan.member_span(i) for i in range(n)],
        [plan.local_header(i) for i in range(n)],
        [plan.central_header(i, 0) for i in range(n)],
    )


GOOD_NAMES = ["f", "dir/", "dir/f", "é/ü.txt", ".bashrc", "a/.git/c", "1:2", "a/..b", "x"]
BAD_NAMES = ["", "/abs", "a//b", "a/./b", "../x", "C:x", "a\\b", "a\x00b", "\udcff", "dir"]
NAMES = st.sampled_from([*GOOD_NAMES, *BAD_NAMES])
SIZES = st.sampled_from([0, 0, 1, 100, 65_535, 65_536, 0xFFFFFFFF, 2**32 + 1, -1, True, 1.0])
CRCS = st.sampled_from([None, None, 0, 1, 0xFFFFFFFF, 2**32, -1, True])
STORAGES = st.sampled_from(["auto", "store", "deflate-stored", "precompressed", "zip"])
MTIMES_OK = st.sampled_from([None, None, 0, 1_700_000_000, 1.5, -3.7, 2**31 + 1])
MTIMES = st.sampled_from([None, 1e30, float("nan"), 253_402_300_799.5, True, "1"])
MODES = st.sampled_from([None, None, 0o644, 0o100600, 0o40700, -1, 1.5])


@st.composite
def plannable(draw: st.DrawFn, i: int) -> Member:
    """A member the loop accepts (the column path must give the same layout)."""
    name = f"{i}/{draw(st.sampled_from(GOOD_NAMES))}"  # distinct by the prefix
    if name.endswith("/"):
        return Member(name, crc32=draw(st.sampled_from([None, 0])), mtime=draw(MTIMES_OK))
    size = draw(st.sampled_from([0, 1, 100, 65_535, 65_536, 0xFFFFFFFE, 2**32 + 1]))
    return Member(
        name,
        size=size,
        source=BytesSource(b"x") if size else draw(st.sampled_from([None, BytesSource(b"")])),
        crc32=draw(st.sampled_from([None, 0, 1, 0xFFFFFFFF] if size else [None, 0])),
        mtime=draw(MTIMES_OK),
        mode=draw(st.sampled_from([None, 0o644, 0o100600, 0o40700, -1])),
        storage=draw(st.sampled_from(["auto", "store", Storage.STORE, Storage.AUTO])),
    )


@st.composite
def anything(draw: st.DrawFn, i: int) -> Member:
    """A member with any of the values the loop refuses (or raises on)."""
    name = draw(NAMES)
    if draw(st.booleans()) and name and name != "dir":  # mostly distinct, some duplicates
        name = f"{i}/{name}" if not name.startswith("/") else name
    return Member(
        name,
        size=draw(SIZES),
        source=draw(st.sampled_from([BytesSource(b"x"), None])),
        crc32=draw(CRCS),
        mtime=draw(MTIMES),
        mode=draw(MODES),
        storage=draw(STORAGES),
        compressed_size=draw(st.sampled_from([None, 2, 10])),
    )


@st.composite
def member_lists(draw: st.DrawFn) -> list[Member]:
    """Plannable lists, some with one odd member among them."""
    count = draw(st.integers(1, 8))
    members = [draw(plannable(i)) for i in range(count)]
    if draw(st.booleans()):
        members[draw(st.integers(0, count - 1))] = draw(anything(count))
    return members


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=member_lists(), default_mtime=st.sampled_from([None, 1_000_000_000, -5]))
def test_a_list_plans_as_a_generator_does(members: list[Member], default_mtime: Any) -> None:
    expected = outcome(iter(members), default_mtime=default_mtime)
    assert outcome(members, default_mtime=default_mtime) == expected
    assert outcome(tuple(members), default_mtime=default_mtime) == expected


def from_columns(members: list[Member], **kwargs: Any) -> Plan:
    return Plan.from_columns(
        [m.name for m in members],
        [m.size for m in members],
        [m.source for m in members],
        mtimes=[m.mtime for m in members],
        modes=[m.mode for m in members],
        crcs=[m.crc32 for m in members],
        **kwargs,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=member_lists(), default_mtime=st.sampled_from([None, 1_000_000_000, -5]))
def test_columns_plan_as_members_do(members: list[Member], default_mtime: Any) -> None:
    """Plan.from_columns (storage auto) gives the plan, or the problems, of the members."""
    members = [
        m for m in members if m.storage in ("auto", Storage.AUTO) and m.compressed_size is None
    ]
    expected = outcome(iter(members), default_mtime=default_mtime)
    assert outcome(members, make=from_columns, default_mtime=default_mtime) == expected


def test_columns_take_paths_as_file_sources(tmp_path: Any) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    plan = Plan.from_columns(["a", "b/"], [3, 0], [str(tmp_path / "a"), None], comment="hi")
    source = plan.source(0)
    assert isinstance(source, FileSource) and source.path == str(tmp_path / "a")
    assert plan.source(1) is None
    data = b"".join(Archive(plan))
    assert data == b"".join(
        Archive([Member("a", 3, FileSource(tmp_path / "a")), Member("b/")], comment="hi")
    )
    with pytest.raises(ValueError, match="differ in length"):
        Plan.from_columns(["a"], [1, 2], [None])


def test_ordinary_lists_take_the_column_path() -> None:
    """Names that only look suspect, directories, empty files, mtimes, modes, mixed storage."""
    members = [
        Member(".bashrc", size=3, source=BytesSource(b"abc"), mtime=1_700_000_000.5),
        Member("a/.git/config", size=1, source=BytesSource(b"x"), storage="store", mode=0o600),
        Member("dir/"),
        Member("dir/empty"),
        Member("dir/empty-read", source=BytesSource(b"")),
        Member("été/ü", size=1, source=BytesSource(b"x"), crc32=zlib.crc32(b"x"), mtime=-1),
        Member("1:2", size=2**32 + 1, source=BytesSource(b""), crc32=0, storage="store"),
    ]
    plan = Plan.__new__(Plan)
    assert plan._plan_columns(members, -1)
    assert outcome(members) == outcome(iter(members))


def test_the_column_path_places_headers_past_4_gib() -> None:
    members = [
        Member(f"m{i}", size=s, source=BytesSource(b""), crc32=0, storage="store")
        for i, s in enumerate([3 * 2**30, 2**30, 10, 10])
    ]
    plan = Plan.__new__(Plan)
    assert plan._plan_columns(members, -1)
    assert outcome(members) == outcome(iter(members))


class Chunks(Source):
    def __init__(self, *chunks: Any, fail: bool = False) -> None:
        self.chunks = chunks
        self.fail = fail

    def iter_chunks(self, offset: int = 0) -> Iterator[bytes]:
        assert offset == 0
        yield from self.chunks
        if self.fail:
            raise OSError("disk on fire")


BAD_SMALL = {
    "short": Member("bad", size=5, source=Chunks(b"ab", b"c")),
    "long": Member("bad", size=2, source=Chunks(b"ab", b"c")),
    "crc": Member("bad", size=3, source=Chunks(b"abc"), crc32=zlib.crc32(b"abd")),
    "error": Member("bad", size=3, source=Chunks(b"ab", fail=True)),
    "not bytes": Member("bad", size=3, source=Chunks("abc")),
    "empty, long": Member("bad", source=Chunks(b"x")),
    "framed empty, long": Member("bad", storage="deflate-stored", source=Chunks(b"x")),
}


@pytest.mark.parametrize("kind", sorted(BAD_SMALL))
@pytest.mark.parametrize("storage", ["auto", "store"])
def test_small_members_fail_as_on_the_general_path(kind: str, storage: str) -> None:
    bad = BAD_SMALL[kind]
    if bad.storage == "auto":
        bad = Member(bad.name, size=bad.size, source=bad.source, crc32=bad.crc32, storage=storage)
    members = [Member("ok", size=2, source=BytesSource(b"ok")), bad, Member("after/")]

    async def general() -> None:
        async for _ in Archive(members):  # the async driver walks the general way
            pass

    with pytest.raises(SourceError) as fast:
        b"".join(Archive(members))
    with pytest.raises(SourceError) as reference:
        asyncio.run(general())
    assert type(fast.value) is type(reference.value)
    assert str(fast.value) == str(reference.value)
    assert fast.value.index == 1 and fast.value.name == "bad"
    assert type(fast.value.__cause__) is type(reference.value.__cause__)


def test_the_whole_stream_agrees_with_ranges_and_keeps_no_offsets() -> None:
    data = bytes(range(256)) * 300
    members = [
        Member("big", size=len(data), source=Chunks(data[:1000], data[1000:])),
        Member("small", size=3, source=BytesSource(b"abc"), storage="store"),
        Member("it", size=2, source=IterSource(iter([b"a", b"", b"b"]))),
        Member("d/"),
        Member("e", source=BytesSource(b"")),
        Member("f", storage="deflate-stored"),
        Member("crc", size=3, source=BytesSource(b"xyz"), crc32=zlib.crc32(b"xyz"), mtime=5),
    ] + [Member(f"many/{i}", size=1, source=BytesSource(bytes([i]))) for i in range(200)]
    archive = Archive(members, chunk_size=1000)
    chunks = list(archive)
    assert all(len(c) >= 1000 for c in chunks[:-1])
    full = b"".join(chunks)
    assert len(full) == archive.size
    assert archive.plan._offsets is None and archive.plan._cd_offsets is None
    assert archive.crcs[2] == zlib.crc32(b"ab")
    # the general walk, once the CRCs are known: ranges (the IterSource is spent: from
    # the member after it on), and the async driver with a fresh one
    cut = archive.plan.member_span(3)[0]
    assert b"".join(archive.iter_range(cut, archive.size)) == full[cut:]
    assert b"".join(archive.iter_range(0, 700)) == full[:700]
    members[2] = Member("it", size=2, source=IterSource(iter([b"ab"])))
    assert asyncio.run(_collect(Archive(members, chunk_size=1000))) == full


async def _collect(archive: Archive) -> bytes:
    return b"".join([chunk async for chunk in archive])


def test_a_refused_mtime_before_a_duplicate_name() -> None:
    """A member refused for its mtime does not shift the duplicate check (found by fuzzing)."""
    members = [
        Member("a", size=1, source=BytesSource(b"x")),
        Member("b", size=1, source=BytesSource(b"x"), mtime=-1e12),
        Member("c/"),
        Member("a", size=1, source=BytesSource(b"x")),
    ]
    for planned in (members, iter(members)):
        with pytest.raises(InvalidMemberError) as caught:
            Plan(planned)
        assert [(i, name) for i, name, _ in caught.value.problems] == [(1, "b"), (3, "a")]
        assert "out of range" in caught.value.problems[0][2]
        assert "duplicate" in caught.value.problems[1][2]


# -- local files framed in place (archive._framed_file) -------------------------------------

IN_PLACE_SIZES = [65_536, 131_070, 131_071, 262_140, 262_141, 327_675, 1_048_579]


class OwnReads(FileSource):
    """A FileSource subclass with reads of its own: not read in place."""

    def iter_chunks(self, offset: int = 0) -> Iterator[bytes]:  # type: ignore[override]
        yield from super().iter_chunks(offset)


def in_place_members(tmp_path: Path, sizes: list[int]) -> tuple[list[Member], list[Member]]:
    """The same members twice: from files (read in place), and as chunks (the general path)."""
    files, chunks = [], []
    for k, size in enumerate(sizes):
        data = (bytes(range(251)) * (size // 251 + 1))[:size]
        path = tmp_path / f"f{k}"
        path.write_bytes(data)
        files.append(Member(f"f{k}", size=size, source=FileSource(path), mtime=1))
        pieces = [data[i : i + 100_000] for i in range(0, size, 100_000)]
        chunks.append(Member(f"f{k}", size=size, source=Chunks(*pieces), mtime=1))
    return files, chunks


async def _astreamed(archive: Archive) -> bytes:
    out: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        out.append(chunk)

    await archive.astream(sink, lookahead=1)
    return b"".join(out)


def test_files_framed_in_place_give_the_general_bytes(tmp_path: Path) -> None:
    files, chunks = in_place_members(tmp_path, IN_PLACE_SIZES)
    (tmp_path / "own").write_bytes(os.urandom(70_000))
    files.insert(2, Member("own", size=70_000, source=OwnReads(tmp_path / "own"), mtime=1))
    chunks.insert(2, files[2])
    expected = b"".join(Archive(chunks))
    assert b"".join(Archive(files)) == expected
    assert asyncio.run(_collect(Archive(files))) == expected
    assert asyncio.run(_astreamed(Archive(files))) == expected
    archive = Archive(files)
    assert b"".join(archive) == expected
    assert list(archive.crcs) == [
        zlib.crc32((tmp_path / name).read_bytes())
        for name in ("f0", "f1", "own", "f2", "f3", "f4", "f5", "f6")
    ]
    # ranges take the general path, from the CRCs learnt
    for start, end in [(0, 100), (70_000, 400_000), (len(expected) - 5000, len(expected))]:
        assert b"".join(archive.iter_range(start, end)) == expected[start:end]
    with zipfile.ZipFile(io.BytesIO(expected)) as zf:
        assert zf.testzip() is None


IN_PLACE_SIZE = 362_140  # a first chunk of 4 blocks, then a last one of 100,000 bytes


def open_paths() -> list[str]:
    """What this process has open, by path."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return out


@pytest.mark.parametrize("change", ["shorter", "longer", "longer by a block", "gone", "crc"])
@pytest.mark.parametrize("driver", ["sync", "async", "astream"])
def test_files_framed_in_place_fail_as_on_the_general_path(
    tmp_path: Path, change: str, driver: str
) -> None:
    """A file changed after planning: the same error, no byte of its last chunk, closed."""
    files, _ = in_place_members(tmp_path, [IN_PLACE_SIZE])
    path = tmp_path / "f0"
    data = path.read_bytes()
    if change == "crc":  # a declared CRC the bytes do not have
        files[0] = Member(
            "f0", size=IN_PLACE_SIZE, source=FileSource(path), crc32=1, storage="deflate-stored"
        )
    archive = Archive([Member("first", size=2, source=BytesSource(b"ok")), *files])
    if change == "gone":
        path.unlink()
    elif change != "crc":
        path.write_bytes(
            {"shorter": data[:-1], "longer": data + b"x", "longer by a block": data * 2}[change]
        )
    out: list[bytes] = []

    async def run_async() -> None:
        if driver == "async":
            async for chunk in archive:
                out.append(chunk)
        else:

            async def sink(chunk: bytes) -> None:
                out.append(chunk)

            await archive.astream(sink)

    with pytest.raises(SourceError) as caught:
        if driver == "sync":
            for chunk in archive:
                out.append(chunk)
        else:
            asyncio.run(run_async())
    assert caught.value.index == 1
    if change == "gone":
        assert "FileNotFoundError" in str(caught.value)
    elif change == "shorter":
        assert isinstance(caught.value, SourceSizeError)
        assert f"ended after {IN_PLACE_SIZE - 1} of {IN_PLACE_SIZE} bytes" in str(caught.value)
    elif change == "crc":
        assert isinstance(caught.value, CRCMismatchError)
    else:
        assert isinstance(caught.value, SourceSizeError)
        assert f"more than the declared {IN_PLACE_SIZE} bytes" in str(caught.value)
    # a changed size: the first chunk of 4 blocks at most, never the member's last chunk;
    # a wrong CRC (known at the end): the data, and nothing after it
    data_start = archive.plan.member_span(1)[0] + len(archive.plan.local_header(1))
    sent = b"".join(out)
    if change == "crc":  # (astream holds the last 100 KB back: it sends 256 KiB at a time)
        assert data_start + 4 * 65_540 <= len(sent) <= data_start + archive.plan.compressed_size(1)
    elif change == "gone":
        assert len(sent) <= data_start
    else:
        assert len(sent) == data_start + 4 * 65_540
    assert str(path) not in open_paths()


@pytest.mark.parametrize("change", ["shorter", "longer"])
def test_framed_file_stops_before_the_last_chunk(tmp_path: Path, change: str) -> None:
    data = os.urandom(IN_PLACE_SIZE)
    path = tmp_path / "f"
    path.write_bytes(data[:-1] if change == "shorter" else data + b"!")
    result = archive_module._FileRead()
    chunks = list(archive_module._framed_file(str(path), IN_PLACE_SIZE, result))
    assert [len(c) for c in chunks] == [4 * 65_540]
    if change == "shorter":
        assert (result.got, result.more) == (IN_PLACE_SIZE - 1, False)
    else:
        assert (result.got, result.more) == (IN_PLACE_SIZE, True)


def test_files_framed_in_place_are_closed_when_the_reader_stops(tmp_path: Path) -> None:
    files, _ = in_place_members(tmp_path, [IN_PLACE_SIZE])
    path = str(tmp_path / "f0")

    chunks = iter(Archive(files, chunk_size=1000))
    next(chunks)
    assert path in open_paths()  # read in place, and open while its data streams
    chunks.close()  # type: ignore[attr-defined]
    assert path not in open_paths()

    async def stop_early() -> None:
        stream = aiter(Archive(files, chunk_size=1000))
        await anext(stream)
        assert path in open_paths()
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(stop_early())
    assert path not in open_paths()

    async def sink_fails() -> None:
        async def sink(chunk: bytes) -> None:
            raise ConnectionResetError("client gone")

        await Archive(files).astream(sink)

    with pytest.raises(ConnectionResetError):
        asyncio.run(sink_fails())
    assert path not in open_paths()


class OwnAsyncReads(FileSource):
    """A FileSource subclass whose async reads are its own: not read in place either."""

    calls = 0

    async def aiter_chunks(self, offset: int = 0) -> AsyncIterator[bytes]:  # type: ignore[override]
        OwnAsyncReads.calls += 1
        async for chunk in super().aiter_chunks(offset):
            yield chunk


def test_subclasses_with_their_own_reads_are_not_read_in_place(tmp_path: Path) -> None:
    files, chunks = in_place_members(tmp_path, [100_000])
    member = Member("f0", size=100_000, source=OwnAsyncReads(tmp_path / "f0"), mtime=1)
    assert archive_module._framed_path(Archive([member]).plan, 0) is None
    assert archive_module._framed_path(Archive(files).plan, 0) == str(tmp_path / "f0")
    assert asyncio.run(_collect(Archive([member]))) == b"".join(Archive(chunks))
    assert OwnAsyncReads.calls == 1


def test_framed_file_reads_a_pipe_in_short_reads(tmp_path: Path) -> None:
    """readv stops short on a pipe: the reads are completed one view at a time."""
    data = os.urandom(300_000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "wb", buffering=0) as f:
            for i in range(0, len(data), 7_000):
                f.write(data[i : i + 7_000])

    thread = threading.Thread(target=writer)
    thread.start()
    result = archive_module._FileRead()
    framed = b"".join(archive_module._framed_file(str(fifo), len(data), result))
    thread.join()
    assert (result.got, result.crc, result.more) == (len(data), zlib.crc32(data), False)
    inflated = zlib.decompressobj(-15)
    assert inflated.decompress(framed) == data and inflated.eof


def reference_framing(data: bytes) -> bytes:
    """Stored deflate blocks of 65,535 bytes, written out the plain way."""
    out = bytearray()
    starts = range(0, len(data), 65_535) or [0]
    for k in starts:
        block = data[k : k + 65_535]
        final = k + 65_535 >= len(data)
        out += bytes([final]) + len(block).to_bytes(2, "little")
        out += (len(block) ^ 0xFFFF).to_bytes(2, "little") + block
    return bytes(out)


@pytest.mark.parametrize(
    "cuts",
    [[1, 65_534, 65_536, 3, 200_000], [65_535] * 5, [262_144, 262_144], [400_000], [7] * 20],
)
def test_framed_chunks_of_any_size_give_the_reference_blocks(cuts: list[int]) -> None:
    data = os.urandom(sum(cuts))
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(data[at : at + cut])
        at += cut
    archive = Archive([Member("x", size=len(data), source=Chunks(*pieces))])
    whole = b"".join(archive)
    start = len(archive.plan.local_header(0))
    assert whole[start : start + archive.plan.compressed_size(0)] == reference_framing(data)


BIG = b"z" * 100_000
BAD_LARGE = {
    "short": Member("bad", size=200_000, source=Chunks(BIG, BIG[:-1]), storage="store"),
    "long": Member("bad", size=199_999, source=Chunks(BIG, BIG), storage="store"),
    "crc": Member("bad", size=200_000, source=Chunks(BIG, BIG), crc32=7, storage="store"),
    "error": Member("bad", size=200_000, source=Chunks(BIG, fail=True), storage="store"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LARGE))
def test_large_stored_members_fail_as_on_the_general_path(kind: str) -> None:
    """The whole-archive walk reads a large stored member in a loop of its own."""
    members = [Member("ok", size=2, source=BytesSource(b"ok")), BAD_LARGE[kind], Member("z/")]
    out: list[bytes] = []

    async def general() -> None:
        async for _ in Archive(members):
            pass

    with pytest.raises(SourceError) as fast:
        for chunk in Archive(members):
            out.append(chunk)
    with pytest.raises(SourceError) as reference:
        asyncio.run(general())
    assert type(fast.value) is type(reference.value)
    assert str(fast.value) == str(reference.value)
    assert fast.value.index == 1
    # never the bytes after the member's data: no descriptor, no central directory
    plan = Archive(members).plan
    assert len(b"".join(out)) <= plan.member_span(0)[1] + len(plan.local_header(1)) + 200_000
