"""Prepare: turn a manifest into an :class:`~zipware.archive.Archive`, before any byte.

Everything that can fail before the first byte fails here, all at once: the manifest's
structure, every entry's fields, local paths against the roots (stat'ed for size and mtime),
URLs against the allow-list (HEAD'ed when their size is not declared), object storage URIs
against theirs (one metadata request each: size, LastModified, ETag), member names,
duplicates and the limits. The result carries what an HTTP layer needs next: the archive,
the download's file name, a fingerprint for the ETag and a Last-Modified time.

The work is split so the sync and async forms share it: :class:`_Preparer` does everything
without network I/O; :func:`prepare` and :func:`aprepare` only differ in how they run the
lookups (HEAD requests and object metadata): a thread pool, or tasks on the event loop
(object metadata in worker threads), both bounded by ``Policy.head_concurrency``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import zlib
from array import array
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import anyio
import msgspec

from .archive import Archive
from .errors import InvalidMemberError
from .manifest import Entry, Manifest, ManifestError, Problem, _Head, decode_files, decode_partial
from .plan import Member, Plan
from .policy import Policy, PolicyError
from .sources import (
    BytesSource,
    FileSource,
    FSSpecSource,
    ObjectInfo,
    Source,
    URLSource,
    explain_object_error,
    filesystem,
    redact_uri,
    redact_url,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["Download", "aprepare", "prepare"]

DEFAULT_FILENAME = "download.zip"

_MASK64 = 2**64 - 1  # mtimes in ns past 2262 (or before 1970) kept as 64-bit keys


def _file_identity(real: str, st: os.stat_result) -> tuple[object, ...]:
    """A local file's identity: its key in a CRC cache, and part of the fingerprint."""
    return ("path", real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns & _MASK64)


class _FileKeys(Mapping[int, tuple[object, ...]]):
    """The identities of a manifest of local files, member by member, kept as columns.

    ``download.file_keys[i]`` is ``("path", real path, device, inode, size, mtime in ns)``,
    made when asked for: a prepared manifest of 100,000 files keeps five columns rather
    than 100,000 tuples. Empty files have no key (their CRC is known: 0), as on the
    general path.
    """

    __slots__ = ("devs", "inos", "mtimes_ns", "reals", "sizes")

    def __init__(
        self,
        reals: list[str],
        devs: array[int],
        inos: array[int],
        sizes: array[int],
        mtimes_ns: array[int],
    ) -> None:
        self.reals, self.devs, self.inos = reals, devs, inos
        self.sizes, self.mtimes_ns = sizes, mtimes_ns

    def __getitem__(self, i: int) -> tuple[object, ...]:
        if type(i) is not int or not 0 <= i < len(self.reals) or not self.sizes[i]:
            raise KeyError(i)
        return ("path", self.reals[i], self.devs[i], self.inos[i], self.sizes[i], self.mtimes_ns[i])

    def __iter__(self) -> Iterator[int]:
        sizes = self.sizes
        return (i for i in range(len(sizes)) if sizes[i])

    def __len__(self) -> int:
        return len(self.sizes) - self.sizes.count(0)

    def material(self) -> Iterator[bytes]:
        """Bytes for a fingerprint: every identity, column by column.

        Device and inode name the file (two paths to it are the same content), size and
        mtime its version; the path itself adds nothing and would be most of the bytes.
        """
        for column in (self.devs, self.inos, self.sizes, self.mtimes_ns):
            yield column.tobytes()


@dataclass(frozen=True, slots=True)
class Download:
    """A prepared archive and what an HTTP response says about it.

    ``fingerprint`` changes whenever the archive's bytes could: it covers the manifest's
    declarations and what was resolved before the first byte (sizes, mtimes, file identity),
    never CRCs learned while streaming. ``last_modified`` is the newest member mtime.
    ``file_keys`` maps the members whose CRC was not declared and whose content has a
    stable identity to it: local files (real path, device, inode, size, mtime) and objects
    with an ETag (URI, ETag, version, size). It is the key a CRC cache uses.
    """

    archive: Archive
    filename: str
    fingerprint: str
    last_modified: float | None
    file_keys: Mapping[int, tuple[object, ...]] = field(default_factory=dict)
    remote: bool = False

    @property
    def size(self) -> int:
        """The archive's exact size in bytes."""
        return self.archive.size


