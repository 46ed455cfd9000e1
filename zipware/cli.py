"""The ``zipware`` command line.

Each subcommand is two functions: ``_add_NAME(subparsers)`` declares it and its arguments
(and sets ``handler``), ``_run_NAME(args) -> int`` does the work. :data:`COMMANDS` maps the
names to the ``_add_*`` functions in the order ``--help`` lists them; adding a subcommand is
adding one entry there. Errors meant for the user are raised as :class:`CLIError` and printed
once, by :func:`main`.

Exit codes: 0 success; 1 writing the archive failed (a file changed or could not be read
while it was archived, the output could not be written) and any partial output file was
removed; 2 the command line or the inputs are unusable (bad arguments, a missing path, a
name a ZIP archive cannot hold, an invalid manifest), and nothing was written; 130
interrupted. ``check`` is the exception: its job is finding problems, so a manifest that has
some is status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import stat
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, NoReturn, TextIO

from .archive import Archive
from .errors import InvalidMemberError, SourceError, SourceSizeError
from .manifest import ManifestError, schema
from .plan import Member, Storage
from .policy import Policy
from .prepare import Download, prepare
from .sources import FileSource

if TYPE_CHECKING:
    import httpx

__all__ = ["COMMANDS", "CLIError", "Entry", "Progress", "build_parser", "collect", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

WRITE_BUFFER = 4 * 1024 * 1024  # output buffer: few, large writes to the file or pipe

# The storage modes offered for files whose CRC-32 is not known before they are read.
STORAGE_CHOICES = (Storage.AUTO.value, Storage.STORE.value, Storage.DEFLATE_STORED.value)

_EXIT_CODES_HELP = """\
exit status:
  0    success
  1    writing failed (a file changed size or could not be read while it was
       being archived, or the output could not be written); a partial output
       file is removed
  2    unusable command line or inputs (bad option, missing path, a name a ZIP
       archive cannot hold, such as one with a backslash); nothing was written
  130  interrupted (Ctrl-C); a partial output file is removed
"""


class CLIError(Exception):
    """An error to print as ``zipware: error: MESSAGE`` and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _say(message: str) -> None:
    print(f"zipware: {message}", file=sys.stderr)


def _quote(text: str) -> str:
    """``text`` quoted for a message; non-UTF-8 names and control characters escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return repr(os.fsencode(text))
    return f"'{text}'" if text.isprintable() else repr(text)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# -- progress ---------------------------------------------------------------------------


class Progress:
    """A one-line progress display: a bar, bytes done of the total, percent and rate.

    It redraws in place with a carriage return at most every ``interval`` seconds.
    :meth:`start` draws it once as soon as the total is known, before any member is read.
    """

    __slots__ = ("_drawn", "_last", "_started", "_width", "done", "interval", "stream", "total")

    def __init__(self, total: int, stream: TextIO, *, interval: float = 0.1) -> None:
        self.total = total
        self.stream = stream
        self.interval = interval
        self.done = 0
        self._started = self._last = time.monotonic()
        self._drawn = False
        self._width = 0

    def start(self) -> None:
        self._draw(time.monotonic())

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._draw(now)

    def finish(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()

    def abort(self) -> None:
        """End the line so that an error message starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        self._last = now
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * 24)
        elapsed = now - self._started
        rate = f"{_human(self.done / elapsed)}/s" if elapsed > 0 else "-"
        line = (
            f"[{'#' * filled}{'.' * (24 - filled)}] {fraction * 100:5.1f}%  "
            f"{_human(self.done)} / {_human(self.total)}  {rate}"
        )
        self._width, pad = len(line), " " * max(0, self._width - len(line))
        self.stream.write(f"\r{line}{pad}")
        self.stream.flush()
        self._drawn = True


def _progress_for(args: argparse.Namespace, total: int) -> Progress | None:
    """A progress display on stderr when asked for, or by default on a terminal."""
    stream = sys.stderr
    if args.quiet:
        return None
    if args.progress or stream.isatty():
        return Progress(total, stream)
    return None


