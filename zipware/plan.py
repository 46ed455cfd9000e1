"""The plan: a pure, I/O-free description of an archive's every byte.

A :class:`Plan` is computed once from the members' metadata (name, size, CRC-32 if known,
mtime, mode, storage). From it come the archive's exact size, the bytes of every header, the
offset of every header and data span, and which members a byte range touches. The streaming
encoder (:mod:`zipware.archive`) only walks the plan and fills the data spans from the
sources, so the size announced, the bytes of any range and the bytes streamed cannot disagree.

Layout (see APPNOTE.TXT 6.3.10 and the project's reader-compatibility notes):

* ``store`` with a known CRC: method 0, CRC and sizes in the local header, no data descriptor.
* ``store`` without a CRC: method 0, bit 3 and a signed data descriptor (streaming readers
  such as JDK ``ZipInputStream`` cannot read this; the default never picks it).
* ``deflate-stored``: method 8 made of hand-written stored deflate blocks of at most 65,535
  bytes (5 bytes of framing each), so the size is exact; bit 3 and a signed data descriptor
  when the CRC is not known up front.
* ``precompressed``: method 8, the source holds a raw DEFLATE stream; size, compressed size
  and CRC are declared.
* directories and empty files: method 0, CRC 0, sizes 0.

ZIP64 appears only where a field overflows (``>=`` 0xFFFFFFFF / 0xFFFF), with the zip64 extra
first among the extras. Memory is a few columns of machine integers per member (no per-member
Python object is kept but the name and the source), under 100 bytes per member; the offsets
of the local and central headers are only computed (8 bytes each) for byte ranges.

Planning takes one of two paths with the same result. A list or tuple of members is planned
a column at a time (:meth:`Plan._plan_columns`: whole-column checks and arithmetic that run
in C, about 4x faster); anything unusual there, and any other iterable, goes through the
single pass over the members (:meth:`Plan._plan_loop`), which holds every check and message.
"""

from __future__ import annotations

import enum
import functools
import re
import struct
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, chain, islice, repeat
from operator import add, or_, sub
from typing import Any, NamedTuple, cast

import msgspec

from .errors import InvalidMemberError
from .sources import FileSource, Source

__all__ = [
    "BLOCK_SIZE",
    "Member",
    "Piece",
    "PieceKind",
    "Plan",
    "Storage",
    "deflate_stored_size",
]

MAX32 = 0xFFFFFFFF  # a 4-byte field holding this value means "see the zip64 extra"
MAX16 = 0xFFFF
MAX_NAME_BYTES = 0xFFFF
BLOCK_SIZE = 0xFFFF  # largest payload of a stored deflate block (RFC 1951 3.2.4: LEN is 16 bits)
BLOCK_OVERHEAD = 5  # BFINAL/BTYPE byte (byte-aligned), LEN, NLEN

# APPNOTE 4.3.7 local file header: signature, version needed, flags, method, DOS time,
# DOS date, CRC-32, compressed size, uncompressed size, name length, extra length.
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIG = 0x04034B50
# APPNOTE 4.3.9 data descriptor, with its optional signature (macOS needs it), 32-bit sizes
# or 64-bit sizes when the local header carries a zip64 extra.
_DESC32 = struct.Struct("<IIII")
_DESC64 = struct.Struct("<IIQQ")
_DESC_SIG = 0x08074B50
# APPNOTE 4.3.12 central directory header: signature, version made by, version needed, flags,
# method, DOS time, DOS date, CRC-32, compressed size, uncompressed size, name length, extra
# length, comment length, disk number start, internal attributes, external attributes,
# offset of the local header.
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_CENTRAL_SIG = 0x02014B50
# APPNOTE 4.5.3 zip64 extended information extra field (tag 0x0001): sizes, then offset.
_X64_SIZES = struct.Struct("<HHQQ")
_X64_ALL = struct.Struct("<HHQQQ")
# Info-ZIP extended timestamp extra field (tag 0x5455), modification time only: UTC seconds.
_XTIME = struct.Struct("<HHBI")
# APPNOTE 4.3.14 zip64 end of central directory record, 4.3.15 its locator, 4.3.16 the end
# of central directory record.
_END64 = struct.Struct("<IQHHIIQQQQ")
_END64_SIG = 0x06064B50
_LOCATOR = struct.Struct("<IIQI")
_LOCATOR_SIG = 0x07064B50
_END = struct.Struct("<IHHHHIIH")
_END_SIG = 0x06054B50

# Version made by: high byte 3 = Unix (so readers apply the mode in the external
# attributes), low byte the spec version: 3.0, or 4.5 when the member uses ZIP64.
_MADE_BY = 0x031E
_MADE_BY_64 = 0x032D

_FLAG_DESCRIPTOR = 0x0008  # bit 3: CRC and sizes follow the data
_FLAG_UTF8 = 0x0800  # bit 11: name is UTF-8

# Internal per-member flags, kept in one small integer column.
_F_DEFLATE = 1  # method 8 (else 0)
_F_DESC = 2  # bit 3 + data descriptor
_F_FRAMED = 4  # deflate-stored: zipware writes the block framing
_F_DIR = 8
_F_UTF8 = 16
_F_XTIME = 32  # carries a 0x5455 extra
_F_LOCAL64 = 64  # the member's own sizes overflow: zip64 extra in local and central
_F_OFFSET64 = 128  # the local header's offset overflows: offset in the central zip64 extra
_F_PAD = 256  # framed data starts with an empty stored block (see PAD_BLOCK)
_F_LIMIT = 512  # every combination of the flags above is smaller

# An empty, non-final stored deflate block. JDK 17's ZipInputStream reads 8-byte descriptor
# sizes only when a size is *over* 0xFFFFFFFF, while libarchive reads them whenever the
# local header has a zip64 extra (present from 0xFFFFFFFF on): a framed member whose data
# is exactly 0xFFFFFFFF bytes would split them. Five more bytes put it out of reach.
PAD_BLOCK = b"\x00\x00\x00\xff\xff"

_DEFAULT_FILE_MODE = 0o100644
_DEFAULT_DIR_MODE = 0o040755
_S_IFMT = 0o170000
_S_IFREG = 0o100000
_S_IFDIR = 0o040000

