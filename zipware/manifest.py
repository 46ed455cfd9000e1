"""Manifest v1: the declarative, versioned description of an archive.

A manifest is JSON that any backend, in any language, can emit; ``spec/manifest.md`` is its
specification and ``spec/manifest.schema.json`` its JSON Schema, generated from the Structs
below (``zipware schema``). Decoding reports *every* problem at once, each with its JSON path
(``$.entries[3].name: ...``), so a backend developer fixes a manifest in one round.

Build one in Python and turn it into a response body::

    from zipware.manifest import Manifest, Entry, encode

    body = encode(Manifest(filename="photos.zip", entries=[
        Entry(name="a.jpg", path="2024/a.jpg"),
        Entry(name="notes.txt", text="hello\\n"),
    ]))
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Annotated, Any, Literal

import msgspec

from .errors import ZipwareError

__all__ = [
    "CONTENT_TYPE",
    "TRIGGER_HEADER",
    "VERSION",
    "Entry",
    "Manifest",
    "ManifestError",
    "Problem",
    "decode",
    "encode",
    "schema",
]

VERSION = 1
CONTENT_TYPE = "application/vnd.zipware.manifest+json"
TRIGGER_HEADER = "X-Zip-Manifest"

SOURCE_FIELDS = ("path", "url", "uri", "text", "data")
# Reserved for the next kind of source, so that adding it stays backwards compatible:
# a member copied raw out of an existing archive.
RESERVED_SOURCE_FIELDS = ("archive",)

_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


class _Base(
    msgspec.Struct,
    forbid_unknown_fields=True,  # a typo ("sise") is an error, not a silently ignored field
    omit_defaults=True,  # encoded manifests stay small and readable
    kw_only=True,
    # decoded data holds no cycles; untracked, 100,000 entries cost the collector nothing
    gc=False,
):
    """Common options of every manifest Struct."""


Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        description=(
            "Member name inside the archive, '/'-separated. A trailing '/' makes a directory. "
            "Refused: absolute names, '..' or '.' or empty components, backslashes, NUL, "
            "drive letters, more than 65,535 UTF-8 bytes, duplicates."
        ),
        examples=["photos/beach.jpg", "empty-folder/"],
    ),
]
# 2**62: far beyond any file, and inside the 64-bit fields of the format and the plan
MAX_SIZE = 2**62

Size = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=MAX_SIZE,
        description=(
            "Uncompressed size in bytes. Optional: found by a HEAD for `url` entries, from "
            "the object's metadata for `uri` entries (and then checked against it)."
        ),
        examples=[4817211],
    ),
]
Crc32 = Annotated[
    int | str,
    msgspec.Meta(
        description=(
            "CRC-32 of the uncompressed bytes: 8 hex digits or an integer. When every member's "
            "CRC is known, the archive supports HTTP Range requests and streaming readers."
        ),
        examples=["9be3e0a3", 2615402659],
    ),
]
Mtime = Annotated[
    Annotated[_dt.datetime, msgspec.Meta(tz=True)] | int | float,
    msgspec.Meta(
        description="Modification time: RFC 3339 with a time zone, or Unix seconds.",
        examples=["2024-07-01T10:00:00Z", 1719828000],
    ),
]
Mode = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=0o7777,
        description="Unix permission bits (e.g. 420 = 0o644). Default 0o644, 0o755 for folders.",
        examples=[420, 493],
    ),
]
StorageName = Annotated[
    Literal["auto", "store", "deflate-stored", "precompressed"],
    msgspec.Meta(
        description=(
            "How the bytes are stored. 'auto' (default): stored when the CRC is known, else "
            "stored deflate blocks. 'precompressed': the source is a raw DEFLATE stream; needs "
            "`size`, `compressed_size` and `crc32`."
        )
    ),
]


class Entry(_Base, kw_only=True):
    """One member of the archive and where its bytes come from (exactly one source, or none
    for a directory)."""

    name: Name
    path: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                description="A local file, relative to the server's first configured root "
                "(or absolute inside one of the roots). Symlinks are followed and must stay "
                "inside the roots.",
                examples=["media/2024/beach.jpg"],
            ),
        ]
        | None
    ) = None
    url: (
        Annotated[
            str,
            msgspec.Meta(
                description="An http(s) URL inside the server's allow-list.",
                examples=["https://cdn.example.com/cliff.jpg"],
            ),
        ]
        | None
    ) = None
    uri: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                description="An object in object storage, 'protocol://bucket/key', inside the "
                "server's `allow_uris` prefixes; read with the server's credentials. Its size, "
                "mtime (LastModified) and ETag come from one metadata request before the "
                "first byte; an object that changes afterwards fails the download.",
                examples=["s3://media/2024/cliff.mp4"],
            ),
        ]
        | None
    ) = None
    text: Annotated[str, msgspec.Meta(description="Literal content, stored as UTF-8.")] | None = (
        None
    )
    data: Annotated[bytes, msgspec.Meta(description="Literal content, base64-encoded.")] | None = (
        None
    )
    size: Size | None = None
    crc32: Crc32 | None = None
    mtime: Mtime | None = None
    mode: Mode | None = None
    storage: StorageName | None = None
    compressed_size: (
        Annotated[
            int,
            msgspec.Meta(
                ge=2, le=MAX_SIZE, description="Bytes of the raw DEFLATE stream (precompressed)."
            ),
        ]
        | None
    ) = None
    headers: (
        Annotated[
            dict[str, str],
            msgspec.Meta(
                description="Request headers for a `url` entry (e.g. Authorization). Never "
                "logged or echoed in errors."
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        # Raised errors become ValidationErrors carrying the entry's JSON path.
        if (
            # the common entry, checked in a few attribute loads (100,000 entries add up)
            self.crc32 is None
            and self.storage is None
            and self.compressed_size is None
            and self.headers is None
            and self.size is None
            and (self.path is not None)
            + (self.url is not None)
            + (self.uri is not None)
            + (self.text is not None)
            + (self.data is not None)
            == 1
            and self.name[-1:] != "/"
        ):
            return
        given = [f for f in SOURCE_FIELDS if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"has {' and '.join(given)}: an entry takes exactly one source")
        is_dir = self.name.endswith("/")
        if is_dir and given:
            raise ValueError(f"a directory (name ending in '/') takes no {given[0]}")
        if not is_dir and not given:
            raise ValueError(f"needs a source: one of {', '.join(SOURCE_FIELDS)}")
        if isinstance(self.crc32, str) and not _HEX8.fullmatch(self.crc32):
            raise ValueError(f"crc32 must be 8 hex digits or an integer, not {self.crc32!r}")
        if isinstance(self.crc32, int) and not 0 <= self.crc32 <= 0xFFFFFFFF:
            raise ValueError("crc32 must be in [0, 2**32)")
        if self.headers is not None and self.url is None:
            raise ValueError("headers apply to url entries only")
        if self.storage == "precompressed":
            missing = [f for f in ("size", "crc32", "compressed_size") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"precompressed needs {', '.join(missing)}")
        elif self.compressed_size is not None:
            raise ValueError("compressed_size applies to precompressed entries only")
        if self.text is not None and self.size is not None and self.size != len(self.text.encode()):
            raise ValueError("size does not match the UTF-8 length of text")
        if (
            self.data is not None
            and self.size is not None
            and self.storage != "precompressed"  # there, size is the inflated size
            and self.size != len(self.data)
        ):
            raise ValueError("size does not match the length of data")
        if (
            self.storage == "precompressed"
            and self.compressed_size is not None
            and (self.data is not None or self.text is not None)
        ):
            content = self.data if self.data is not None else (self.text or "").encode()
            if len(content) != self.compressed_size:
                raise ValueError("compressed_size does not match the length of the content")

    @property
    def crc(self) -> int | None:
        """The declared CRC-32 as an integer."""
        if self.crc32 is None or isinstance(self.crc32, int):
            return self.crc32
        return int(self.crc32, 16)

    @property
    def mtime_seconds(self) -> float | None:
        """The declared mtime in Unix seconds."""
        if isinstance(self.mtime, _dt.datetime):
            return self.mtime.timestamp()
        return self.mtime


class _Head(_Base, kw_only=True):
    """The fields of a manifest other than its entries."""

    version: Annotated[
        Literal[1],
        msgspec.Meta(description="Manifest format version. This document describes 1."),
    ]
    filename: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=255,
                description="The download's file name (Content-Disposition). Default "
                "'download.zip'.",
                examples=["holiday-photos.zip"],
            ),
        ]
        | None
    ) = None
    comment: (
        Annotated[
            str,
            msgspec.Meta(description="Archive comment (at most 65,535 UTF-8 bytes)."),
        ]
        | None
    ) = None
    mtime: (
        Annotated[
            Mtime,
            msgspec.Meta(description="Default mtime of entries that have none of their own."),
        ]
        | None
    ) = None


class Manifest(_Head, kw_only=True):
    """A whole manifest: the archive's name, options and entries, in order."""

    entries: list[Entry]