# -- collecting files -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One member to be: its name in the archive, its path on disk and its ``stat``."""

    name: str
    path: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def _listing(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise CLIError(f"cannot list {_quote(path)}: {exc.strerror}") from exc


def collect(
    path: str,
    *,
    top: str | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
    warn: Callable[[str], None] = _say,
) -> list[Entry]:
    """The entries for ``path``: a file, or a directory and everything under it.

    Names are relative to ``path``'s parent (``top`` replaces ``path``'s own name), with
    ``/`` separators and a trailing ``/`` for directories; every directory is an entry, so
    empty ones survive. Directories are walked depth first in name order, so the same tree
    always gives the same archive. Inside the walk, a symbolic link to a file is followed
    (the file's bytes, mode and mtime are stored) but a symbolic link to a directory is
    skipped with a warning (never recursed into, so links cannot loop); ``path`` itself may
    be a link to a directory. Broken links, sockets, FIFOs and devices are skipped with a
    warning. Files whose ``(st_dev, st_ino)`` is in ``exclude`` (the output archive) are
    left out. Only ``stat`` is called: no file is opened.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CLIError(f"cannot archive {_quote(path)}: {exc.strerror}") from exc
    if top is None:
        top = os.path.basename(os.path.abspath(path))
    prefix = f"{top}/" if top else ""  # the root directory has no name of its own
    if stat.S_ISREG(st.st_mode):
        if not top:  # pragma: no cover - only a directory can be "/"
            raise CLIError(f"cannot archive {_quote(path)}: no name")
        return [Entry(top, path, st)]
    if not stat.S_ISDIR(st.st_mode):
        raise CLIError(f"cannot archive {_quote(path)}: not a regular file or directory")

    out: list[Entry] = [Entry(prefix, path, st)] if prefix else []
    stack = [(prefix, iter(_listing(path)))]
    while stack:
        pre, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        try:
            est = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(est.st_mode):
                try:
                    est = entry.stat(follow_symlinks=True)
                except OSError:
                    warn(f"warning: skipping {_quote(entry.path)}: broken symbolic link")
                    continue
                if stat.S_ISDIR(est.st_mode):
                    warn(
                        f"warning: skipping {_quote(entry.path)}: "
                        "symbolic link to a directory (not followed)"
                    )
                    continue
        except OSError as exc:
            raise CLIError(f"cannot archive {_quote(entry.path)}: {exc.strerror}") from exc
        name = pre + entry.name
        if stat.S_ISDIR(est.st_mode):
            out.append(Entry(f"{name}/", entry.path, est))
            stack.append((f"{name}/", iter(_listing(entry.path))))
        elif stat.S_ISREG(est.st_mode):
            if (est.st_dev, est.st_ino) in exclude:
                warn(f"warning: skipping {_quote(entry.path)}: it is the output archive")
                continue
            out.append(Entry(name, entry.path, est))
        else:
            warn(f"warning: skipping {_quote(entry.path)}: not a regular file or directory")
    return out


def _members(entries: Sequence[Entry], storage: str) -> list[Member]:
    """One member per entry; sizes, mtimes and modes come from the ``stat`` taken earlier."""
    problems = []
    for e in entries:
        try:
            e.name.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"{_quote(e.path)}: the name is not valid UTF-8")
    if problems:
        _refuse(problems)
    return [
        Member(
            e.name,
            size=0 if e.is_dir else e.st.st_size,
            source=None if e.is_dir else FileSource(e.path),
            mtime=e.st.st_mtime,
            mode=e.st.st_mode,
            storage=storage,
        )
        for e in entries
    ]


def _refuse(problems: list[str]) -> NoReturn:
    shown = "\n  ".join(problems[:10])
    more = f"\n  (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    raise CLIError(f"cannot archive:\n  {shown}{more}")


def _plan(entries: Sequence[Entry], storage: str) -> Archive:
    """The archive of ``entries``; a name the engine refuses becomes a :class:`CLIError`."""
    try:
        return Archive(_members(entries, storage))
    except InvalidMemberError as exc:
        _refuse(
            [
                f"{_quote(entries[i].path)} as {_quote(name)}: {message}"
                if 0 <= i < len(entries)
                else message
                for i, name, message in exc.problems
            ]
        )


def _identity(path: str) -> frozenset[tuple[int, int]]:
    """``(st_dev, st_ino)`` of the output and its ``.part`` file, those that exist."""
    ids = set()
    for p in (path, path + ".part"):
        with contextlib.suppress(OSError):
            st = os.stat(p)
            ids.add((st.st_dev, st.st_ino))
    return frozenset(ids)


# -- writing ----------------------------------------------------------------------------


def _stream(archive: Archive, out: BinaryIO, progress: Progress | None) -> int:
    written = 0
    for chunk in archive:
        out.write(chunk)
        written += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    return written


@contextlib.contextmanager
def _stdout_binary() -> Iterator[BinaryIO]:
    """Standard output as a binary file with a large buffer, flushed (not closed) at exit."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        fd = -1
    if fd < 0:  # a replaced sys.stdout (as in tests): write to its buffer as it is
        try:
            yield sys.stdout.buffer
        finally:
            sys.stdout.buffer.flush()
        return
    with open(fd, "wb", buffering=WRITE_BUFFER, closefd=False) as out:
        yield out


def write_archive(archive: Archive, dest: str, progress: Progress | None = None) -> int:
    """Stream ``archive`` to ``dest`` (``-``: standard output); return the bytes written.

    A file is written as ``DEST.part`` and renamed to ``DEST`` once complete; on any
    failure the ``.part`` file is removed and an existing ``DEST`` is left as it was.
    """
    if progress is not None:
        progress.start()
    try:
        if dest == "-":
            with _stdout_binary() as out:
                written = _stream(archive, out, progress)
        else:
            part = dest + ".part"
            try:
                out = open(part, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115
            except OSError as exc:
                raise CLIError(
                    f"cannot create {_quote(part)}: {exc.strerror}", EXIT_FAILED
                ) from exc
            try:
                with out:
                    written = _stream(archive, out, progress)
                os.replace(part, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(part)
                raise
    except BaseException:
        if progress is not None:
            progress.abort()
        raise
    if progress is not None:
        progress.finish()
    return written


def _explain_file(entries: Sequence[Entry]) -> Callable[[SourceError], str]:
    """How :func:`_write_or_explain` names what failed when ``entries`` are archived."""

    def explain(exc: SourceError) -> str:
        path = entries[exc.index].path if 0 <= exc.index < len(entries) else exc.name
        if isinstance(exc, SourceSizeError):
            return f"{_quote(path)} changed size while it was being archived ({exc.detail})"
        return f"cannot read {_quote(path)}: {exc.detail}"

    return explain


def _write_or_explain(
    archive: Archive,
    dest: str,
    progress: Progress | None,
    explain: Callable[[SourceError], str],
) -> int:
    """:func:`write_archive`, with the errors it can raise turned into :class:`CLIError`.

    ``explain`` says what went wrong with a member whose source failed.
    """
    where = "standard output" if dest == "-" else _quote(dest)
    after = (
        "the output on standard output is incomplete"
        if dest == "-"
        else f"nothing was written to {where}"
    )
    try:
        return write_archive(archive, dest, progress)
    except SourceError as exc:
        raise CLIError(f"{explain(exc)}; {after}", EXIT_FAILED) from exc
    except BrokenPipeError as exc:
        raise CLIError(
            "the output was closed before the archive was complete", EXIT_FAILED
        ) from exc
    except OSError as exc:
        raise CLIError(
            f"cannot write {where}: {exc.strerror or exc}; {after}", EXIT_FAILED
        ) from exc


def _check_dest(dest: str) -> None:
    if dest == "-":
        if sys.stdout.isatty():
            raise CLIError(
                "refusing to write a ZIP archive to a terminal; redirect standard output "
                "or give a file name"
            )
    elif os.path.isdir(dest):
        raise CLIError(f"{_quote(dest)} is a directory; give the archive's file name")


# -- create -----------------------------------------------------------------------------


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        choices=STORAGE_CHOICES,
        default=Storage.AUTO.value,
        help=(
            "how files are stored, never compressed: 'deflate-stored' (method 8 made of "
            "stored blocks, read by every common unzipper, streaming ones included), "
            "'store' (method 0 with a data descriptor, since the CRC-32 is only known once "
            "a file is read; streaming readers such as Java's ZipInputStream reject it), "
            "'auto' (default: 'store' when the CRC-32 is known up front, which the command "
            "line never knows, so 'deflate-stored')"
        ),
    )
    _add_display_options(p)


def _add_display_options(p: argparse.ArgumentParser) -> None:
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display and no summary"
    )
    shown.add_argument(
        "--progress",
        action="store_true",
        help="show the progress display on stderr even when it is not a terminal",
    )


def _add_create(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "create",
        help="zip files and directories",
        description=textwrap.fill(
            "Zip files and directories, recursively. Member names are relative to each "
            "PATH's parent ('zipware create out.zip /data/photos' stores 'photos/...'), "
            "directories are stored as entries so empty ones survive, and modes and "
            "modification times come from stat. Inside a directory, symbolic links to "
            "files are followed, symbolic links to directories are skipped (never "
            "recursed into), broken links and special files are skipped with a warning. "
            "The archive's exact size is computed from stat before any file is read; a "
            "file that changes size meanwhile stops the run. A progress display goes to "
            "stderr when it is a terminal."
        ),
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "archive",
        metavar="ARCHIVE",
        help="the ZIP file to write ('-': standard output); written as ARCHIVE.part, then renamed",
    )
    p.add_argument("paths", metavar="PATH", nargs="+", help="files and directories to zip")
    p.add_argument(
        "--size-only",
        action="store_true",
        help="print the archive's exact size in bytes and write nothing (reads no file)",
    )
    _add_output_options(p)
    p.set_defaults(handler=_run_create)


def _run_create(args: argparse.Namespace) -> int:
    dest: str = args.archive
    if not args.size_only:
        _check_dest(dest)
    exclude = frozenset() if dest == "-" else _identity(dest)
    entries: list[Entry] = []
    for path in args.paths:
        entries.extend(collect(path, exclude=exclude))
    archive = _plan(entries, args.storage)
    if args.size_only:
        print(archive.size)
        return EXIT_OK
    written = _write_or_explain(
        archive, dest, _progress_for(args, archive.size), _explain_file(entries)
    )
    if not args.quiet:
        files = sum(not e.is_dir for e in entries)
        where = "standard output" if dest == "-" else dest
        _say(
            f"wrote {where}: {_count(files, 'file')}, "
            f"{_count(len(entries) - files, 'directory', 'directories')}, {written:,} bytes"
        )
    return EXIT_OK


# -- demo -------------------------------------------------------------------------------

SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="zip the sample files shipped with zipware",
        description=textwrap.fill(
            "Zip the small sample files shipped inside the zipware package (under the "
            "name 'zipware-demo/'), then list what was written and compare the size "
            "predicted before reading with the size produced."
        ),
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        default="zipware-demo.zip",
        help="the ZIP file to write (default: %(default)s; '-': standard output)",
    )
    _add_output_options(p)
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    dest: str = args.output
    if not os.path.isdir(SAMPLES_DIR):
        raise CLIError(f"the sample files are missing from this installation ({SAMPLES_DIR})")
    _check_dest(dest)
    entries = collect(SAMPLES_DIR, top="zipware-demo", exclude=_identity(dest))
    archive = _plan(entries, args.storage)
    predicted = archive.size
    written = _write_or_explain(
        archive, dest, _progress_for(args, predicted), _explain_file(entries)
    )
    produced = written if dest == "-" else os.path.getsize(dest)
    if not args.quiet:
        out = sys.stderr if dest == "-" else sys.stdout
        width = max(len(e.name) for e in entries)
        print(f"wrote {'standard output' if dest == '-' else dest}:", file=out)
        for e in entries:
            size = "directory" if e.is_dir else f"{e.st.st_size:,} bytes"
            print(f"  {e.name:<{width}}  {size:>12}", file=out)
        files = [e for e in entries if not e.is_dir]
        data = sum(e.st.st_size for e in files)
        print(
            f"{_count(len(files), 'file')} and "
            f"{_count(len(entries) - len(files), 'directory', 'directories')}, "
            f"{data:,} bytes of file data",
            file=out,
        )
        verdict = "match" if produced == predicted else "MISMATCH"
        print(f"predicted size (before reading any file): {predicted:,} bytes", file=out)
        print(f"produced size:                            {produced:,} bytes ({verdict})", file=out)
    return EXIT_OK if produced == predicted else EXIT_FAILED