_NONE = type(None)
_DOS_EPOCH = (0x21, 0x0000)  # 1980-01-01 00:00:00 as (date, time)
# years 1 to 9999: what time.gmtime() accepts everywhere (and far past what ZIP can show)
_MTIME_MIN = -62_135_596_800
_MTIME_MAX = 253_402_300_799


class Storage(str, enum.Enum):
    """How a member's bytes are stored in the archive.

    ``AUTO`` (the default) picks ``STORE`` when the CRC-32 is known up front and
    ``DEFLATE_STORED`` otherwise: the one choice every mainstream reader, streaming ones
    included, opens.
    """

    AUTO = "auto"
    STORE = "store"
    DEFLATE_STORED = "deflate-stored"
    PRECOMPRESSED = "precompressed"


class Member(msgspec.Struct):
    """What the plan needs to know about one member; sources are opened only when streamed.

    ``name`` is ``/``-separated; a trailing ``/`` makes a directory. ``size`` is the
    uncompressed size in bytes. ``crc32`` is the CRC-32 of the uncompressed bytes when known
    up front. ``mtime`` is in Unix seconds (UTC). ``mode`` is the Unix mode, either the
    permission bits alone or a full ``st_mode``. ``compressed_size`` is required for
    ``precompressed`` members, whose source yields a raw DEFLATE stream.
    """

    name: str
    size: int = 0
    source: Source | None = None
    crc32: int | None = None
    mtime: float | None = None
    mode: int | None = None
    storage: Storage | str = Storage.AUTO
    compressed_size: int | None = None


class PieceKind(enum.IntEnum):
    """What a stretch of the archive holds."""

    LOCAL_HEADER = 0
    DATA = 1
    DESCRIPTOR = 2
    CENTRAL_HEADER = 3
    END = 4


class Piece(NamedTuple):
    """A stretch ``[start, end)`` of the archive; ``member`` is its index (-1 for END)."""

    kind: PieceKind
    member: int
    start: int
    end: int


_KIND_AUTO, _KIND_STORE, _KIND_FRAMED, _KIND_PRECOMPRESSED = range(4)
# keyed by the plain strings too: Storage is a str enum, so both spellings hash alike
_STORAGE_KIND: dict[str, int] = {
    Storage.AUTO: _KIND_AUTO,
    Storage.STORE: _KIND_STORE,
    Storage.DEFLATE_STORED: _KIND_FRAMED,
    Storage.PRECOMPRESSED: _KIND_PRECOMPRESSED,
}