class _Preparer:
    """Builds members from entries; collects problems instead of stopping at the first."""

    def __init__(
        self,
        head: _Head,
        entries: list[Entry | None],
        *,
        problems: list[Problem],
        policy: Policy,
        client: httpx.Client | None,
        async_client: httpx.AsyncClient | None,
        files_only: bool = False,
    ) -> None:
        # files_only: entries are decode_files()'s, every one a local file (no size, CRC...)
        self.head = head
        self.entries = entries
        self.policy = policy
        self.problems = problems
        self.members: list[Member] = []
        self.index: list[int] = []  # entry index of each member (undecodable entries are skipped)
        self.identity: list[tuple[object, ...] | None] = []
        self.pending: list[tuple[int, URLSource]] = []  # members whose size needs a HEAD
        self.objects: list[tuple[int, FSSpecSource]] = []  # members whose metadata is due
        self.filesystems: dict[str, Any] = {}  # one fsspec filesystem per protocol
        self.dir_cache: dict[str, tuple[str, bool]] = {}
        self.name_limit = policy.max_name_bytes < 65_535  # else the plan checks names
        self.remote = False
        # when every member is a local file with nothing declared: their identities, and
        # their names, sizes, real paths, mtimes and modes as columns
        self.files: _FileKeys | None = None
        self.columns: tuple[list[Any], ...] = ()
        self.client = client
        self.async_client = async_client
        default = head.mtime
        self.default_mtime = default.timestamp() if isinstance(default, datetime) else default
        self._add_all(entries, files_only)

    def _fail(self, i: int, field: str, message: str) -> None:
        self.problems.append(Problem(f"$.entries[{i}]{'.' + field if field else ''}", message))

    def _add_all(self, entries: list[Entry | None], files_only: bool) -> None:
        # The common entry of a large manifest, a file under a root with nothing declared,
        # is resolved a column at a time (Policy.resolve_paths); the rest, and any file that
        # does not resolve, one entry at a time by _add, which says what is wrong.
        # a path for each such entry, None for the others
        paths = (
            [e.path for e in entries]  # type: ignore[union-attr]
            if files_only
            else [None] * len(entries)
            if self.name_limit
            else [
                e.path
                if e is not None
                and e.size is None
                and e.crc32 is None
                and e.mtime is None
                and e.storage is None
                else None
                for e in entries
            ]
        )
        if None not in paths:
            reals, stats = self.policy._resolve_columns(cast("list[str]", paths), self.dir_cache)
            if None not in reals:
                # every entry: the plan's input and the identities in a few whole columns
                files = cast("list[Entry]", entries)
                # comprehensions, not map(attrgetter): their attribute loads are specialised
                sizes = [st.st_size for st in stats]
                self.index = list(range(len(entries)))
                self.columns = (
                    [e.name for e in files],
                    sizes,
                    reals,
                    # floats, as on the general path: st_mtime can round up to the next
                    # second where the whole seconds (st[8]) do not
                    [st.st_mtime for st in stats],
                    [e.mode for e in files],
                )
                # file identities as columns: a tuple per member only when a CRC cache asks
                self.files = _FileKeys(
                    cast("list[str]", reals),
                    array("Q", [st.st_dev for st in stats]),
                    array("Q", [st.st_ino for st in stats]),
                    array("q", sizes),
                    array("Q", [st.st_mtime_ns & _MASK64 for st in stats]),
                )
                return
        if files_only:  # one failed: the general path, with full entries, says why
            self.entries = entries = [
                Entry(name=e.name, path=e.path, mode=e.mode)  # type: ignore[union-attr]
                for e in entries
            ]
        found = iter(self.policy.resolve_paths([p for p in paths if p is not None], self.dir_cache))
        for i, (e, path) in enumerate(zip(entries, paths, strict=True)):
            if e is None:
                continue
            got = None if path is None else next(found)
            if got is None:
                self._add(i, e)
                continue
            real, st = got
            self.index.append(i)
            self.members.append(
                Member(e.name, st.st_size, FileSource(real), None, st.st_mtime, e.mode)
            )
            self.identity.append(_file_identity(real, st))

    def _add(self, i: int, e: Entry) -> None:
        policy = self.policy
        before = len(self.problems)
        size = e.size
        mtime = e.mtime_seconds
        source: Source | None = None
        ident: tuple[object, ...] | None = None
        crc = e.crc
        if self.name_limit and len(e.name.encode("utf-8", "surrogatepass")) > policy.max_name_bytes:
            self._fail(i, "name", f"name is longer than {policy.max_name_bytes} bytes")
        if e.path is not None:
            try:
                real, st = policy.resolve_path(e.path, self.dir_cache)
            except PolicyError as exc:
                self._fail(i, "path", str(exc))
            else:
                if e.storage != "precompressed" and size is not None and size != st.st_size:
                    self._fail(i, "size", f"declared {size} bytes, the file has {st.st_size}")
                elif e.storage == "precompressed" and e.compressed_size != st.st_size:
                    self._fail(
                        i,
                        "compressed_size",
                        f"declared {e.compressed_size} bytes, the file has {st.st_size}",
                    )
                if size is None:
                    size = st.st_size
                if mtime is None:
                    mtime = st.st_mtime
                source = FileSource(real)
                ident = _file_identity(real, st)
        elif e.url is not None:
            try:
                policy.check_url(e.url)
            except PolicyError as exc:
                self._fail(i, "url", str(exc))
            else:
                url_source = URLSource(
                    e.url,
                    headers=e.headers,
                    client=self.client,
                    async_client=self.async_client,
                    check_url=policy.check_url,
                    max_redirects=policy.max_redirects,
                    timeout=policy.url_timeout,
                )
                source = url_source
                # the query often holds a signature that changes on every request; the
                # declared size and CRC pin the content
                ident = ("url", redact_url(e.url))
                self.remote = True
                if size is None:
                    self.pending.append((len(self.members), url_source))
        elif e.uri is not None:
            try:
                protocol = policy.check_uri(e.uri)[0]
            except PolicyError as exc:
                self._fail(i, "uri", str(exc))
            else:
                try:
                    fs = self._filesystem(protocol)
                except Exception as exc:  # no fsspec, no s3fs, bad storage_options...
                    self._fail(i, "uri", explain_object_error(exc, e.uri, policy.storage_options))
                else:
                    object_source = FSSpecSource(e.uri, fs, policy.storage_options)
                    source = object_source
                    ident = ("uri", redact_uri(e.uri))  # completed by the metadata
                    self.remote = True
                    self.objects.append((len(self.members), object_source))
        elif e.text is not None or e.data is not None:
            content = e.text.encode() if e.text is not None else e.data
            assert content is not None
            size = len(content)
            computed = zlib.crc32(content)
            if crc is not None and crc != computed and e.storage != "precompressed":
                self._fail(i, "crc32", f"declared {crc:08x}, the content's is {computed:08x}")
            crc = crc if e.storage == "precompressed" else computed
            if e.storage == "precompressed":
                size = e.size
            source = BytesSource(content)
            ident = ("bytes", computed)
        if mtime is None:
            mtime = self.default_mtime
        self.index.append(i)
        if len(self.problems) > before:
            # still planned by name alone, so name problems and duplicates are reported too
            self.members.append(Member(e.name))
            self.identity.append(None)
            return
        self.members.append(
            Member(
                e.name,
                size=size or 0,
                source=source,
                crc32=crc,
                mtime=mtime,
                mode=e.mode,
                storage=e.storage or "auto",
                compressed_size=e.compressed_size,
            )
        )
        self.identity.append(ident)

    def _filesystem(self, protocol: str) -> Any:
        fs = self.filesystems.get(protocol)
        if fs is None:
            # made here, in one thread, and shared by the lookups and the reads
            fs = self.filesystems[protocol] = filesystem(protocol, self.policy.storage_options)
        return fs

    def lookups(self) -> list[tuple[Callable[[], object], Callable[[Any], None]]]:
        """The network lookups still due, as ``(call, record)``: ``record(call())``, or
        ``record(exception)`` when the call raised."""
        out: list[tuple[Callable[[], object], Callable[[Any], None]]] = []
        for k, url_source in self.pending:
            out.append((url_source.stat, functools.partial(self.resolved, k)))
        for k, object_source in self.objects:
            out.append((object_source.stat, functools.partial(self.found, k)))
        return out

    def found(self, k: int, result: ObjectInfo | BaseException) -> None:
        """Record the outcome of member ``k``'s object metadata request."""
        i = self.index[k]
        member = self.members[k]
        source = member.source
        assert isinstance(source, FSSpecSource)
        if isinstance(result, BaseException):
            message = explain_object_error(result, source.uri, self.policy.storage_options)
            self._fail(i, "uri", message)
            return
        entry = self.entries[i]
        assert entry is not None
        if entry.storage == "precompressed":
            if entry.compressed_size != result.size:
                self._fail(
                    i,
                    "compressed_size",
                    f"declared {entry.compressed_size} bytes, the object has {result.size}",
                )
        elif entry.size is not None and entry.size != result.size:
            self._fail(i, "size", f"declared {entry.size} bytes, the object has {result.size}")
        else:
            member.size = result.size
        if entry.mtime is None and result.mtime is not None:
            member.mtime = result.mtime
        source.etag = result.etag
        source.size = result.size
        # the ETag pins the content; without one, size and mtime are all there is
        self.identity[k] = (
            "uri",
            redact_uri(source.uri),
            result.etag,
            result.version,
            result.size,
            None if result.etag else result.mtime,
        )

    def _scrubbed(self, i: int, exc: BaseException) -> str:
        """An error's text, unless it repeats a request header value (secrets live there)."""
        text = str(exc)
        entry = self.entries[i]
        secrets = entry.headers.values() if entry is not None and entry.headers else ()
        if any(v and v.strip() and v.strip() in text for v in secrets):
            return f"{type(exc).__name__} (its message holds a request header, not shown)"
        return text

    def resolved(self, k: int, result: tuple[int, float | None] | BaseException) -> None:
        """Record the outcome of member ``k``'s HEAD request."""
        i = self.index[k]
        if isinstance(result, BaseException):
            self._fail(i, "url", f"size unknown: {self._scrubbed(i, result)}")
            return
        size, mtime = result
        member = self.members[k]
        member.size = size
        entry = self.entries[i]
        if entry is not None and entry.mtime is None and mtime is not None:
            member.mtime = mtime

    def finish(self) -> Download:
        """Plan the archive, or raise ManifestError with every problem found."""
        plan: Plan | None = None
        try:
            if self.files is not None:
                names, sizes, reals, mtimes, modes = self.columns
                plan = Plan.from_columns(
                    names,
                    sizes,
                    reals,
                    mtimes=mtimes,
                    modes=modes,
                    comment=self.head.comment or b"",
                )
            else:
                plan = Plan(self.members, comment=self.head.comment or b"")
        except InvalidMemberError as exc:
            for k, _, message in exc.problems:
                where = "$.comment" if k < 0 else f"$.entries[{self.index[k]}].{_field(message)}"
                self.problems.append(Problem(where, message))
        limit = self.policy.max_archive_bytes
        if plan is not None and limit is not None and plan.size > limit:
            self.problems.append(
                Problem("$", f"the archive would be {plan.size} bytes, over the limit of {limit}")
            )
        if self.problems or plan is None:
            self.problems.sort(key=_problem_order)
            raise ManifestError(self.problems)
        mtimes = (
            self.columns[3]
            if self.files is not None
            else [m.mtime for m in self.members if m.mtime is not None]
        )
        keys: Mapping[int, tuple[object, ...]]
        if self.files is not None:
            keys = self.files  # local files only, no CRC declared
        else:
            keys = {
                k: ident
                for k, ident in enumerate(self.identity)
                if isinstance(ident, tuple)
                and (ident[0] == "path" or (ident[0] == "uri" and ident[2] is not None))
                and plan.declared_crc(k) is None
            }
        return Download(
            archive=Archive(plan),
            filename=self.head.filename or DEFAULT_FILENAME,
            fingerprint=self._fingerprint(plan),
            last_modified=max(mtimes) if mtimes else None,
            file_keys=keys,
            remote=self.remote,
        )

    def _fingerprint(self, plan: Plan) -> str:
        # everything that shapes the bytes, as known before the first one: the plan's
        # columns (names, sizes, declared CRCs, mtimes, modes, storage) and where each
        # member's bytes come from (file identity, URL without its query, content CRC)
        digest = hashlib.blake2b(digest_size=16)
        for part in plan.layout_material():
            digest.update(part)
        if self.files is not None:
            for part in self.files.material():
                digest.update(part)
        else:
            digest.update(msgspec.msgpack.encode(self.identity))
        return digest.hexdigest()