# -- manifests: build, size, check, schema ----------------------------------------------

_MANIFEST_ARGS_HELP = """\
local files and URLs:
  'path' entries must resolve inside a --root (symbolic links are followed
  and must stay inside); a relative path is resolved against the first
  --root. Without --root, the one root is the manifest file's directory
  (the current directory when MANIFEST is '-'). 'url' entries must stay
  within an --allow-url prefix, redirects included; without --allow-url no
  URL is allowed.
"""


_BUILD_EXIT_CODES_HELP = """\
exit status:
  0    success
  1    writing failed (a file changed size or could not be read while it was
       being archived, a URL failed, a declared CRC-32 was wrong, or the output
       could not be written); a partial output file is removed
  2    unusable command line or inputs (bad option, unreadable MANIFEST, an
       invalid manifest: every problem is printed); nothing was written
  130  interrupted (Ctrl-C); a partial output file is removed
"""


def _print_result(text: str) -> int:
    """Print ``text`` on standard output; a reader that left early (``| head``) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # point stdout at /dev/null so that the flush at exit raises nothing more
        with contextlib.suppress(AttributeError, ValueError, OSError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return EXIT_FAILED
    return EXIT_OK


def _add_manifest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "manifest",
        metavar="MANIFEST",
        help="the manifest, a JSON file ('-': standard input); see 'zipware schema'",
    )
    p.add_argument(
        "--root",
        metavar="DIR",
        action="append",
        dest="roots",
        help=(
            "a directory 'path' entries may name files in (repeatable; relative paths are "
            "resolved against the first one; default: the manifest file's directory, or "
            "the current directory when MANIFEST is '-')"
        ),
    )
    p.add_argument(
        "--allow-url",
        metavar="PREFIX",
        action="append",
        dest="allow_urls",
        help=(
            "an http(s) URL prefix 'url' entries and their redirects must stay within, "
            "such as https://cdn.example.com/media/ (repeatable; default: no URL allowed; "
            "needs httpx)"
        ),
    )
    p.add_argument(
        "--allow-uri",
        metavar="PREFIX",
        action="append",
        dest="allow_uris",
        help=(
            "an object storage prefix 'uri' entries must be inside, such as "
            "s3://bucket/media (repeatable; default: no object allowed; needs "
            "'zipware[s3]'; credentials, region and endpoint come from the standard "
            "AWS_* variables and ~/.aws files)"
        ),
    )


def _manifest_label(manifest: str) -> str:
    return "standard input" if manifest == "-" else _quote(manifest)


def _policy(args: argparse.Namespace) -> Policy:
    """The safety policy the command line describes (``--root``, ``--allow-url``)."""
    roots: list[str] = args.roots or [
        os.getcwd() if args.manifest == "-" else os.path.dirname(os.path.abspath(args.manifest))
    ]
    for root in roots:
        if not os.path.isdir(root):
            raise CLIError(f"--root {_quote(root)} is not a directory")
    try:
        return Policy(
            roots=tuple(roots),
            allow_urls=tuple(args.allow_urls or ()),
            allow_uris=tuple(args.allow_uris or ()),
        )
    except ValueError as exc:  # a malformed --allow-url or --allow-uri
        option = "--allow-uri" if "allow_uris" in str(exc) else "--allow-url"
        raise CLIError(f"{option}: {exc}") from exc


def _read_manifest(manifest: str) -> bytes:
    if manifest == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        return stdin.read() if stdin is not None else sys.stdin.read().encode()
    try:
        with open(manifest, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CLIError(f"cannot read {_quote(manifest)}: {exc.strerror}") from exc


@contextlib.contextmanager
def _http_client(policy: Policy) -> Iterator[httpx.Client | None]:
    """One HTTP client for every ``url`` entry (HEADs and GETs), when URLs are allowed."""
    if not policy.allow_urls:
        yield None
        return
    try:
        import httpx
    except ImportError as exc:
        raise CLIError("--allow-url needs httpx: pip install 'zipware[http]'") from exc
    with httpx.Client(timeout=policy.url_timeout) as client:
        yield client


def _prepare(args: argparse.Namespace, policy: Policy, client: httpx.Client | None) -> Download:
    """The manifest's download; raises :class:`ManifestError` with every problem."""
    return prepare(_read_manifest(args.manifest), policy, client=client)