class _FileEntry(_Base, kw_only=True):
    """An entry that is a local file with nothing declared but its mode: the common entry of
    a large manifest, decoded without :class:`Entry`'s checks (it needs none but that its
    name is not a directory's)."""

    name: Name
    path: Annotated[str, msgspec.Meta(min_length=1)]
    mode: Mode | None = None


class _FilesManifest(_Head, kw_only=True):
    entries: list[_FileEntry]


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with a manifest: where (a JSON path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ManifestError(ZipwareError, ValueError):
    """A manifest cannot be used; ``problems`` lists every problem found, with its path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:50])
        more = f"\n(and {len(problems) - 50} more)" if len(problems) > 50 else ""
        super().__init__(shown + more)


_AT = re.compile(r" - at `\$(.*)`$")


def _problem(exc: msgspec.MsgspecError, prefix: str) -> Problem:
    """A msgspec error message as a Problem with the full JSON path."""
    message = str(exc)
    m = _AT.search(message)
    if m is None:
        return Problem(prefix, message)
    return Problem(prefix + m.group(1), message[: m.start()])


_entry_decoder = msgspec.json.Decoder(Entry)
_encoder = msgspec.json.Encoder()


_manifest_decoder = msgspec.json.Decoder(Manifest)
_top_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_entries_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_HEAD_FIELDS = {f.encode_name: f.type for f in msgspec.structs.fields(_Head)}


def _entry_problem(exc: Exception, i: int) -> Problem:
    if isinstance(exc, UnicodeDecodeError):
        return Problem(f"$.entries[{i}]", "not valid UTF-8")
    problem = _problem(exc, f"$.entries[{i}]")  # type: ignore[arg-type]
    for reserved in RESERVED_SOURCE_FIELDS:
        if problem.message == f"Object contains unknown field `{reserved}`":
            return Problem(problem.path, f"`{reserved}` is reserved for a later version")
    return problem


def decode_partial(
    body: bytes | str, *, max_entries: int | None = None
) -> tuple[_Head, list[Entry | None], list[Problem]]:
    """Decode what can be decoded: the head, each entry or None, and the problems found.

    Raises :class:`ManifestError` only when the manifest's structure itself is unusable
    (not JSON, no or another version, no entry list, too many entries); a bad field or
    entry is reported and skipped, so the caller can go on checking the others.
    """
    try:
        # the common case, a valid manifest, in one call
        manifest = _manifest_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    else:
        if max_entries is None or len(manifest.entries) <= max_entries:
            head = _Head(
                version=manifest.version,
                filename=manifest.filename,
                comment=manifest.comment,
                mtime=manifest.mtime,
            )
            return head, list(manifest.entries), []
    # Otherwise field by field, so that every problem is found: version first (it says how
    # to read the rest), then the other top-level fields, then each entry on its own.
    try:
        top = _top_decoder.decode(body)
    except UnicodeDecodeError:
        raise ManifestError([Problem("$", "not valid UTF-8")]) from None
    except msgspec.ValidationError as exc:
        raise ManifestError([_problem(exc, "$")]) from None
    except msgspec.DecodeError as exc:
        raise ManifestError([Problem("$", f"not valid JSON: {exc}")]) from None
    if "version" not in top:
        raise ManifestError([Problem("$", "Object missing required field `version`")])
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for name, raw in top.items():
        kind = _HEAD_FIELDS.get(name)
        if name == "entries":
            continue
        if kind is None:
            problems.append(Problem("$", f"Object contains unknown field `{name}`"))
            continue
        try:
            values[name] = msgspec.json.decode(raw, type=kind)
        except UnicodeDecodeError:
            problems.append(Problem(f"$.{name}", "not valid UTF-8"))
        except msgspec.ValidationError as exc:
            if name == "version":
                raise ManifestError([_problem(exc, "$.version")]) from None
            problems.append(_problem(exc, f"$.{name}"))
    if "entries" not in top:
        raise ManifestError([*problems, Problem("$", "Object missing required field `entries`")])
    try:
        raws = _entries_decoder.decode(top["entries"])
    except msgspec.ValidationError as exc:
        raise ManifestError([*problems, _problem(exc, "$.entries")]) from None
    if max_entries is not None and len(raws) > max_entries:
        raise ManifestError(
            [Problem("$.entries", f"{len(raws)} entries, more than the limit of {max_entries}")]
        )
    entries: list[Entry | None] = []
    decode_entry = _entry_decoder.decode
    for i, raw in enumerate(raws):
        try:
            entries.append(decode_entry(raw))
        except (msgspec.ValidationError, UnicodeDecodeError) as exc:
            problems.append(_entry_problem(exc, i))
            entries.append(None)
    return _Head(**values), entries, problems


_files_decoder = msgspec.json.Decoder(_FilesManifest)


def decode_files(
    body: bytes | str, *, max_entries: int | None = None
) -> tuple[_Head, list[_FileEntry]] | None:
    """A manifest whose entries are all local files (``name``, ``path``, ``mode``), in one
    call and with no per-entry Python; None for any other manifest, or any problem, which
    :func:`decode_partial` then reads with its checks and messages."""
    try:
        manifest = _files_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    entries = manifest.entries
    if max_entries is not None and len(entries) > max_entries:
        return None
    if "/\x00" in "\x00".join([e.name for e in entries]) + "\x00":
        return None  # a directory with a path: Entry says what is wrong
    head = _Head(
        version=manifest.version,
        filename=manifest.filename,
        comment=manifest.comment,
        mtime=manifest.mtime,
    )
    return head, entries


def decode(body: bytes | str, *, max_entries: int | None = None) -> Manifest:
    """Decode and validate a manifest's JSON; raise :class:`ManifestError` with all problems.

    Structure is checked first (JSON syntax, version, top-level fields); then every entry
    is decoded on its own so that the problems of all entries are reported together.
    """
    head, entries, problems = decode_partial(body, max_entries=max_entries)
    if problems:
        raise ManifestError(problems)
    return Manifest(
        version=head.version,
        filename=head.filename,
        comment=head.comment,
        mtime=head.mtime,
        entries=entries,  # type: ignore[arg-type]
    )


def encode(manifest: Manifest) -> bytes:
    """The manifest as compact JSON, ready to be a response body."""
    return _encoder.encode(manifest)


def schema() -> dict[str, Any]:
    """The JSON Schema of manifest v1 (what ``spec/manifest.schema.json`` holds)."""
    out: dict[str, Any] = msgspec.json.schema(Manifest)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "zipware manifest v1",
        **out,
    }
