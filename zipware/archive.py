"""The encoder: walks a :class:`~zipware.plan.Plan` and fills its data spans from the sources.

The walk itself (:func:`_walk`) does no I/O: it yields header bytes and *read requests*
(:class:`_DataRead`), pure objects that turn source chunks into archive bytes, count them,
frame them and check their CRC. Two thin drivers run it, one sync (:meth:`Archive.iter_range`)
and one async (:meth:`Archive.aiter_range`), so both produce the same bytes by construction.

The whole archive, by far the most common request, has a faster sync path
(:meth:`Archive._iter_whole`): it walks the members by index and reads small members inline,
with the same checks and errors; the tests compare its bytes with the general walk's. Two
more shortcuts serve whole members, in every driver: a stored member's chunks are counted
and checked in a loop of their own, and a deflate-stored member from a local file is read
in place, between its block headers (:func:`_framed_file`).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from array import array
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from contextlib import aclosing

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._crc import crc32
from .errors import CRCMismatchError, MissingCRCError, SourceError, SourceSizeError
from .plan import (
    _F_DEFLATE,
    _F_DESC,
    _F_FRAMED,
    BLOCK_OVERHEAD,
    BLOCK_SIZE,
    PAD_BLOCK,
    Member,
    PieceKind,
    Plan,
)
from .sources import READ_SIZE, FileSource, Source, in_thread

__all__ = ["CHUNK_SIZE", "Archive"]

CHUNK_SIZE = 64 * 1024  # the smallest chunk yielded, but for the last one

_FRAMED_BLOCK = BLOCK_SIZE + BLOCK_OVERHEAD
_BLOCK_HEADER = struct.Struct("<BHH")  # BFINAL|BTYPE=00 (byte-aligned), LEN, NLEN
_CD_BATCH = 512  # central headers packed per yielded piece
_MID_HEADER = _BLOCK_HEADER.pack(0, BLOCK_SIZE, BLOCK_SIZE ^ 0xFFFF)  # any block but the last


def _block_header(k: int, size: int) -> bytes:
    """Header of stored deflate block ``k`` of a ``size``-byte member."""
    length = min(BLOCK_SIZE, size - k * BLOCK_SIZE)
    final = 1 if (k + 1) * BLOCK_SIZE >= size else 0
    return _BLOCK_HEADER.pack(final, length, length ^ 0xFFFF)


def _source_offset(framed: bool, start: int) -> int:
    """Where in the source a read of the data span from ``start`` begins."""
    # a framed span is cut into whole blocks: start at the block that holds ``start``
    return (start // _FRAMED_BLOCK) * BLOCK_SIZE if framed else start


class _DataRead:
    """Turns one member's source chunks into the bytes of ``[start, end)`` of its data span.

    ``start``/``end`` are relative to the data span. A *full* read covers the whole span: it
    checks that the source gives exactly the declared size and that the CRC matches the
    declared one (or records it). A partial read (a byte range) stops once it has enough.
    """

    __slots__ = (
        "crc",
        "expected_crc",
        "final_header",
        "framed",
        "full",
        "got",
        "index",
        "inflater",
        "last_block",
        "lead",
        "need",
        "plan",
        "remaining",
        "size",
        "skip",
        "source_offset",
    )

    def __init__(
        self, plan: Plan, index: int, start: int, end: int, expected_crc: int | None
    ) -> None:
        self.plan = plan
        self.index = index
        self.framed = plan.is_framed(index)
        self.size = size = plan.file_size(index)
        self.last_block = max(size - 1, 0) // BLOCK_SIZE
        self.final_header = _block_header(self.last_block, size)
        csize = plan.compressed_size(index)
        self.full = start == 0 and end == csize
        self.expected_crc = expected_crc
        self.crc = 0
        self.got = 0
        self.inflater = (
            zlib.decompressobj(-15) if self.full and plan.is_precompressed(index) else None
        )
        pad = plan.framing_pad(index)
        self.lead = PAD_BLOCK[start:end] if start < pad else b""
        start, end = max(start - pad, 0), max(end - pad, 0)
        self.source_offset = _source_offset(self.framed, start)
        if self.framed:
            block = start // _FRAMED_BLOCK
            self.skip = start - block * _FRAMED_BLOCK  # framed bytes to drop first
            last = (end - 1) // _FRAMED_BLOCK if end > start else block
            self.need = min(self.size, (last + 1) * BLOCK_SIZE) - self.source_offset
            if end <= start and not self.full:
                self.need = 0  # only pad bytes were asked for
        else:
            self.skip = 0
            self.need = end - start
        self.remaining = end - start  # archive bytes still to hand out

    @property
    def name(self) -> str:
        """The member's name, decoded only when an error needs it."""
        return self.plan.name(self.index)

    @property
    def done(self) -> bool:
        """A partial read has all it needs (a full read goes on to see the source end)."""
        return not self.full and self.got >= self.need

    def _fail(self, cls: type[SourceError], message: str) -> SourceError:
        return cls(self.index, self.name, message)

    def feed(self, chunk: bytes) -> list[bytes | memoryview]:
        """Archive bytes for one source chunk (possibly none)."""
        n = len(chunk)
        got = self.got
        if got + n > self.need:
            if self.full:
                raise self._fail(
                    SourceSizeError, f"source has more than the declared {self.need} bytes"
                )
            chunk = chunk[: self.need - got]
            n = len(chunk)
        self.got = got + n
        if self.full:
            if self.inflater is not None:
                self.crc = crc32(self.inflater.decompress(chunk), self.crc)
            else:
                self.crc = crc32(chunk, self.crc)
        if not self.framed:
            if self.remaining < n:  # pragma: no cover - need bounds it already
                chunk = chunk[: self.remaining]
            self.remaining -= len(chunk)
            return [chunk]
        if self.full:
            return self._frame(chunk, self.source_offset + got, joined=True)
        return [b"".join(self._trim(self._frame(chunk, self.source_offset + got)))]

    def _frame(self, chunk: bytes, pos: int, *, joined: bool = False) -> list[bytes | memoryview]:
        """Cut ``chunk`` (source bytes from ``pos``) into stored blocks with their headers.

        ``joined`` (full reads): each header and its block as one ``bytes``. One object
        per block rather than per chunk: glibc keeps allocations of 64 KiB inside the
        heap's top pad, but chunk-sized ones (256 KiB, beside the source's own) can make it
        trim and grow the heap, or map each one afresh, faulting in every page of every
        chunk: measured, that cost more than the framing itself.
        """
        n = len(chunk)
        view = memoryview(chunk)
        out: list[bytes | memoryview] = []
        i = 0
        into = pos % BLOCK_SIZE
        if into:  # the rest of a block begun in an earlier chunk
            i = min(n, BLOCK_SIZE - into)
            out.append(view[:i])
            pos += i
        last = self.last_block
        while i < n:
            # every block but the member's last is full: one header fits them all
            header = _MID_HEADER if pos // BLOCK_SIZE < last else self.final_header
            if joined:
                out.append(header + view[i : i + BLOCK_SIZE])
            else:
                out.append(header)
                out.append(view[i : i + BLOCK_SIZE])
            i += BLOCK_SIZE
            pos += BLOCK_SIZE
        return out

    def _trim(self, pieces: list[bytes | memoryview]) -> list[bytes | memoryview]:
        if self.skip:
            while pieces and self.skip:
                first = pieces[0]
                if len(first) <= self.skip:
                    self.skip -= len(first)
                    pieces.pop(0)
                else:
                    pieces[0] = first[self.skip :]
                    self.skip = 0
        total = sum(map(len, pieces))
        if total > self.remaining:
            cut = total - self.remaining
            while cut:
                last = pieces[-1]
                if len(last) <= cut:
                    cut -= len(last)
                    pieces.pop()
                else:
                    pieces[-1] = last[: len(last) - cut]
                    cut = 0
            total = self.remaining
        self.remaining -= total
        return pieces

    def absorb(self, result: _FileRead) -> None:
        """Take the count and CRC of a read done in place (:func:`_framed_file`)."""
        if result.more:
            raise self._fail(
                SourceSizeError, f"source has more than the declared {self.need} bytes"
            )
        self.got, self.crc = result.got, result.crc
        self.remaining = 0

    def start(self) -> list[bytes | memoryview]:
        """Bytes due before any source chunk: the pad block, the lone block of an empty file."""
        out: list[bytes | memoryview] = [self.lead] if self.lead else []
        if self.framed and self.size == 0:
            out += self._trim([_block_header(0, 0)])
        return out

    def finish(self) -> None:
        """Check the read once the source has ended (or a partial read is satisfied)."""
        if self.got < self.need:
            raise self._fail(
                SourceSizeError,
                f"source ended after {self.source_offset + self.got} of "
                f"{self.source_offset + self.need} bytes",
            )
        if not self.full:
            return
        if self.inflater is not None:
            if not self.inflater.eof or self.inflater.unused_data:
                raise self._fail(SourceSizeError, "precompressed data is not one DEFLATE stream")
            self.crc = crc32(self.inflater.flush(), self.crc)
        if self.expected_crc is not None and self.crc != self.expected_crc:
            raise self._fail(
                CRCMismatchError,
                f"CRC-32 is {self.crc:08x}, declared {self.expected_crc:08x}",
            )