def _invalid(args: argparse.Namespace, exc: ManifestError) -> CLIError:
    """Every problem of a manifest as one error, a problem per line."""
    problems = "\n  ".join(str(p) for p in exc.problems)
    return CLIError(
        f"invalid manifest {_manifest_label(args.manifest)} "
        f"({_count(len(exc.problems), 'problem')}):\n  {problems}"
    )


def _explain_entry(exc: SourceError) -> str:
    # a valid manifest gives one member per entry, in order: member i is $.entries[i]
    return f"$.entries[{exc.index}] ({_quote(exc.name)}): {exc.detail}"


def _add_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "build",
        help="write the ZIP archive a manifest describes",
        description=textwrap.fill(
            "Write the ZIP archive a manifest describes: the same bytes a zipware "
            "middleware would stream for it. The manifest is checked first, all of it "
            "(every problem is printed, one per line, with its JSON path such as "
            "'$.entries[3].name'), local files are stat'ed and URL sizes found, so the "
            "exact size is known before any member is read. A progress display goes to "
            "stderr when it is a terminal."
        )
        + "\n\n"
        + _MANIFEST_ARGS_HELP,
        epilog=_BUILD_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_manifest_options(p)
    p.add_argument(
        "-o",
        "--output",
        metavar="ARCHIVE",
        required=True,
        help=(
            "the ZIP file to write ('-': standard output), written as ARCHIVE.part, then "
            "renamed; or an object, s3://bucket/key, sent as a multipart upload that is "
            "aborted on any failure (needs 'zipware[s3]')"
        ),
    )
    _add_display_options(p)
    p.set_defaults(handler=_run_build)