def _field(message: str) -> str:
    """The entry field a plan problem is about, from its message (the plan says it first)."""
    for name in ("mtime", "size", "crc32", "compressed_size", "storage"):
        if message.startswith(name):
            return name
    if message.startswith("a directory has no size"):
        return "size"
    return "name"


def _problem_order(p: Problem) -> tuple[int, str]:
    if p.path.startswith("$.entries["):
        return int(p.path[10 : p.path.index("]")]), p.path
    return -1, p.path


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection while a manifest becomes members.

    Hundreds of thousands of new objects, none of them in a cycle, would trigger full
    collections that walk all of them again and again (a fifth of the time of a large
    manifest); they are collected normally afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _start(
    manifest: Manifest | bytes | str,
    policy: Policy,
    client: httpx.Client | None,
    async_client: httpx.AsyncClient | None,
) -> _Preparer:
    with _gc_paused():
        return _begin(manifest, policy, client, async_client)


def _begin(
    manifest: Manifest | bytes | str,
    policy: Policy,
    client: httpx.Client | None,
    async_client: httpx.AsyncClient | None,
) -> _Preparer:
    if isinstance(manifest, Manifest):
        if len(manifest.entries) > policy.max_entries:
            raise ManifestError(
                [Problem("$.entries", f"more than the limit of {policy.max_entries} entries")]
            )
        entries: list[Entry | None] = list(manifest.entries)
        return _Preparer(
            manifest, entries, problems=[], policy=policy, client=client, async_client=async_client
        )
    size = len(manifest.encode() if isinstance(manifest, str) else manifest)
    if size > policy.max_manifest_bytes:
        raise ManifestError(
            [
                Problem(
                    "$", f"manifest is {size} bytes, over the limit of {policy.max_manifest_bytes}"
                )
            ]
        )
    if policy.max_name_bytes >= 65_535:  # (a lower limit is checked entry by entry)
        files = decode_files(manifest, max_entries=policy.max_entries)
        if files is not None:
            head, file_entries = files
            return _Preparer(
                head,
                cast("list[Entry | None]", file_entries),
                problems=[],
                policy=policy,
                client=client,
                async_client=async_client,
                files_only=True,
            )
    head, entries, problems = decode_partial(manifest, max_entries=policy.max_entries)
    return _Preparer(
        head, entries, problems=problems, policy=policy, client=client, async_client=async_client
    )