_FRAMES = 4  # stored blocks per chunk read from a local file: 262,160 bytes
_HAVE_READV = hasattr(os, "readv")  # not on Windows: files are read as other sources are


class _FileRead:
    """What :func:`_framed_file` read: bytes and CRC so far, and whether the file had more."""

    __slots__ = ("crc", "got", "more")

    def __init__(self) -> None:
        self.crc = self.got = 0
        self.more = False


def _framed_path(plan: Plan, i: int) -> str | None:
    """The local file to read in place for member ``i``'s whole framed span, if any.

    Only plain :class:`FileSource` members (a subclass may read its own way) larger than
    one block (smaller ones are read inline by the whole-archive walk).
    """
    if plan.is_framed(i) and plan.file_size(i) > BLOCK_SIZE and _HAVE_READV:
        source = plan.source(i)
        if (
            isinstance(source, FileSource)
            and type(source).iter_chunks is FileSource.iter_chunks
            and type(source).aiter_chunks is FileSource.aiter_chunks
        ):
            return source.path
    return None


def _refill(f: io.RawIOBase, targets: list[memoryview | bytearray], got: int) -> int:
    """Fill ``targets`` past their first ``got`` bytes until the file ends; bytes added.

    ``readv`` on a regular file stops early only at its end (or on a signal): this makes
    sure which, one view at a time.
    """
    added = 0
    for target in targets:
        n = len(target)
        if got >= n:
            got -= n
            continue
        pos, got = got, 0
        while pos < n:
            read = f.readinto(memoryview(target)[pos:])
            if not read:
                return added
            pos += read
            added += read
    return added