def _is_object_uri(dest: str) -> bool:
    """Whether ``-o`` names an object (``s3://bucket/key``) rather than a local file."""
    scheme, sep, _ = dest.partition("://")
    return (
        bool(sep) and scheme.lower() not in ("", "file") and scheme.isascii() and scheme.isalnum()
    )


def _upload_or_explain(archive: Archive, dest: str, progress: Progress | None) -> int:
    """:func:`zipware.upload.upload` to ``dest``, its errors turned into :class:`CLIError`."""
    try:
        import fsspec  # noqa: F401

        from .upload import UploadError, upload
    except ImportError as exc:
        raise CLIError(
            f"writing to {dest} needs fsspec and s3fs: pip install 'zipware[s3]'"
        ) from exc
    if progress is not None:
        progress.start()
    try:
        written = upload(archive, dest, progress=progress.update if progress else None)
    except BaseException as exc:
        if progress is not None:
            progress.abort()
        after = f"the multipart upload was aborted, {dest} was not written"
        if isinstance(exc, SourceError):
            raise CLIError(f"{_explain_entry(exc)}; {after}", EXIT_FAILED) from exc
        if isinstance(exc, UploadError):
            raise CLIError(f"{exc}; {after}", EXIT_FAILED) from exc
        raise
    if progress is not None:
        progress.finish()
    return written