def prepare(
    manifest: Manifest | bytes | str,
    policy: Policy | None = None,
    *,
    client: httpx.Client | None = None,
) -> Download:
    """Validate and resolve a manifest (JSON or a :class:`Manifest`) into a :class:`Download`.

    Raises :class:`~zipware.manifest.ManifestError` listing every problem, each with its
    JSON path. HEAD requests for URL sizes and the metadata requests of objects run on a
    thread pool of at most ``policy.head_concurrency`` threads.
    """
    preparer = _start(manifest, policy or Policy(), client, None)
    lookups = preparer.lookups()
    if lookups:
        workers = max(1, min(preparer.policy.head_concurrency, len(lookups)))
        with ThreadPoolExecutor(workers, thread_name_prefix="zipware-head") as pool:
            futures = [(record, pool.submit(call)) for call, record in lookups]
            for record, future in futures:
                exc = future.exception()
                record(exc if exc is not None else future.result())
    with _gc_paused():
        return preparer.finish()


async def aprepare(
    manifest: Manifest | bytes | str,
    policy: Policy | None = None,
    *,
    async_client: httpx.AsyncClient | None = None,
) -> Download:
    """Async form of :func:`prepare`: local stats run in a worker thread, HEADs as tasks,
    object metadata requests in worker threads; at most ``policy.head_concurrency`` lookups
    are in flight at once."""
    preparer: _Preparer = await anyio.to_thread.run_sync(
        _start, manifest, policy or Policy(), None, async_client
    )
    if preparer.pending or preparer.objects:
        limiter = anyio.Semaphore(preparer.policy.head_concurrency)

        async def head(i: int, src: URLSource) -> None:
            async with limiter:
                try:
                    result: tuple[int, float | None] | BaseException = await src.astat()
                except Exception as exc:  # reported as the entry's problem, with the rest
                    result = exc
            preparer.resolved(i, result)

        async def info(i: int, src: FSSpecSource) -> None:
            async with limiter:
                try:
                    # a worker thread of anyio's shared pool (its limit holds for the
                    # whole process); the semaphore bounds this manifest's share of it
                    result: ObjectInfo | BaseException = await anyio.to_thread.run_sync(src.stat)
                except Exception as exc:
                    result = exc
            preparer.found(i, result)

        async with anyio.create_task_group() as tg:
            for i, src in preparer.pending:
                tg.start_soon(head, i, src)
            for i, obj in preparer.objects:
                tg.start_soon(info, i, obj)
    with _gc_paused():
        return preparer.finish()