def _framed_file(path: str, size: int, result: _FileRead) -> Generator[bytes, None, None]:
    """The stored deflate blocks of a whole local file of ``size`` bytes, read in place.

    The file is read into one buffer laid out as the blocks are sent, their headers between
    them, so a chunk costs one ``readv`` and one copy (the bytes handed out) where the
    general path costs a read, a list of pieces and a join. ``result`` follows the bytes
    read and their CRC. A file that ends early stops the chunks (the caller's size check
    fails then); one with more than ``size`` bytes sets ``result.more`` before its last
    chunk is handed out: the last read is followed by a read that must find the end.
    """
    buf = bytearray(_FRAMES * _FRAMED_BLOCK)
    view = memoryview(buf)
    for k in range(_FRAMES):
        buf[k * _FRAMED_BLOCK : k * _FRAMED_BLOCK + 5] = _MID_HEADER
    blocks: list[memoryview | bytearray] = [
        view[k * _FRAMED_BLOCK + 5 : (k + 1) * _FRAMED_BLOCK] for k in range(_FRAMES)
    ]
    full = _FRAMES * BLOCK_SIZE
    crc = done = 0
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        while done < size:
            left = size - done
            if left > full:
                targets, framed, want = blocks, len(buf), full
            else:
                count = -(-left // BLOCK_SIZE)
                last = left - (count - 1) * BLOCK_SIZE
                at = (count - 1) * _FRAMED_BLOCK
                buf[at : at + 5] = _BLOCK_HEADER.pack(1, last, last ^ 0xFFFF)
                targets = [*blocks[: count - 1], view[at + 5 : at + 5 + last]]
                framed, want = at + 5 + last, left
            got = os.readv(fd, targets)
            if got < want:
                got += _refill(f, targets, got)
                if got < want:
                    result.got = done + got
                    return
            if left <= full and f.read(1):  # the file goes on past its declared size
                result.got, result.more = done + want, True
                return
            for target in targets:
                crc = crc32(target, crc)
            done += want
            result.got, result.crc = done, crc
            yield bytes(view[:framed])


def _walk(plan: Plan, crcs: array[int], start: int, end: int) -> Iterator[bytes | _DataRead]:
    """The archive's bytes in ``[start, end)``: header bytes, and read requests for data.

    After a full read of a member whose CRC was unknown, the driver has stored the CRC it
    computed in ``crcs`` before resuming the walk, so descriptors and central headers
    written later carry it.
    """
    if start == 0 and end == plan.size:
        yield from _walk_whole(plan, crcs)
        return
    cd: list[bytes] = []
    for kind, i, pstart, pend in plan.pieces(start, end):
        lo = max(start, pstart) - pstart
        hi = min(end, pend) - pstart
        whole = lo == 0 and hi == pend - pstart
        if kind == PieceKind.CENTRAL_HEADER:
            header = plan.central_header(i, crcs[i])
            cd.append(header if whole else header[lo:hi])
            if len(cd) >= _CD_BATCH:
                yield b"".join(cd)
                cd = []
            continue
        if kind == PieceKind.LOCAL_HEADER:
            header = plan.local_header(i)
            yield header if whole else header[lo:hi]
            if plan.compressed_size(i) == 0 and plan.source(i) is not None and hi == len(header):
                # an empty span has no DATA piece; reading the source still proves that
                # the file is as empty as it was when planned
                yield _DataRead(plan, i, 0, 0, 0)
        elif kind == PieceKind.DATA:
            known = crcs[i]
            yield _DataRead(plan, i, lo, hi, None if known < 0 else known)
        elif kind == PieceKind.DESCRIPTOR:
            yield plan.descriptor(i, crcs[i])[lo:hi]
        else:
            if cd:
                yield b"".join(cd)
                cd = []
            yield plan.end_records()[lo:hi]
    if cd:
        yield b"".join(cd)


def _walk_whole(plan: Plan, crcs: array[int]) -> Iterator[bytes | _DataRead]:
    """What :func:`_walk` yields for the whole archive, walking the members by index.

    No pieces and no offsets: headers follow each other, and the central directory takes
    the local headers' offsets from a running position (:meth:`Plan.central_headers`).
    """
    for i, header in enumerate(plan.local_headers()):
        yield header
        csize = plan.compressed_size(i)
        if csize:
            known = crcs[i]
            yield _DataRead(plan, i, 0, csize, None if known < 0 else known)
        elif plan.source(i) is not None:
            yield _DataRead(plan, i, 0, 0, 0)  # proves the file is still empty
        if plan.has_descriptor(i):
            yield plan.descriptor(i, crcs[i])
    cd: list[bytes] = []
    for header in plan.central_headers(crcs):
        cd.append(header)
        if len(cd) >= _CD_BATCH:
            yield b"".join(cd)
            cd = []
    cd.append(plan.end_records())
    yield b"".join(cd)


def _read_small(
    plan: Plan,
    i: int,
    source: Source,
    size: int,
    *,
    expected_crc: int,
    add: Callable[[bytes], None],
) -> int:
    """Read member ``i``'s whole source, handing each chunk to ``add``; return its CRC-32.

    The inline form of a full :class:`_DataRead` of a stored or single-block member, with
    the same checks and messages (``expected_crc`` -1: none declared or learned).
    """
    crc = got = 0
    try:
        it = source.iter_chunks(0)
        try:
            for data in it:
                got += len(data)
                if got > size:
                    raise SourceSizeError(
                        i, plan.name(i), f"source has more than the declared {size} bytes"
                    )
                crc = crc32(data, crc)
                add(data)
        finally:
            it.close()
    except SourceError:
        raise
    except Exception as exc:
        raise _wrap(plan, i, exc) from exc
    if got < size:
        raise SourceSizeError(i, plan.name(i), f"source ended after {got} of {size} bytes")
    if expected_crc >= 0 and crc != expected_crc:
        raise CRCMismatchError(i, plan.name(i), f"CRC-32 is {crc:08x}, declared {expected_crc:08x}")
    return crc


class _Coalescer:
    """Gathers small pieces into chunks of at least ``size`` bytes without copying big ones.

    A big data chunk goes out as it is once the buffer is empty; the small header bytes
    before it are joined to it once per member, which keeps every chunk but the last at
    least ``size`` bytes with one copy per member at most.
    """

    __slots__ = ("buf", "buffered", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf: list[bytes | memoryview] = []
        self.buffered = 0

    def add(self, piece: bytes | memoryview) -> bytes | None:
        n = len(piece)
        if not n:
            return None
        if not self.buffered and n >= self.size and isinstance(piece, bytes):
            return piece
        self.buf.append(piece)
        self.buffered += n
        if self.buffered >= self.size:
            return self.flush()
        return None

    def flush(self) -> bytes | None:
        if not self.buffered:
            return None
        out = b"".join(self.buf)
        self.buf.clear()  # in place: the whole-archive path holds on to this list
        self.buffered = 0
        return out


def _wrap(plan: Plan, i: int, exc: Exception) -> SourceError:
    source = plan.source(i)
    where = source.describe() if source is not None else "no source"
    return SourceError(i, plan.name(i), f"{where}: {type(exc).__name__}: {exc}")


class Archive:
    """A streamable ZIP archive of ``members``, its exact size known before any byte.

    Iterate it (``for chunk in archive`` or ``async for chunk in archive``) for the whole
    archive, or call :meth:`iter_range` / :meth:`aiter_range` for a byte range. Chunks are at
    least ``chunk_size`` bytes but for the last. A source that fails, is short or long, or
    whose CRC differs from the declared one raises a :class:`~zipware.errors.SourceError`,
    after which nothing more is yielded. CRCs computed during a full pass are kept in
    :attr:`crcs` (and can be given back through ``known_crcs`` to serve later ranges).
    """

    def __init__(
        self,
        members: Iterable[Member] | Plan,
        *,
        comment: str | bytes = b"",
        default_mtime: float | None = None,
        chunk_size: int = CHUNK_SIZE,
        known_crcs: dict[int, int] | None = None,
    ) -> None:
        self.plan = (
            members
            if isinstance(members, Plan)
            else Plan(members, comment=comment, default_mtime=default_mtime)
        )
        self.chunk_size = chunk_size
        self.crcs = self.plan.crc_array()
        for i, crc in (known_crcs or {}).items():
            self.crcs[i] = crc

    @property
    def size(self) -> int:
        """The archive's exact size in bytes."""
        return self.plan.size

    def __len__(self) -> int:
        return self.plan.size

    def missing_crcs(self, start: int = 0, end: int | None = None) -> list[int]:
        """Members whose CRC a range ``[start, end)`` needs and that are not known yet."""
        crcs = self.crcs
        return [i for i in self.plan.needed_crcs(start, end) if crcs[i] < 0]

    def _bounds(self, start: int, end: int | None) -> tuple[int, int, bool]:
        size = self.plan.size
        end = size if end is None else min(end, size)
        if start < 0 or start > end:
            raise ValueError(f"bad range [{start}, {end}) for an archive of {size} bytes")
        whole = start == 0 and end == size
        if not whole:
            missing = self.missing_crcs(start, end)
            if missing:
                raise MissingCRCError(missing)
        return start, end, whole

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_range(0, None)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.aiter_range(0, None)

    def iter_range(self, start: int = 0, end: int | None = None) -> Generator[bytes, None, None]:
        """Yield the bytes of ``[start, end)`` of the archive, reading only what overlaps."""
        start, end, _ = self._bounds(start, end)
        return self._iter(start, end)

    def _iter(self, start: int, end: int) -> Generator[bytes, None, None]:
        if start == 0 and end == self.plan.size:
            yield from self._iter_whole()
            return
        out = _Coalescer(self.chunk_size)
        for step in _walk(self.plan, self.crcs, start, end):
            if isinstance(step, bytes):
                chunk = out.add(step)
                if chunk is not None:
                    yield chunk
            else:
                yield from self._read(step, out)
        last = out.flush()
        if last is not None:
            yield last

    def _read(self, step: _DataRead, out: _Coalescer) -> Generator[bytes, None, None]:
        """Run one read request: its bytes go through ``out``, full chunks come out."""
        plan = self.plan
        for piece in step.start():
            chunk = out.add(piece)
            if chunk is not None:
                yield chunk
        source = plan.source(step.index)
        if source is None:
            step.finish()
            return
        path = _framed_path(plan, step.index) if step.full else None
        try:
            if path is not None:
                result = _FileRead()
                chunks = _framed_file(path, step.size, result)
                try:
                    for data in chunks:
                        chunk = out.add(data)
                        if chunk is not None:
                            yield chunk
                finally:
                    chunks.close()
                step.absorb(result)
                step.finish()
                self.crcs[step.index] = step.crc
                return
            it = source.iter_chunks(step.source_offset)
            try:
                if step.full and not step.framed and step.inflater is None:
                    # a whole stored member, the large file of a fast download: feed()'s
                    # work reduced to a count and a CRC, inline
                    add, crc, got, need = out.add, step.crc, 0, step.need
                    for data in it:
                        got += len(data)
                        if got > need:
                            raise step._fail(
                                SourceSizeError, f"source has more than the declared {need} bytes"
                            )
                        crc = crc32(data, crc)
                        chunk = add(data)
                        if chunk is not None:
                            yield chunk
                    step.got, step.crc = got, crc
                else:
                    for data in it:
                        for piece in step.feed(data):
                            chunk = out.add(piece)
                            if chunk is not None:
                                yield chunk
                        if step.done:
                            break
            finally:
                it.close()
            step.finish()
        except (SourceError, GeneratorExit):
            raise
        except Exception as exc:
            raise _wrap(plan, step.index, exc) from exc
        if step.full:
            self.crcs[step.index] = step.crc

    def _iter_whole(self) -> Generator[bytes, None, None]:
        """The whole archive: the bytes of :func:`_walk_whole` through :meth:`_read`, faster.

        Streaming many small files, the per-member work is the cost: this loop reads the
        plan's columns by index, builds each chunk in one list joined once it holds
        ``chunk_size`` bytes, and reads a small member (stored, or one framed block) inline
        with :func:`_read_small`. Larger and precompressed members take :meth:`_read`,
        which owns the chunk list meanwhile. The sources open one at a time, and none is
        open while a chunk is yielded but the large ones, as on the general path.
        """
        plan = self.plan
        crcs = self.crcs
        limit = self.chunk_size
        out = _Coalescer(limit)
        buf = out.buf
        add = buf.append
        buffered = 0
        descriptor = plan.descriptor
        # the encoder reads the plan's columns directly here: a method call per field and
        # member would cost as much as the rest of the loop
        flags, sizes, csizes, sources = plan._flags, plan._sizes, plan._csizes, plan._sources
        pack_block = _BLOCK_HEADER.pack
        for i, header in enumerate(plan.local_headers()):
            f = flags[i]
            size = sizes[i]
            add(header)
            buffered += len(header)
            if size > BLOCK_SIZE or f & (_F_DEFLATE | _F_FRAMED) == _F_DEFLATE:
                known = crcs[i]
                out.buffered = buffered
                yield from self._read(
                    _DataRead(plan, i, 0, csizes[i], None if known < 0 else known), out
                )
                buffered = out.buffered
            else:
                if f & _F_FRAMED:  # one final stored block
                    add(pack_block(1, size, size ^ 0xFFFF))
                    buffered += BLOCK_OVERHEAD
                source = sources[i]
                if source is not None:
                    if isinstance(source, str):  # a local file's path (Plan.from_columns)
                        source = FileSource(source)
                    # an empty span (csize 0) only proves the file is still empty: CRC 0
                    expected = crcs[i] if csizes[i] else 0
                    crcs[i] = _read_small(plan, i, source, size, expected_crc=expected, add=add)
                    buffered += size
            if f & _F_DESC:
                tail = descriptor(i, crcs[i])
                add(tail)
                buffered += len(tail)
            if buffered >= limit:
                yield b"".join(buf)
                buf.clear()
                buffered = 0
        for header in plan.central_headers(crcs):
            add(header)
            buffered += len(header)
            if buffered >= limit:
                yield b"".join(buf)
                buf.clear()
                buffered = 0
        add(plan.end_records())
        yield b"".join(buf)

    def aiter_range(self, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """Async form of :meth:`iter_range`; sources are read with their async methods."""
        start, end, _ = self._bounds(start, end)
        return self._aiter(start, end)

    async def _aiter(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        plan = self.plan
        crcs = self.crcs
        out = _Coalescer(self.chunk_size)
        for step in _walk(plan, crcs, start, end):
            if isinstance(step, bytes):
                chunk = out.add(step)
                if chunk is not None:
                    yield chunk
                continue
            for piece in step.start():
                chunk = out.add(piece)
                if chunk is not None:
                    yield chunk
            source = plan.source(step.index)
            if source is None:
                step.finish()
                continue
            path = _framed_path(plan, step.index) if step.full else None
            try:
                if path is not None:
                    result = _FileRead()
                    async with aclosing(in_thread(_framed_file(path, step.size, result))) as it:
                        async for data in it:
                            chunk = out.add(data)
                            if chunk is not None:
                                yield chunk
                    step.absorb(result)
                else:
                    async with aclosing(source.aiter_chunks(step.source_offset)) as it:
                        async for data in it:
                            for piece in step.feed(data):
                                chunk = out.add(piece)
                                if chunk is not None:
                                    yield chunk
                            if step.done:
                                break
                step.finish()
            except (SourceError, GeneratorExit):
                raise
            except Exception as exc:
                raise _wrap(plan, step.index, exc) from exc
            if step.full:
                crcs[step.index] = step.crc
        last = out.flush()
        if last is not None:
            yield last

    async def astream(
        self,
        sink: Callable[[bytes], Awaitable[object]],
        start: int = 0,
        end: int | None = None,
        *,
        lookahead: int = 1,
        buffer: int = 2,
    ) -> None:
        """Send the bytes of ``[start, end)`` to ``sink``, opening sources ahead of time.

        While one member streams, the next ``lookahead`` members' sources are already
        opened and up to ``buffer`` chunks of each are read, so the latency of opening a
        URL or an object hides behind the bytes before it. Memory stays bounded by
        ``(lookahead + 1) * buffer`` chunks. A failure of a source read ahead surfaces
        only when the stream reaches that member, as a :class:`SourceError`. ``sink``
        gets chunks of at least 256 KiB (but the last): each call is a send, which costs
        an ASGI server far more than gathering the bytes.

        A coroutine rather than an async generator: the read-ahead tasks need a task group,
        which must not stay open across the suspension points of a generator.
        """
        start, end, whole = self._bounds(start, end)
        plan = self.plan
        crcs = self.crcs
        # a send costs an ASGI server tens of microseconds, the copy of a 64 KiB block a few:
        # framed blocks go out four at a time, a source's own 256 KiB chunks as they are
        out = _Coalescer(max(self.chunk_size, READ_SIZE))
        # (member, where its span's read starts) for every member with data to read
        ahead = (
            (
                (i, 0)
                for i in range(len(plan))
                if plan.compressed_size(i) and plan.source(i) is not None
            )
            if whole  # no pieces, no offsets column
            else (
                (p.member, max(max(start, p.start) - p.start - plan.framing_pad(p.member), 0))
                for p in plan.pieces(start, end)
                if p.kind == PieceKind.DATA and plan.source(p.member) is not None
            )
        )
        pending: dict[int, MemoryObjectReceiveStream[bytes | Exception | _FileRead]] = {}

        def source_of(i: int) -> Source:
            source = plan.source(i)
            assert source is not None
            return source

        async def read_ahead(
            source: Source,
            offset: int,
            into: MemoryObjectSendStream[bytes | Exception | _FileRead],
            in_place: tuple[str, int] | None = None,
        ) -> None:
            # in_place, (path, size): the whole framed span of a local file, read in place
            # (whole archives only); its count and CRC (a _FileRead) come last
            async with into:
                try:
                    if in_place is not None:
                        result = _FileRead()
                        chunks = _framed_file(*in_place, result)
                        async with aclosing(in_thread(chunks)) as it:
                            async for data in it:
                                await into.send(data)
                        await into.send(result)
                        return
                    async with aclosing(source.aiter_chunks(offset)) as it:
                        async for data in it:
                            await into.send(data)
                except anyio.BrokenResourceError:
                    pass  # the reader stopped early (a range), nothing more is wanted
                except Exception as exc:  # handed over, raised in stream order
                    with contextlib.suppress(anyio.BrokenResourceError):
                        await into.send(exc)

        failure: Exception | None = None
        async with anyio.create_task_group() as tg:

            def schedule(limit: int) -> None:
                # keep ``limit`` sources open ahead (the current member counts until popped)
                while len(pending) < limit:
                    nxt = next(ahead, None)
                    if nxt is None:
                        return
                    i, lo = nxt
                    source = source_of(i)
                    sender, receiver = anyio.create_memory_object_stream[
                        bytes | Exception | _FileRead
                    ](buffer)
                    pending[i] = receiver
                    path = _framed_path(plan, i) if whole else None
                    tg.start_soon(
                        read_ahead,
                        source,
                        _source_offset(plan.is_framed(i), lo),
                        sender,
                        None if path is None else (path, plan.file_size(i)),
                    )

            try:
                for step in _walk(plan, crcs, start, end):
                    if isinstance(step, bytes):
                        chunk = out.add(step)
                        if chunk is not None:
                            await sink(chunk)
                        continue
                    for piece in step.start():
                        chunk = out.add(piece)
                        if chunk is not None:
                            await sink(chunk)
                    if plan.source(step.index) is None:
                        step.finish()
                        continue
                    schedule(lookahead + 1)
                    receiver = pending.pop(step.index, None)
                    if receiver is None:  # an empty span checked for emptiness: not read ahead
                        sender, receiver = anyio.create_memory_object_stream[
                            bytes | Exception | _FileRead
                        ](1)
                        tg.start_soon(read_ahead, source_of(step.index), step.source_offset, sender)
                    schedule(lookahead)
                    # the read-ahead task decided the same: chunks already framed, or not
                    in_place = whole and _framed_path(plan, step.index) is not None
                    async with receiver:
                        async for data in receiver:
                            if isinstance(data, Exception):
                                if isinstance(data, SourceError):
                                    raise data
                                raise _wrap(plan, step.index, data) from data
                            if isinstance(data, _FileRead):
                                step.absorb(data)
                                break
                            if in_place:
                                chunk = out.add(data)
                                if chunk is not None:
                                    await sink(chunk)
                                continue
                            for piece in step.feed(data):
                                chunk = out.add(piece)
                                if chunk is not None:
                                    await sink(chunk)  # its errors are the caller's, unwrapped
                            if step.done:
                                break
                    step.finish()
                    if step.full:
                        crcs[step.index] = step.crc
                last = out.flush()
                if last is not None:
                    await sink(last)
            except Exception as exc:
                # raised as itself after the read-ahead tasks are cancelled, not wrapped in
                # an exception group: callers catch SourceError or OSError as they are
                failure = exc
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