def _check_object_dest(dest: str) -> None:
    from .sources import split_uri

    try:
        key = split_uri(dest)[2]
    except ValueError as exc:
        raise CLIError(f"-o: {exc}") from exc
    if not key or key.endswith("/"):
        raise CLIError(f"-o {dest}: give the object's key, such as s3://bucket/exports/out.zip")


def _run_build(args: argparse.Namespace) -> int:
    dest: str = args.output
    to_object = _is_object_uri(dest)
    if to_object:
        _check_object_dest(dest)
    else:
        _check_dest(dest)
    policy = _policy(args)
    with _http_client(policy) as client:
        try:
            archive = _prepare(args, policy, client).archive
        except ManifestError as exc:
            raise _invalid(args, exc) from exc
        progress = _progress_for(args, archive.size)
        if to_object:
            written = _upload_or_explain(archive, dest, progress)
        else:
            written = _write_or_explain(archive, dest, progress, _explain_entry)
    if not args.quiet:
        where = "standard output" if dest == "-" else dest
        _say(f"wrote {where}: {_count(len(archive.plan), 'entry', 'entries')}, {written:,} bytes")
    return EXIT_OK


def _add_size(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "size",
        help="print the exact size of a manifest's archive",
        description=textwrap.fill(
            "Print the exact size in bytes of the ZIP archive a manifest describes, as "
            "'build' would write it. No member is read: local files are stat'ed, URLs "
            "without a declared size get a HEAD request."
        )
        + "\n\n"
        + _MANIFEST_ARGS_HELP,
        epilog="exit status:\n  0    success\n  2    unusable command line or invalid manifest\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_manifest_options(p)
    p.set_defaults(handler=_run_size)


def _run_size(args: argparse.Namespace) -> int:
    policy = _policy(args)
    with _http_client(policy) as client:
        try:
            size = _prepare(args, policy, client).size
        except ManifestError as exc:
            raise _invalid(args, exc) from exc
    return _print_result(str(size))


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="check a manifest and list every problem",
        description=textwrap.fill(
            "Check a manifest as 'build' would, without reading any member: its JSON, "
            "every entry, local paths against the roots, URLs against the allow-list "
            "(HEAD requests for sizes not declared), names and limits. Prints 'ok: N "
            "entries, SIZE bytes', or every problem on standard output, one per line, "
            "with its JSON path ('$.entries[3].name: ...')."
        )
        + "\n\n"
        + _MANIFEST_ARGS_HELP,
        epilog=(
            "exit status:\n  0    the manifest is valid\n  1    the manifest has problems "
            "(listed)\n  2    unusable command line (bad option, unreadable MANIFEST)\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_manifest_options(p)
    p.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    policy = _policy(args)
    try:
        with _http_client(policy) as client:
            download = _prepare(args, policy, client)
    except ManifestError as exc:
        _print_result("\n".join(str(p) for p in exc.problems))
        _say(f"{_manifest_label(args.manifest)}: {_count(len(exc.problems), 'problem')}")
        return EXIT_FAILED
    n = len(download.archive.plan)
    return _print_result(f"ok: {n} {'entry' if n == 1 else 'entries'}, {download.size} bytes")


def _add_schema(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "schema",
        help="print the manifest's JSON Schema",
        description="Print the JSON Schema (draft 2020-12) of manifest version 1.",
    )
    p.set_defaults(handler=_run_schema)


def _run_schema(args: argparse.Namespace) -> int:
    return _print_result(json.dumps(schema(), indent=2, sort_keys=True))


def _add_proxy(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "proxy",
        help="serve zip downloads in front of a backend in any language",
        description=textwrap.fill(
            "Run a reverse proxy (uvicorn) in front of UPSTREAM. Every request is forwarded "
            "and every response streamed back as it is, except manifest responses "
            "(X-Zip-Manifest, the manifest Content-Type, or nginx mod_zip's "
            "X-Archive-Files: zip), which become ZIP downloads with Content-Length, Range "
            "and ETag. Files the upstream serves may always be named in manifests; local "
            "files need --root, other URLs --allow-url. Errors before the archive starts "
            "are a 502."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--upstream", required=True, metavar="URL", help="the backend, e.g. http://127.0.0.1:3000"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--port", type=int, default=8080, help="port to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory local paths may come from (repeatable)",
    )
    p.add_argument(
        "--allow-url",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a URL prefix members may be fetched from (repeatable)",
    )
    p.add_argument(
        "--modzip-root",
        metavar="DIR",
        help="read mod_zip locations as files under DIR instead of fetching them from the upstream",
    )
    p.add_argument(
        "--strip-conditionals",
        action="store_true",
        help="never forward Range and conditionals (upstreams serving manifests as files)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="upstream connect timeout (default: %(default)s)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="upstream read timeout (default: %(default)s)",
    )
    p.set_defaults(handler=_run_proxy)


def _run_proxy(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise CLIError("the proxy needs uvicorn and httpx: pip install 'zipware[proxy]'") from None
    from .proxy import ENV_CONFIG

    for root in [*args.root, *([args.modzip_root] if args.modzip_root else [])]:
        if not os.path.isdir(root):
            raise CLIError(f"--root {_quote(root)} is not a directory")
    config = {
        "upstream": args.upstream,
        "roots": args.root,
        "allow_urls": args.allow_url,
        "connect_timeout": args.connect_timeout,
        "read_timeout": args.read_timeout,
        "modzip_root": args.modzip_root,
        "strip_conditionals": args.strip_conditionals,
    }
    # the workers import the app by name; the settings reach them through the environment
    os.environ[ENV_CONFIG] = json.dumps(config)
    uvicorn.run(
        "zipware.proxy:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        server_header=False,  # the upstream's Server and Date headers pass through
        date_header=False,
        # the proxy writes X-Forwarded-For itself from the real peer; uvicorn must not
        # first replace that peer with the header's last address
        proxy_headers=False,
    )
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = {
    "create": _add_create,
    "demo": _add_demo,
    "build": _add_build,
    "size": _add_size,
    "check": _add_check,
    "schema": _add_schema,
    "proxy": _add_proxy,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`COMMANDS`."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="zipware",
        description="Streamed ZIP64 archives whose exact size is known before the first byte.",
        epilog=(
            "'zipware ARCHIVE.zip PATH...' (a first argument ending in .zip) is short\n"
            "for 'zipware create ARCHIVE.zip PATH...'.\n\n"
            + _EXIT_CODES_HELP
            + "  (an invalid manifest is status 2, except for 'zipware check': 1)\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zipware {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS.values():
        add(sub)
    return parser


def _with_seed_form(argv: Sequence[str]) -> list[str]:
    """``zipware out.zip a b`` is ``zipware create out.zip a b``."""
    args = list(argv)
    first = args[0] if args else ""
    if first not in COMMANDS and not first.startswith("-") and first.lower().endswith(".zip"):
        return ["create", *args]
    return args


def main(argv: Iterable[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_in = _with_seed_form(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    try:
        args = parser.parse_args(args_in)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.handler(args)
    except CLIError as exc:
        _say(f"error: {exc}")
        return exc.code
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    return code