def deflate_stored_size(size: int) -> int:
    """Size of ``size`` bytes framed as stored deflate blocks (at least one block)."""
    blocks = max(1, -(-size // BLOCK_SIZE))
    return size + BLOCK_OVERHEAD * blocks


def _version_needed(f: int) -> int:
    if f & (_F_LOCAL64 | _F_OFFSET64):
        return 45
    return 20 if f & (_F_DEFLATE | _F_DIR) else 10


def _local_header_fixed(f: int) -> int:
    """Bytes of a local header but the name: fixed part, zip64 and time extras."""
    return 30 + (20 if f & _F_LOCAL64 else 0) + (9 if f & _F_XTIME else 0)


def _descriptor_size(f: int) -> int:
    if not f & _F_DESC:
        return 0
    return 24 if f & _F_LOCAL64 else 16


def _central_header_fixed(f: int) -> int:
    """Bytes of a central header but the name: fixed part, zip64 and time extras."""
    size = 46 + (9 if f & _F_XTIME else 0)
    if f & _F_OFFSET64:
        return size + 28
    return size + 20 if f & _F_LOCAL64 else size


# What depends only on a member's flags, for every combination of them: the hot paths (a
# list planned by columns, headers written by the hundred thousand) index these tables
# instead of testing bits one member at a time.
_FLAGS = range(_F_LIMIT)
_LOCAL_FIXED = tuple(map(_local_header_fixed, _FLAGS))
# a member's span but its name and data: local header, extras and descriptor
_SPAN_FIXED = tuple(_local_header_fixed(f) + _descriptor_size(f) for f in _FLAGS)
_CENTRAL_FIXED = tuple(map(_central_header_fixed, _FLAGS))
# (version needed, general purpose flags, method), as both headers write them
_HEADER_FIELDS = tuple(
    (
        _version_needed(f),
        (_FLAG_DESCRIPTOR if f & _F_DESC else 0) | (_FLAG_UTF8 if f & _F_UTF8 else 0),
        8 if f & _F_DEFLATE else 0,
    )
    for f in _FLAGS
)


@functools.lru_cache(maxsize=1024)  # bounded: members often share an mtime, not always
def _dos_datetime(mtime: int) -> tuple[int, int]:
    # DOS fields are local time by tradition; zipware writes UTC so the bytes do not depend
    # on the server's time zone (the 0x5455 extra carries the exact UTC time anyway).
    t = time.gmtime(mtime)
    if t.tm_year < 1980:
        return _DOS_EPOCH
    if t.tm_year > 2107:
        return ((127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29)
    date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    tod = (t.tm_hour << 11) | (t.tm_min << 5) | (min(t.tm_sec, 59) // 2)
    return date, tod


def _duplicates(
    names: bytearray,
    ends: array[int],
    hashes: array[int],
    suspects: set[int],
    problems: list[tuple[int, str, str]],
) -> list[tuple[int, str, str]]:
    """The members whose name repeats an earlier one, among those with a suspect hash."""
    # planned members skip the ones already refused: map column numbers back to indexes
    refused = sorted({i for i, _, _ in problems if i >= 0})
    out: list[tuple[int, str, str]] = []
    first: set[bytes] = set()
    index = 0
    r = 0
    for column, h in enumerate(hashes):
        while r < len(refused) and refused[r] == index:
            index += 1
            r += 1
        if h in suspects:
            name = bytes(names[ends[column - 1] if column else 0 : ends[column]])
            key = name[:-1] if name.endswith(b"/") else name
            if key in first:
                out.append((index, name.decode(), "duplicate name"))
            else:
                first.add(key)
        index += 1
    return out


def _member_problem(m: Member) -> str:
    """Why a member the fast checks flagged is refused (the slow path, for messages)."""
    name, size, crc = m.name, m.size, m.crc32
    if type(name) is not str:
        return f"name must be a string, not {type(name).__name__}"
    if not name:
        return "name is empty"
    if type(size) is not int or size < 0:
        return f"size must be a non-negative integer, not {size!r}"
    if crc is not None and (type(crc) is not int or not 0 <= crc <= MAX32):
        return f"crc32 must be an integer in [0, 2**32), not {crc!r}"
    return f"unknown storage {m.storage!r} (one of: {', '.join(s.value for s in Storage)})"


def _suspect_name(name: str) -> bool:
    """The loop's quick test: only names it flags can have a problem (see _name_problem)."""
    return (
        "\\" in name
        or "\x00" in name
        or "//" in name
        or "/." in name
        or name[0] in "./"
        or name[1:2] == ":"
    )


def _data_flags(is_dir: bool, size: int, crc: int | None, kind: int, source: Source | None) -> int:
    """How a member's data is stored (the loop's rules), or -1 where the loop refuses it."""
    if is_dir:
        return _F_DIR if not (size or crc or source is not None) else -1
    if size == 0:
        return -1 if crc else 0  # empty: stored, CRC 0, no descriptor
    if source is None:
        return -1
    if crc is not None:
        return 0
    return _F_DEFLATE | _F_FRAMED | _F_DESC if kind == _KIND_AUTO else _F_DESC


# One field of every member, as a list: a comprehension per field, whose attribute loads
# the interpreter specialises (``map(attrgetter(...))`` takes the generic path, 1.5x slower).
_MEMBER_COLUMNS: dict[str, Callable[[Sequence[Member]], list[Any]]] = {
    "name": lambda members: [m.name for m in members],
    "size": lambda members: [m.size for m in members],
    "source": lambda members: [m.source for m in members],
    "crc32": lambda members: [m.crc32 for m in members],
    "mtime": lambda members: [m.mtime for m in members],
    "mode": lambda members: [m.mode for m in members],
    "storage": lambda members: [m.storage for m in members],
}


def _member_column(members: Sequence[Member], field: str) -> list[Any]:
    return _MEMBER_COLUMNS[field](members)


def _fill(typecode: str, values: Iterable[int]) -> array[int]:
    """An array of ``values``, filled a slice at a time.

    ``array(code, iterator)`` costs about twice as much per item as filling from lists, and
    one list of every value would cost ~40 bytes per member at the peak (an int object and
    a pointer each): slices of 4096 keep both low.
    """
    out = array(typecode)
    it = iter(values)
    while chunk := list(islice(it, 4096)):
        out.fromlist(chunk)
    return out


def _per_member(column: int | list[int], n: int) -> list[int]:
    """A flags column as a list, one value per member."""
    return [column] * n if isinstance(column, int) else column


def _or_columns(a: int | list[int], b: int | list[int]) -> int | list[int]:
    """Bitwise or of two flag columns, each a list or one value shared by every member."""
    if isinstance(a, int):
        return a | b if isinstance(b, int) else list(map(a.__or__, b))
    return list(map(b.__or__, a)) if isinstance(b, int) else list(map(or_, a, b))


def _column_sum(table: tuple[int, ...], flags: array[int]) -> int:
    """The sum of ``table[f]`` over a flags column: one count per distinct value."""
    first = flags[0]
    if flags.count(first) == len(flags):  # the usual list: one value for every member
        return table[first] * len(flags)
    return sum(table[f] * flags.count(f) for f in set(flags))


def _full_mode(mode: int | None, is_dir: bool) -> int:
    """The Unix mode written: a default, or the permission bits with the file type added."""
    if mode is None:
        return _DEFAULT_DIR_MODE if is_dir else _DEFAULT_FILE_MODE
    if not mode & _S_IFMT:
        mode |= _S_IFDIR if is_dir else _S_IFREG
    return mode & 0xFFFFFFFF


def _name_problem(name: str) -> str | None:
    """The reason a name is refused, or None."""
    if "\x00" in name:
        return "name contains a NUL byte"
    if "\\" in name:
        return "name contains a backslash (use '/' as the separator)"
    if name.startswith("/"):
        return "name is absolute"
    if re.match(r"^[A-Za-z]:", name):
        return "name starts with a drive letter"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        return "name has a '..' component"
    if "." in parts:
        return "name has a '.' component"
    if "" in parts:
        return "name has an empty component ('//')"
    return None


class Plan:
    """The exact layout of one archive, computed from member metadata alone.

    Build it with ``Plan(members)``; it reads nothing. It raises
    :class:`~zipware.errors.InvalidMemberError` listing every bad member at once.

    ``default_mtime`` applies to members without an ``mtime``; without either, the DOS epoch
    (1980-01-01) is written and no extended timestamp, so the bytes stay deterministic.
    """

    __slots__ = (
        "_cd_offsets",
        "_crcs",
        "_csizes",
        "_flags",
        "_modes",
        "_mtimes",
        "_name_ends",
        "_names",
        "_offsets",
        "_sizes",
        "_sources",
        "cd_end",
        "cd_start",
        "comment",
        "size",
        "zip64_end",
    )

    def __init__(
        self,
        members: Iterable[Member],
        *,
        comment: str | bytes = b"",
        default_mtime: float | None = None,
    ) -> None:
        self._build(members, comment, default_mtime)

    @classmethod
    def from_columns(
        cls,
        names: list[str],
        sizes: list[int],
        sources: list[Source | str | None],
        *,
        mtimes: list[float | None] | None = None,
        modes: list[int | None] | None = None,
        crcs: list[int | None] | None = None,
        comment: str | bytes = b"",
        default_mtime: float | None = None,
    ) -> Plan:
        """The plan of members given as columns, equal lists (``mtimes``, ``modes`` and
        ``crcs`` default to None for every member); storage is ``auto``.

        The same plan as ``Plan([Member(names[i], sizes[i], sources[i], ...)...])`` without
        a :class:`Member` per member: the quick way for manifests of many local files. A
        source given as a ``str`` is a local file's path, read as a :class:`FileSource`
        when its turn comes.
        """
        n = len(names)
        nothing: list[Any] = [None] * n
        columns: dict[str, list[Any]] = {
            "name": names,
            "size": sizes,
            "source": list(sources),  # the plan keeps it: a copy the caller cannot change
            "crc32": nothing if crcs is None else crcs,
            "mtime": nothing if mtimes is None else mtimes,
            "mode": nothing if modes is None else modes,
            "storage": [Storage.AUTO] * n,
        }
        if not all(len(c) == n for c in columns.values()):
            raise ValueError("the columns differ in length")
        plan = cls.__new__(cls)
        fields = ("name", "size", "source", "crc32", "mtime", "mode")
        # made only if the columns look unusual: the loop plans them again and says why
        members = (Member(*row) for row in zip(*(columns[f] for f in fields), strict=True))
        plan._build(members, comment, default_mtime, columns)
        return plan

    def _build(
        self,
        members: Iterable[Member],
        comment: str | bytes,
        default_mtime: float | None,
        columns: dict[str, list[Any]] | None = None,
    ) -> None:
        default_mt = -1 if default_mtime is None else int(default_mtime)
        problems: list[tuple[int, str, str]] = []
        # A list or tuple is already held by the caller: planning it a column at a time runs
        # in C and costs a few temporary pointers per member next to the caller's objects. A
        # generator keeps the single pass, so no member outlives its turn but as columns.
        # Given ``columns`` (``members`` then makes the same members, lazily), those.
        quick = (
            columns if columns is not None or not isinstance(members, (list, tuple)) else members
        )
        if quick is None or not self._plan_columns(quick, default_mt):
            problems = self._plan_loop(members, default_mt)
        bcomment = comment.encode("utf-8") if isinstance(comment, str) else bytes(comment)
        if len(bcomment) > MAX16:
            problems.append((-1, "", f"archive comment is over {MAX16} bytes"))
        if problems:
            raise InvalidMemberError(problems)

        self._cd_offsets: array[int] | None = None  # made on the first range into the directory
        self.comment = bcomment
        cd_size = self.cd_end - self.cd_start
        self.zip64_end = len(self._name_ends) >= MAX16 or self.cd_start >= MAX32 or cd_size >= MAX32
        self.size = self.cd_end + (56 + 20 if self.zip64_end else 0) + 22 + len(bcomment)

    def _plan_loop(self, members: Iterable[Member], default_mt: int) -> list[tuple[int, str, str]]:
        """Plan members one at a time, with every check; return the problems found.

        The reference path: any iterable, every error message. The columns are stored even
        when there are problems (the caller raises then).
        """
        # names live in one buffer with their end offsets: a bytes object per name would
        # cost ~40 bytes of header each, the budget of a whole member
        names = bytearray()
        name_ends = array("q")
        sources: list[Source | str | None] = []
        sizes = array("q")
        csizes = array("q")
        crcs = array("q")  # -1: not declared
        mtimes = array("q")  # -1: none
        modes = array("I")
        flags = array("H")
        # Duplicates: a set of names would cost ~70 bytes a member at the peak. Instead each
        # name's hash sets one bit in a table of 32 bits per member (grown as members come);
        # a bit already set makes the hash a suspect, confirmed against the names after the
        # loop. About 1 name in 50 is a false suspect; the check only looks at those.
        hashes = array("q")
        bits = bytearray(1 << 12)
        mask = (len(bits) << 3) - 1
        suspects: list[int] = []
        problems: list[tuple[int, str, str]] = []
        # bound methods: this loop runs once per member and dominates planning time
        add_name_end, add_source = name_ends.append, sources.append
        add_size, add_csize, add_crc = sizes.append, csizes.append, crcs.append
        add_mtime, add_mode, add_flags = mtimes.append, modes.append, flags.append
        kinds = _STORAGE_KIND
        offset = 0
        cd_size = 0

        for index, m in enumerate(members):
            name = m.name
            size = m.size
            crc = m.crc32
            source = m.source
            kind = kinds.get(m.storage, -1)
            if (
                type(size) is not int
                or size < 0
                or type(name) is not str
                or not name
                or kind < 0
                or (crc is not None and (type(crc) is not int or not 0 <= crc <= MAX32))
            ):
                problems.append((index, str(name), _member_problem(m)))
                continue
            # Substring tests are ~4x cheaper than a regex here; what they flag gets the
            # exact check (".bashrc" or "a/.git/x" are fine).
            if (
                "\\" in name
                or "\x00" in name
                or "//" in name
                or "/." in name
                or name[0] in "./"
                or name[1:2] == ":"
            ):
                problem = _name_problem(name)
                if problem is not None:
                    problems.append((index, name, problem))
                    continue
            try:
                bname = name.encode()
            except UnicodeEncodeError:
                problems.append((index, name, "name is not valid Unicode (lone surrogate)"))
                continue
            nlen = len(bname)
            if nlen > MAX_NAME_BYTES:
                problems.append(
                    (index, name, f"name is {nlen} bytes in UTF-8 (at most {MAX_NAME_BYTES})")
                )
                continue
            if name[-1] == "/":
                if size or source is not None or crc:
                    problems.append((index, name, "a directory has no size, CRC or source"))
                    continue
                key = bname[:-1]
                f = _F_DIR
                csize = crc = 0
            else:
                key = bname
                if size == 0:
                    if crc:
                        problems.append((index, name, "an empty file's CRC-32 is 0"))
                        continue
                    crc = 0
                elif source is None:
                    problems.append((index, name, "a non-empty file needs a source"))
                    continue
                if kind == _KIND_AUTO:
                    if crc is None:
                        f = _F_DEFLATE | _F_FRAMED | _F_DESC
                        csize = size + BLOCK_OVERHEAD * (-(-size // BLOCK_SIZE) or 1)
                    else:
                        f = 0
                        csize = size
                elif kind == _KIND_STORE:
                    f = _F_DESC if crc is None else 0
                    csize = size
                elif kind == _KIND_FRAMED:
                    f = _F_DEFLATE | _F_FRAMED | (_F_DESC if crc is None else 0)
                    csize = size + BLOCK_OVERHEAD * (-(-size // BLOCK_SIZE) or 1)
                else:
                    csize = m.compressed_size  # type: ignore[assignment]
                    if crc is None or type(csize) is not int or csize < 2:
                        # 2 bytes: the shortest raw DEFLATE stream, one empty final block
                        problems.append(
                            (index, name, "precompressed needs crc32 and compressed_size >= 2")
                        )
                        continue
                    f = _F_DEFLATE
            # the last refusal: a member refused after its name is hashed would shift the
            # duplicate check's columns
            mtime = m.mtime
            if mtime is None:
                mt = default_mt
            elif _MTIME_MIN <= mtime <= _MTIME_MAX:  # also false for NaN
                mt = int(mtime)
            else:
                problems.append((index, name, f"mtime {mtime!r} is out of range"))
                continue
            h = hash(key)
            hashes.append(h)
            bit = h & mask
            byte = bits[bit >> 3]
            if byte & (1 << (bit & 7)):
                suspects.append(h)
            else:
                bits[bit >> 3] = byte | (1 << (bit & 7))
            if len(hashes) << 5 > mask:
                bits = bytearray(len(bits) << 2)
                mask = (len(bits) << 3) - 1
                for h in hashes:
                    bit = h & mask
                    bits[bit >> 3] |= 1 << (bit & 7)
            if nlen != len(name):
                f |= _F_UTF8
            if 0 <= mt <= 0x7FFFFFFF:
                # the 0x5455 field is a signed 32-bit count in Info-ZIP; outside it, DOS only
                f |= _F_XTIME
            mode = m.mode
            if mode is None:
                mode = _DEFAULT_DIR_MODE if f & _F_DIR else _DEFAULT_FILE_MODE
            elif not mode & _S_IFMT:
                mode |= _S_IFDIR if f & _F_DIR else _S_IFREG
            if csize == MAX32 and f & _F_FRAMED and f & _F_DESC:
                csize += len(PAD_BLOCK)
                f |= _F_PAD
            if size >= MAX32 or csize >= MAX32:
                f |= _F_LOCAL64
            if offset >= MAX32:
                f |= _F_OFFSET64

            names += bname
            add_name_end(len(names))
            add_source(source)
            add_size(size)
            add_csize(csize)
            add_crc(-1 if crc is None else crc)
            add_mtime(mt)
            add_mode(mode & 0xFFFFFFFF)
            add_flags(f)

            xt = 9 if f & _F_XTIME else 0
            offset += 30 + nlen + xt + csize
            cd_size += 46 + nlen + xt
            if f & (_F_LOCAL64 | _F_OFFSET64 | _F_DESC):
                if f & _F_LOCAL64:
                    offset += 20 + (24 if f & _F_DESC else 0)
                elif f & _F_DESC:
                    offset += 16
                if f & (_F_LOCAL64 | _F_OFFSET64):
                    cd_size += 20 + (8 if f & _F_OFFSET64 else 0)

        del bits
        if suspects:
            problems.extend(_duplicates(names, name_ends, hashes, set(suspects), problems))
            problems.sort(key=lambda p: p[0])
        del hashes

        self._names = names
        self._name_ends = name_ends
        self._sources = sources
        self._sizes = sizes
        self._csizes = csizes
        self._crcs = crcs
        self._mtimes = mtimes
        self._modes = modes
        self._flags = flags
        self._offsets: array[int] | None = None  # made when a range needs them
        self.cd_start = offset
        self.cd_end = offset + cd_size
        return problems

    def _plan_columns(
        self, members: Sequence[Member] | dict[str, list[Any]], default_mt: int
    ) -> bool:
        """Plan a list of ordinary members a column at a time; False leaves it to the loop.

        Each check of :meth:`_plan_loop` has a whole-column form here that runs in C (a
        join, a set, ``min``/``max``, ``count``), and the layout arithmetic is done on whole
        columns too (``map``, ``accumulate``). Whatever looks unusual (a name the quick test
        flags and the exact one refuses, a duplicate, a type that is not exactly ``int`` or
        ``str``, a storage other than auto/store, a directory with a size...) returns False
        before anything is stored, and the loop plans the members again with its messages.
        """
        column: Callable[[str], list[Any]]
        if isinstance(members, dict):
            column, n = members.__getitem__, len(members["name"])
        else:
            column, n = functools.partial(_member_column, members), len(members)
        try:
            return self._try_columns(column, n, default_mt)
        except (AttributeError, TypeError, ValueError, OverflowError):
            # an odd member (unhashable storage, NaN mtime, huge size, lone surrogate...):
            # the loop reports it, or raises the same error it always raised
            return False

    def _try_columns(self, column: Callable[[str], list[Any]], n: int, default_mt: int) -> bool:
        # The body of _plan_columns. ``column(field)`` gives one field of every member as a
        # list. The temporary lists are dropped as soon as each column is made: at the peak
        # they cost ~100 bytes per member, next to the caller's ~260.
        if not n:
            return False

        # -- names: each of the loop's checks as one test of the whole column
        names = column("name")
        if set(map(type, names)) != {str} or not all(names):
            return False
        joined = "\x00".join(names)  # NUL cannot be in a valid name: a safe separator
        if (
            joined.count("\x00") != n - 1  # a name holds a NUL
            or "\\" in joined
            or "//" in joined
            or "/." in joined
            or "\x00." in joined
            or "\x00/" in joined
            or joined[0] in "./"
            or ":" in joined
        ) and any(_name_problem(name) for name in names if _suspect_name(name)):
            return False  # (".bashrc" or "a/.git/x" are flagged, and fine)
        if joined.isascii():
            blob = bytearray(joined, "ascii").replace(b"\x00", b"")
            nlens = list(map(len, names))
            utf8: int | list[int] = 0
        else:
            encoded = [name.encode() for name in names]  # a lone surrogate raises
            blob = bytearray().join(encoded)
            nlens = list(map(len, encoded))
            del encoded
            # bit 11 where the UTF-8 bytes outnumber the characters
            utf8 = [_F_UTF8 if b != c else 0 for b, c in zip(nlens, map(len, names), strict=True)]
        if max(nlens) > MAX_NAME_BYTES:
            return False
        dirs = joined.count("/\x00") + (joined[-1] == "/")
        del joined
        is_dir = [name[-1] == "/" for name in names] if dirs else None
        # a directory's key drops its "/": "a/" and "a" are the same entry
        keys = (
            [name[:-1] if d else name for name, d in zip(names, is_dir, strict=True)]
            if is_dir
            else names
        )
        if len(set(keys)) != n:
            return False
        del keys, names

        # -- sizes, CRCs, sources, storage: exact types and ranges
        size_list = column("size")
        if set(map(type, size_list)) != {int}:
            return False  # bool, float, int subclasses: the loop's messages
        sizes = array("q", size_list)  # past 2**63: OverflowError
        del size_list
        if min(sizes) < 0:
            return False
        crc_list = column("crc32")
        crc_types = set(map(type, crc_list))
        if not crc_types <= {int, _NONE}:
            return False
        if int in crc_types:
            declared = (
                [c for c in crc_list if c is not None]
                if _NONE in crc_types
                else cast("list[int]", crc_list)
            )
            if min(declared) < 0 or max(declared) > MAX32:
                return False
            del declared
        sources = column("source")
        storage_list = column("storage")
        kinds = {_STORAGE_KIND.get(s, -1) for s in set(storage_list)}
        if not kinds <= {_KIND_AUTO, _KIND_STORE}:
            return False
        empty = sizes.count(0)
        # flags: one value shared by every member (the usual list), or one per member
        flags: int | list[int]
        if dirs or empty or len(kinds) > 1 or len(crc_types) > 1 or not all(sources):
            storages = map(_STORAGE_KIND.__getitem__, storage_list)
            no_dirs = repeat(False)
            flags = list(map(_data_flags, is_dir or no_dirs, sizes, crc_list, storages, sources))
            if -1 in flags:
                return False
            # size 0 (directories, empty files): CRC 0; declared CRCs as they are; -1 unknown
            crcs = _fill(
                "q",
                (
                    (0 if s == 0 else -1) if c is None else c
                    for c, s in zip(crc_list, sizes, strict=True)
                ),
            )
        else:  # files with sources, one storage, CRCs all declared or all unknown
            flags = _data_flags(False, 1, crc_list[0], kinds.pop(), sources[0])
            crcs = (
                array("q", cast("list[int]", crc_list))
                if int in crc_types
                else array("q", [-1]) * n
            )
        del crc_list, storage_list

        # -- mtimes and modes
        mtime_list = column("mtime")
        if mtime_list.count(None) == n:
            mtimes = array("q", [default_mt]) * n
            lo = hi = default_mt
        else:
            mtime_types = set(map(type, mtime_list))
            if not mtime_types <= {int, float, _NONE}:
                return False
            # strict bounds: a fraction past one truncates to it, which the loop refuses
            if _NONE in mtime_types:
                given = [int(t) for t in mtime_list if t is not None]  # NaN, inf raise
                if not (min(given) > _MTIME_MIN and max(given) < _MTIME_MAX):
                    return False
                del given
                mtimes = _fill("q", (default_mt if t is None else int(t) for t in mtime_list))
                lo, hi = min(mtimes), max(mtimes)
            else:
                # whole seconds convert in C; floats are truncated one by one
                mtimes = (
                    array("q", mtime_list)
                    if mtime_types == {int}
                    else _fill("q", map(int, mtime_list))
                )
                lo, hi = min(mtimes), max(mtimes)
                if not (lo > _MTIME_MIN and hi < _MTIME_MAX):
                    return False
        del mtime_list
        xtime: int | list[int] = 0
        if lo >= 0 and hi <= 0x7FFFFFFF:
            xtime = _F_XTIME
        elif hi >= 0 and lo <= 0x7FFFFFFF:  # some in the 0x5455 range, some not
            xtime = [_F_XTIME if 0 <= mt <= 0x7FFFFFFF else 0 for mt in mtimes]
        mode_list = column("mode")
        if mode_list.count(None) == n and not dirs:
            modes = array("I", [_DEFAULT_FILE_MODE]) * n
        else:
            if not set(map(type, mode_list)) <= {int, _NONE}:
                return False
            modes = _fill("I", map(_full_mode, mode_list, is_dir or repeat(False)))
        del mode_list

        # -- layout: data sizes, flags, and the sums that place the directory
        distinct = {flags} if isinstance(flags, int) else set(flags)
        if not any(f & _F_FRAMED for f in distinct):
            csizes = array("q", sizes)
        elif isinstance(flags, int) and max(sizes) <= BLOCK_SIZE:  # no empties here: 1 block
            csizes = _fill("q", map(add, sizes, repeat(BLOCK_OVERHEAD)))
        else:
            csizes = _fill(
                "q",
                (
                    s + BLOCK_OVERHEAD * (-(-s // BLOCK_SIZE) or 1) if f & _F_FRAMED else s
                    for s, f in zip(sizes, _per_member(flags, n), strict=True)
                ),
            )
        if MAX32 in csizes:
            return False  # a framed member may need PAD_BLOCK there: the loop decides
        flags = _or_columns(_or_columns(flags, utf8), xtime)
        del utf8, xtime
        if max(csizes) > MAX32:  # the member's own sizes overflow (data >= size)
            flags = [
                f | _F_LOCAL64 if c > MAX32 else f
                for f, c in zip(_per_member(flags, n), csizes, strict=True)
            ]
        flag_column = array("H", [flags]) * n if isinstance(flags, int) else array("H", flags)
        del flags

        self._names = blob
        self._name_ends = _fill("q", accumulate(nlens))
        self._sources = sources
        self._sizes = sizes
        self._csizes = csizes
        self._crcs = crcs
        self._mtimes = mtimes
        self._modes = modes
        self._flags = flag_column
        self._offsets = None
        names_size = len(blob)
        self.cd_start = names_size + sum(csizes) + _column_sum(_SPAN_FIXED, flag_column)
        if self.cd_start >= MAX32:
            # the headers past 4 GiB are a tail of the members (offsets grow): from the
            # first one on, the central header holds the offset in its zip64 extra
            offsets = self._member_offsets()
            for i in range(bisect_left(offsets, MAX32), n):
                flag_column[i] |= _F_OFFSET64
        self.cd_end = self.cd_start + names_size + _column_sum(_CENTRAL_FIXED, flag_column)
        return True

    # -- metadata -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._name_ends)

    def _name(self, i: int) -> bytes:
        ends = self._name_ends
        return bytes(self._names[ends[i - 1] if i else 0 : ends[i]])

    def name(self, i: int) -> str:
        """Member ``i``'s name."""
        return self._name(i).decode()

    def source(self, i: int) -> Source | None:
        """Member ``i``'s source (None for directories and sourceless empty files)."""
        source = self._sources[i]
        return FileSource(source) if isinstance(source, str) else source

    def file_size(self, i: int) -> int:
        """Member ``i``'s uncompressed size."""
        return self._sizes[i]

    def compressed_size(self, i: int) -> int:
        """Bytes member ``i``'s data span takes in the archive."""
        return self._csizes[i]

    def declared_crc(self, i: int) -> int | None:
        """Member ``i``'s CRC-32 as known before the first byte (None when unknown)."""
        crc = self._crcs[i]
        return None if crc < 0 else crc

    def mtime(self, i: int) -> int | None:
        """Member ``i``'s modification time in Unix seconds, if any."""
        mt = self._mtimes[i]
        return None if mt < 0 and not self._flags[i] & _F_XTIME else mt

    def mode(self, i: int) -> int:
        """Member ``i``'s full Unix mode."""
        return self._modes[i]

    def is_dir(self, i: int) -> bool:
        """Whether member ``i`` is a directory."""
        return bool(self._flags[i] & _F_DIR)

    def is_framed(self, i: int) -> bool:
        """Whether member ``i`` is written as stored deflate blocks (deflate-stored)."""
        return bool(self._flags[i] & _F_FRAMED)

    def framing_pad(self, i: int) -> int:
        """Bytes of :data:`PAD_BLOCK` before member ``i``'s framed blocks (0 or 5)."""
        return len(PAD_BLOCK) if self._flags[i] & _F_PAD else 0

    def is_precompressed(self, i: int) -> bool:
        """Whether member ``i``'s source is a raw DEFLATE stream copied as it is."""
        return self._flags[i] & (_F_DEFLATE | _F_FRAMED) == _F_DEFLATE

    def has_descriptor(self, i: int) -> bool:
        """Whether member ``i``'s CRC comes after its data (bit 3, data descriptor)."""
        return bool(self._flags[i] & _F_DESC)

    def layout_material(self) -> Iterator[bytes | bytearray]:
        """Bytes that determine the layout, for fingerprints (ETags): equal plans, equal bytes."""
        yield len(self._name_ends).to_bytes(8, "little")
        yield self._names
        yield self._name_ends.tobytes()
        for column in (self._sizes, self._csizes, self._crcs, self._mtimes, self._modes):
            yield column.tobytes()
        yield self._flags.tobytes()
        yield self.comment

    def crc_array(self) -> array[int]:
        """A fresh copy of the declared CRCs (-1 where unknown), for an encoder to fill."""
        return array("q", self._crcs)

    # -- spans ----------------------------------------------------------------------------

    def _name_len(self, i: int) -> int:
        # from the end offsets: no slice of the name buffer, no bytes object
        ends = self._name_ends
        return ends[i] - ends[i - 1] if i else ends[0]

    def local_header_size(self, i: int) -> int:
        """Length of member ``i``'s local header."""
        return _LOCAL_FIXED[self._flags[i]] + self._name_len(i)

    def _member_offsets(self) -> array[int]:
        # Where each local header starts. Only ranges need these: a plain stream walks with
        # a running position, which keeps 8 bytes per member and the time to make them off
        # the common path.
        if self._offsets is None:
            # name + data + header fields, extras, descriptor
            self._offsets = self._running_offsets(_SPAN_FIXED, 0, self._csizes)
        return self._offsets

    def member_span(self, i: int) -> tuple[int, int]:
        """``[start, end)`` of member ``i``: local header, data and descriptor."""
        offsets = self._member_offsets()
        start = offsets[i]
        end = offsets[i + 1] if i + 1 < len(offsets) else self.cd_start
        return start, end

    def data_span(self, i: int) -> tuple[int, int]:
        """``[start, end)`` of member ``i``'s data in the archive."""
        start = self._member_offsets()[i] + self.local_header_size(i)
        return start, start + self._csizes[i]

    def central_header_size(self, i: int) -> int:
        """Length of member ``i``'s central directory header."""
        return _CENTRAL_FIXED[self._flags[i]] + self._name_len(i)

    def _central_offsets(self) -> array[int]:
        # Only ranges into the directory need these; a plain stream never builds them, which
        # keeps 8 bytes per member off the common path.
        if self._cd_offsets is None:
            self._cd_offsets = self._running_offsets(_CENTRAL_FIXED, self.cd_start)
        return self._cd_offsets

    def _running_offsets(
        self, fixed: Sequence[int], start: int, data: array[int] | None = None
    ) -> array[int]:
        """Where each member's record starts, from ``start`` on: a record is ``fixed[flags]``
        bytes, the name, and ``data[i]`` bytes when given."""
        ends = self._name_ends
        lengths = map(sub, ends, chain((0,), ends))  # name lengths
        if data is not None:
            lengths = map(add, lengths, data)
        offsets = _fill(
            "q", accumulate(map(add, lengths, map(fixed.__getitem__, self._flags)), initial=start)
        )
        offsets.pop()  # where the last record ends
        return offsets

    def central_header_span(self, i: int) -> tuple[int, int]:
        """``[start, end)`` of member ``i``'s central directory header."""
        offsets = self._central_offsets()
        start = offsets[i]
        end = offsets[i + 1] if i + 1 < len(offsets) else self.cd_end
        return start, end

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[Piece]:
        """Every stretch of the layout that overlaps ``[start, end)``, in order."""
        if end is None or end > self.size:
            end = self.size
        if start >= end:
            return
        n = len(self._name_ends)
        if start < self.cd_start:
            offsets = self._member_offsets()
            i = max(0, bisect_right(offsets, start) - 1)
            while i < n and offsets[i] < end:
                hstart = offsets[i]
                dstart = hstart + self.local_header_size(i)
                dend = dstart + self._csizes[i]
                mend = offsets[i + 1] if i + 1 < n else self.cd_start
                if dstart > start:
                    yield Piece(PieceKind.LOCAL_HEADER, i, hstart, dstart)
                if dend > dstart and dend > start and dstart < end:
                    yield Piece(PieceKind.DATA, i, dstart, dend)
                if mend > dend and mend > start and dend < end:
                    yield Piece(PieceKind.DESCRIPTOR, i, dend, mend)
                i += 1
        if end > self.cd_start and start < self.cd_end:
            offsets = self._central_offsets()
            i = max(0, bisect_right(offsets, start) - 1)
            while i < n and offsets[i] < end:
                hend = offsets[i + 1] if i + 1 < n else self.cd_end
                yield Piece(PieceKind.CENTRAL_HEADER, i, offsets[i], hend)
                i += 1
        if end > self.cd_end:
            yield Piece(PieceKind.END, -1, self.cd_end, self.size)

    def needed_crcs(self, start: int = 0, end: int | None = None) -> list[int]:
        """Members whose undeclared CRC-32 is written inside ``[start, end)``.

        Those CRCs appear in data descriptors and central headers; a range that covers
        them can only be produced once they are known (declared, or learned by an earlier
        full pass over the same sources).
        """
        crcs = self._crcs
        return sorted(
            {
                p.member
                for p in self.pieces(start, end)
                if p.kind in (PieceKind.DESCRIPTOR, PieceKind.CENTRAL_HEADER) and crcs[p.member] < 0
            }
        )

    # -- bytes ----------------------------------------------------------------------------
    # Headers come from two generators, one per kind: streaming a whole archive resumes them
    # once per member, with every column bound to a local and the DOS time of the previous
    # member at hand (members often share an mtime), instead of calling a method that looks
    # all of it up again. A single header is the first item of a generator started there.

    def local_header(self, i: int) -> bytes:
        """The bytes of member ``i``'s local header (independent of learned CRCs)."""
        return next(self.local_headers(i))

    def local_headers(self, start: int = 0) -> Iterator[bytes]:
        """The local headers of members ``start``, ``start + 1``... in order."""
        flags, ends, names = self._flags, self._name_ends, self._names
        sizes, csizes, crcs, mtimes = self._sizes, self._csizes, self._crcs, self._mtimes
        pack, pack_x64, pack_xtime = _LOCAL.pack, _X64_SIZES.pack, _XTIME.pack
        last_mt, (date, tod) = -1, _DOS_EPOCH
        name_start = ends[start - 1] if start else 0
        for i in range(start, len(ends)):
            f = flags[i]
            name_end = ends[i]
            name = names[name_start:name_end]
            name_start = name_end
            version, bits, method = _HEADER_FIELDS[f]
            mt = mtimes[i]
            if mt != last_mt:
                last_mt, (date, tod) = mt, _DOS_EPOCH if mt < 0 else _dos_datetime(mt)
            size = sizes[i]
            csize = csizes[i]
            # with bit 3 the CRC is written after the data; the sizes are known, so they are
            # written here too, which lets streaming readers of stored members find the end
            crc = 0 if f & _F_DESC else crcs[i]
            extra = b""
            if f & _F_LOCAL64:
                extra = pack_x64(0x0001, 16, size, csize)
                size = csize = MAX32
            if f & _F_XTIME:
                extra += pack_xtime(0x5455, 5, 1, mt)
            yield (
                pack(
                    _LOCAL_SIG,
                    version,
                    bits,
                    method,
                    tod,
                    date,
                    crc,
                    csize,
                    size,
                    len(name),
                    len(extra),
                )
                + name
                + extra
            )

    def descriptor(self, i: int, crc: int) -> bytes:
        """The bytes of member ``i``'s data descriptor (empty when it has none)."""
        f = self._flags[i]
        if not f & _F_DESC:
            return b""
        pack = _DESC64.pack if f & _F_LOCAL64 else _DESC32.pack
        return pack(_DESC_SIG, crc, self._csizes[i], self._sizes[i])

    def central_header(self, i: int, crc: int) -> bytes:
        """The bytes of member ``i``'s central directory header, given its CRC-32."""
        return next(self.central_headers((crc,), i))

    def central_headers(self, crcs: Iterable[int], start: int = 0) -> Iterator[bytes]:
        """The central headers of members ``start``, ``start + 1``... given their CRCs.

        ``crcs`` holds the CRC of each member from ``start`` on (the headers stop with it).
        The local headers' offsets come from a running position: streaming a whole archive
        never builds the offsets column.
        """
        flags, ends, names = self._flags, self._name_ends, self._names
        sizes, csizes, mtimes, modes = self._sizes, self._csizes, self._mtimes, self._modes
        pack, pack_x64, pack_x64_all = _CENTRAL.pack, _X64_SIZES.pack, _X64_ALL.pack
        pack_xtime = _XTIME.pack
        last_mt, (date, tod) = -1, _DOS_EPOCH
        offset = self._member_offsets()[start] if start else 0
        name_start = ends[start - 1] if start else 0
        for i, crc in zip(range(start, len(ends)), crcs, strict=False):  # crcs may stop first
            f = flags[i]
            name_end = ends[i]
            name = names[name_start:name_end]
            name_start = name_end
            version, bits, method = _HEADER_FIELDS[f]
            mt = mtimes[i]
            if mt != last_mt:
                last_mt, (date, tod) = mt, _DOS_EPOCH if mt < 0 else _dos_datetime(mt)
            size = sizes[i]
            csize = csizes[i]
            here = offset
            offset += _SPAN_FIXED[f] + len(name) + csize
            extra = b""
            made_by = _MADE_BY
            if f & (_F_LOCAL64 | _F_OFFSET64):
                made_by = _MADE_BY_64
                if f & _F_OFFSET64:
                    extra = pack_x64_all(0x0001, 24, size, csize, here)
                    size = csize = here = MAX32
                else:
                    extra = pack_x64(0x0001, 16, size, csize)
                    size = csize = MAX32
            if f & _F_XTIME:
                extra += pack_xtime(0x5455, 5, 1, mt)
            external = (modes[i] << 16) | (0x10 if f & _F_DIR else 0)
            yield (
                pack(
                    _CENTRAL_SIG,
                    made_by,
                    version,
                    bits,
                    method,
                    tod,
                    date,
                    crc,
                    csize,
                    size,
                    len(name),
                    len(extra),
                    0,
                    0,
                    0,
                    external & 0xFFFFFFFF,
                    here,
                )
                + name
                + extra
            )

    def end_records(self) -> bytes:
        """The zip64 end record and locator (when needed) and the end of central directory."""
        n = len(self._name_ends)
        cd_size = self.cd_end - self.cd_start
        out = b""
        if self.zip64_end:
            out = _END64.pack(
                _END64_SIG, 44, _MADE_BY_64, 45, 0, 0, n, n, cd_size, self.cd_start
            ) + _LOCATOR.pack(_LOCATOR_SIG, 0, self.cd_end, 1)
        return (
            out
            + _END.pack(
                _END_SIG,
                0,
                0,
                min(n, MAX16),
                min(n, MAX16),
                min(cd_size, MAX32),
                min(self.cd_start, MAX32),
                len(self.comment),
            )
            + self.comment
        )
