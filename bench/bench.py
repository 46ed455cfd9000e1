"""zipware benchmark: throughput against a raw copy and the peers, and per-member cost.

One run prints one markdown table of medians (over ``--repeats`` runs) and ratios, with the
targets and whether each is met:

* W1: 8 files of random bytes (128 MiB each; 16 MiB with ``--quick``), stored, streamed to
  /dev/null: a raw read+write of the same bytes (the baseline), zipware (CRC computed,
  CRC declared, default storage), zipstream-ng and stream-zip.
* W2: many 100-byte members whose bytes are made when opened, streamed to /dev/null, each
  count in a fresh subprocess: peak RSS growth per member (the slope between two counts),
  planning time, time to first byte and total time, for zipware and the peers.

Run ``python bench/bench.py`` (several minutes) or ``python bench/bench.py --quick``
(under a minute). See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from typing import Any

from zipware import Archive, FileSource, Member, Source
from zipware._crc import IMPLEMENTATION as CRC_IMPLEMENTATION
from zipware._crc import crc32
from zipware.sources import READ_SIZE

MiB = 1024 * 1024
MB = 1_000_000
MODIFIED_AT = datetime(2024, 1, 1)  # stream-zip needs one; fixed so runs are alike

# -- checking an archive's length ---------------------------------------------------------

_EOCD = struct.Struct("<IHHHHIIH")
_LOCATOR = struct.Struct("<IIQI")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_TAIL = 22 + 20 + 56  # end record, zip64 locator, zip64 end record (no archive comment)


def length_from_end_records(tail: bytes) -> tuple[int, int]:
    """(archive length, entry count) as the archive's own end records state them."""
    sig, _, _, _, entries, cd_size, cd_start, comment = _EOCD.unpack(tail[-22:])
    if sig != 0x06054B50 or comment:
        raise AssertionError("no end of central directory record at the very end")
    size = cd_start + cd_size + 22
    if len(tail) >= _TAIL and _LOCATOR.unpack(tail[-42:-22])[0] == 0x07064B50:
        sig, _, _, _, _, _, _, entries, cd_size, cd_start = _EOCD64.unpack(tail[-_TAIL:-42])
        if sig != 0x06064B50:
            raise AssertionError("zip64 locator without a zip64 end record")
        size = cd_start + cd_size + 56 + 20 + 22
    return size, entries


def drain(chunks: Iterable[bytes], fd: int) -> tuple[int, bytes]:
    """Write every chunk to ``fd``; return the byte count and the last bytes written."""
    write = os.write
    last: collections.deque[bytes] = collections.deque(maxlen=16)
    keep = last.append
    total = 0
    for chunk in chunks:
        total += write(fd, chunk)
        keep(chunk)
    return total, b"".join(last)[-_TAIL:]


def check_archive(
    label: str, written: int, tail: bytes, expected: int | None, entries: int
) -> None:
    """Fail loudly unless the archive is as long as announced and as its end records say."""
    stated, count = length_from_end_records(tail)
    if expected is not None and written != expected:
        raise AssertionError(f"{label}: wrote {written} bytes, announced {expected}")
    if written != stated or count != entries:
        raise AssertionError(
            f"{label}: wrote {written} bytes / {entries} members, "
            f"end records say {stated} / {count}"
        )


# -- W1: large stored files ---------------------------------------------------------------


@dataclass
class DataSet:
    paths: list[str]
    sizes: list[int]
    crcs: list[int]

    @property
    def total(self) -> int:
        return sum(self.sizes)


def make_data(directory: str, files: int, size: int) -> DataSet:
    """Random files (reused when already there with the right size), read once to warm them."""
    os.makedirs(directory, exist_ok=True)
    paths, crcs = [], []
    for i in range(files):
        path = os.path.join(directory, f"w1-{i:02d}-{size}.bin")
        if not (os.path.exists(path) and os.path.getsize(path) == size):
            with open(path, "wb") as f:
                for start in range(0, size, 16 * MiB):
                    f.write(os.urandom(min(16 * MiB, size - start)))
        crc = 0
        with open(path, "rb", buffering=0) as f:  # warms the page cache too
            while chunk := f.read(READ_SIZE):
                crc = crc32(chunk, crc)
        paths.append(path)
        crcs.append(crc)
    return DataSet(paths, [size] * files, crcs)


def file_chunks(path: str) -> Iterator[bytes]:
    """A file's bytes in zipware's read size (the input given to stream-zip)."""
    with open(path, "rb", buffering=0) as f:
        read = f.read
        while chunk := read(READ_SIZE):
            yield chunk


def raw_copy(data: DataSet) -> tuple[Iterable[bytes], int | None, int]:
    def chunks() -> Iterator[bytes]:
        for path in data.paths:
            yield from file_chunks(path)

    return chunks(), data.total, -1


def zipware_rows(data: DataSet, storage: str, declared: bool) -> tuple[Iterable[bytes], int, int]:
    archive = Archive(
        [
            Member(
                f"file-{i:02d}.bin",
                size=size,
                source=FileSource(path),
                crc32=crc if declared else None,
                storage=storage,
            )
            for i, (path, size, crc) in enumerate(zip(data.paths, data.sizes, data.crcs))
        ]
    )
    return archive, archive.size, len(data.paths)


def zipstream_ng(data: DataSet) -> tuple[Iterable[bytes], int, int]:
    import zipstream

    zs = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    for i, path in enumerate(data.paths):
        zs.add_path(path, f"file-{i:02d}.bin")
    return zs, len(zs), len(data.paths)


def stream_zip_rows(data: DataSet, variant: str) -> tuple[Iterable[bytes], None, int]:
    import stream_zip

    def method(i: int) -> Any:
        if variant == "64":
            return stream_zip.NO_COMPRESSION_64
        if variant == "32":
            return stream_zip.NO_COMPRESSION_32
        return stream_zip.NO_COMPRESSION_64(data.sizes[i], data.crcs[i])

    members = (
        (f"file-{i:02d}.bin", MODIFIED_AT, 0o600, method(i), file_chunks(path))
        for i, path in enumerate(data.paths)
    )
    # chunk_size: its default 64 KiB re-slices every 256 KiB input chunk; this is faster
    return stream_zip.stream_zip(members, chunk_size=READ_SIZE), None, len(data.paths)


W1_ROWS: list[tuple[str, str, Callable[[DataSet], tuple[Iterable[bytes], int | None, int]]]] = [
    ("raw", "raw read + write (baseline)", raw_copy),
    (
        "zw-computed",
        "zipware store, CRC computed",
        lambda d: zipware_rows(d, "store", declared=False),
    ),
    (
        "zw-declared",
        "zipware store, CRC declared",
        lambda d: zipware_rows(d, "store", declared=True),
    ),
    (
        "zw-auto",
        "zipware default (auto: deflate-stored)",
        lambda d: zipware_rows(d, "auto", declared=False),
    ),
    ("zs-ng", "zipstream-ng stored (sized)", zipstream_ng),
    ("sz-64", "stream-zip NO_COMPRESSION_64", lambda d: stream_zip_rows(d, "64")),
    ("sz-32", "stream-zip NO_COMPRESSION_32", lambda d: stream_zip_rows(d, "32")),
    (
        "sz-64-declared",
        "stream-zip NO_COMPRESSION_64(size, crc)",
        lambda d: stream_zip_rows(d, "declared"),
    ),
]


def run_w1(data: DataSet, repeats: int, log: Callable[[str], None]) -> dict[str, list[float]]:
    """Seconds per run for every W1 row, rows interleaved so drift hits them alike."""
    fd = os.open(os.devnull, os.O_WRONLY)
    times: dict[str, list[float]] = {key: [] for key, _, _ in W1_ROWS}
    try:
        for key, label, make in W1_ROWS:  # one checked, untimed run each
            chunks, expected, entries = make(data)
            written, tail = drain(chunks, fd)
            if key == "raw":
                if written != data.total:
                    raise AssertionError(f"raw copy wrote {written} of {data.total} bytes")
            else:
                check_archive(label, written, tail, expected, entries)
        for r in range(repeats):
            for key, _, make in W1_ROWS:
                start = time.perf_counter()
                chunks, _, _ = make(data)
                drain(chunks, fd)
                times[key].append(time.perf_counter() - start)
            log(f"W1 repeat {r + 1}/{repeats} done")
    finally:
        os.close(fd)
    return times


# -- W2: many small members, each count in a fresh process --------------------------------

PAYLOAD_SIZE = 100


def payload(seed: int) -> bytes:
    """The 100 bytes of member ``seed``, made on demand."""
    return seed.to_bytes(4, "little") * 25


def member_name(i: int) -> str:
    return f"d{i // 1000:04d}/f{i:07d}.bin"


class SeedSource(Source):
    """A zipware source holding nothing but a seed; the bytes are made when opened."""

    __slots__ = ("seed",)

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def iter_chunks(self, offset: int = 0) -> Iterator[bytes]:
        yield payload(self.seed)[offset:]


class SeedIterable:
    """The same for zipstream-ng: an iterable of one chunk, made when iterated."""

    __slots__ = ("seed",)

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __iter__(self) -> Iterator[bytes]:
        yield payload(self.seed)


def seed_chunks(seed: int) -> Iterator[bytes]:
    """The same for stream-zip: a generator, as its documentation writes member data."""
    yield payload(seed)


def _status(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field_name)


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so imports do not hide the peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def w2_child(lib: str, count: int) -> dict[str, Any]:
    """One W2 run in this (fresh) process; the parent reads the JSON it prints."""
    import gc

    gc.collect()
    fd = os.open(os.devnull, os.O_WRONLY)
    reset = _reset_peak()
    base = _status("VmRSS")
    result: dict[str, Any] = {"lib": lib, "count": count, "peak_reset": reset}
    c0 = time.process_time()
    t0 = time.perf_counter()
    expected: int | None = None
    if lib == "members":  # the caller's member list alone: what zipware's row includes
        members = [
            Member(member_name(i), size=PAYLOAD_SIZE, source=SeedSource(i)) for i in range(count)
        ]
        t1 = time.perf_counter()
        result.update(build_s=t1 - t0, growth=_status("VmHWM") - base, peak_reset=reset)
        del members
        return result
    if lib in ("zipware", "zipware-gen"):
        made = (
            Member(member_name(i), size=PAYLOAD_SIZE, source=SeedSource(i)) for i in range(count)
        )
        members = list(made) if lib == "zipware" else made
        t1 = time.perf_counter()
        archive = Archive(members)
        t2 = time.perf_counter()
        expected = archive.size
        chunks: Iterator[bytes] = iter(archive)
        first = next(chunks)
    elif lib == "zipstream-ng":
        import zipstream

        t1 = t0  # add() both describes and sizes the members: it is the planning step
        zs = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
        for i in range(count):
            zs.add(SeedIterable(i), member_name(i), size=PAYLOAD_SIZE)
        expected = len(zs)
        t2 = time.perf_counter()
        chunks = iter(zs)
        first = next(chunks)
    elif lib == "stream-zip":
        import stream_zip

        t1 = t2 = t0  # no planning: members come from a generator as they are streamed
        files = (
            (member_name(i), MODIFIED_AT, 0o600, stream_zip.NO_COMPRESSION_64, seed_chunks(i))
            for i in range(count)
        )
        chunks = iter(stream_zip.stream_zip(files))
        first = next(chunks)
    else:
        raise SystemExit(f"unknown library {lib!r}")
    t3 = time.perf_counter()
    written = os.write(fd, first)
    rest, tail = drain(chunks, fd)
    written += rest
    if len(tail) < _TAIL:
        tail = (first + tail)[-_TAIL:]
    t4 = time.perf_counter()
    c4 = time.process_time()
    os.close(fd)
    check_archive(f"W2 {lib} x{count}", written, tail, expected, count)
    result.update(
        build_s=t1 - t0,
        plan_s=t2 - t1,
        ttfb_s=t3 - t1,
        total_s=t4 - t1,
        cpu_s=c4 - c0,  # from before the member list: includes building it
        base_rss=base,
        peak_rss=_status("VmHWM"),
        growth=_status("VmHWM") - base,
        size=written,
    )
    return result


W2_LIBS = ["zipware", "zipware-gen", "stream-zip", "zipstream-ng"]
W2_RUNS = ["members", *W2_LIBS]  # "members": the member list alone, no archive


def run_w2(
    counts: tuple[int, int], timing_count: int, repeats: int, log: Callable[[str], None]
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    runs: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    wanted = sorted({*counts, timing_count})
    for r in range(repeats):
        for count in wanted:
            for lib in W2_RUNS:
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--child", lib, str(count)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode:
                    sys.stderr.write(out.stderr)
                    raise SystemExit(f"W2 child {lib} x{count} failed (exit {out.returncode})")
                runs[lib, count].append(json.loads(out.stdout))
        log(f"W2 repeat {r + 1}/{repeats} done")
    return runs


# -- the table ----------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    what: str
    median: str
    spread: str = ""
    target: str = ""
    met: str = ""


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def add(self, *args: str) -> None:
        self.rows.append(Row(*args))

    def markdown(self) -> str:
        head = ["Workload", "Row", "Median", "Range (min-max)", "Target", "Met"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for row in self.rows:
            cells = [row.workload, row.what, row.median, row.spread, row.target, row.met]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def w1_table(table: Table, data: DataSet, times: dict[str, list[float]], workload: str) -> None:
    rates = {key: [data.total / MB / t for t in ts] for key, ts in times.items()}
    med = {key: statistics.median(r) for key, r in rates.items()}
    for key, label, _ in W1_ROWS:
        r = rates[key]
        table.add(workload, label, f"{med[key]:,.0f} MB/s", f"{min(r):,.0f}-{max(r):,.0f}")
    ratios = [
        ("zipware CRC computed / zipstream-ng", "zw-computed", "zs-ng", 2.0),
        ("zipware CRC computed / raw read+write", "zw-computed", "raw", 0.85),
        ("zipware CRC declared / raw read+write", "zw-declared", "raw", 0.90),
        ("zipware default (auto) / raw read+write", "zw-auto", "raw", None),
        (
            "zipware CRC computed / best stream-zip (buffered)",
            "zw-computed",
            "sz-64" if med["sz-64"] >= med["sz-32"] else "sz-32",
            None,
        ),
        ("zipware CRC declared / stream-zip declared", "zw-declared", "sz-64-declared", None),
    ]
    for label, num, den, target in ratios:
        value = med[num] / med[den]
        table.add(
            workload,
            label,
            f"{value:.2f}x",
            "",
            f">= {target:.2f}x" if target else "",
            verdict(value >= target) if target else "",
        )


def w2_table(
    table: Table,
    runs: dict[tuple[str, int], list[dict[str, Any]]],
    counts: tuple[int, int],
    timing_count: int,
) -> None:
    small, large = counts
    workload = f"W2 {small:,} / {large:,} x 100 B"
    n = f"{timing_count:,}"
    names = {
        "zipware": "zipware (member list)",
        "zipware-gen": "zipware (members from a generator)",
        "stream-zip": "stream-zip NO_COMPRESSION_64",
        "zipstream-ng": "zipstream-ng stored (sized)",
    }

    def med(lib: str, count: int, key: str) -> float:
        return statistics.median(run[key] for run in runs[lib, count])

    def spread(lib: str, key: str) -> str:
        values = [run[key] for run in runs[lib, timing_count]]
        return f"{min(values):.3f}-{max(values):.3f}"

    def slope(lib: str) -> float:
        return (med(lib, large, "growth") - med(lib, small, "growth")) / (large - small)

    def per_member(lib: str) -> str:
        return (
            f"growth / count: {med(lib, small, 'growth') / small:,.0f} B at {small:,}, "
            f"{med(lib, large, 'growth') / large:,.0f} B at {large:,}"
        )

    def timed(lib: str, what: str, key: str, target: float | None = None) -> None:
        value = med(lib, timing_count, key)
        table.add(
            workload,
            f"{names[lib]}: {what}, {n} members",
            f"{value:.3f} s",
            spread(lib, key),
            f"<= {target} s" if target else "",
            verdict(value <= target) if target else "",
        )

    def cpu(lib: str) -> None:
        table.add(
            workload,
            f"{names[lib]}: CPU time (user+sys) to make the members and stream all, {n}",
            f"{med(lib, timing_count, 'cpu_s'):.3f} s",
            spread(lib, "cpu_s"),
        )

    # The target (200 B) is for members that cost nothing themselves: members from a
    # generator, as stream-zip takes them. With a list, the caller's own Member objects
    # are most of the growth; the rows below split it.
    zw_slope = slope("zipware")
    table.add(
        workload,
        f"{names['zipware']}: peak RSS growth per member (slope)",
        f"{zw_slope:,.0f} B",
        per_member("zipware"),
    )
    list_slope = slope("members")
    table.add(
        workload,
        "of which the member list itself (Member + SeedSource + name + seed)",
        f"{list_slope:,.0f} B",
        per_member("members"),
    )
    table.add(
        workload,
        "of which zipware's plan + stream (slope minus the member list's)",
        f"{zw_slope - list_slope:,.0f} B",
    )
    timed("zipware", "plan (Archive(members))", "plan_s", 0.15)
    timed("zipware", "time to first byte", "ttfb_s", 0.2)
    timed("zipware", "stream all (plan + every byte)", "total_s")
    cpu("zipware")
    for lib in W2_LIBS[1:]:
        lib_slope = slope(lib)
        generated = lib == "zipware-gen"
        table.add(
            workload,
            f"{names[lib]}: peak RSS growth per member (slope)",
            f"{lib_slope:,.0f} B",
            per_member(lib),
            "<= 200 B" if generated else "",
            verdict(lib_slope <= 200) if generated else "",
        )
        if lib == "zipware-gen":
            timed(lib, "make members + plan", "plan_s")
        elif lib == "zipstream-ng":
            timed(lib, "add() every member + len()", "plan_s")
        timed(lib, "time to first byte", "ttfb_s")
        timed(lib, "stream all", "total_s")
        cpu(lib)

    # against the peers, count making the members too: they make theirs while streaming
    def made_and_streamed(lib: str) -> float:
        return med(lib, timing_count, "build_s") + med(lib, timing_count, "total_s")

    for lib in ("stream-zip", "zipstream-ng"):
        wall = made_and_streamed(lib) / made_and_streamed("zipware")
        cpu_ratio = med(lib, timing_count, "cpu_s") / med("zipware", timing_count, "cpu_s")
        table.add(
            workload,
            f"make + stream all, {n}: {lib} time / zipware time (>1: zipware faster)",
            f"{wall:.2f}x wall, {cpu_ratio:.2f}x CPU",
        )


# -- main ---------------------------------------------------------------------------------


def machine_note() -> str:
    commit = "?"
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--", "../zipware"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in zipware/"
    except (OSError, subprocess.CalledProcessError):
        pass
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"zipware {commit}, CRC-32 by {CRC_IMPLEMENTATION}; "
        f"zipstream-ng {version('zipstream-ng')}, stream-zip {version('stream-zip')}; "
        "load average (1/5/15 min) at the end: " + "/".join(f"{x:.2f}" for x in os.getloadavg())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--repeats", type=int, help="timed runs per row (default 3; W2 with --quick: 1)"
    )
    parser.add_argument("--data-dir", help="where W1's files live (default: a temp dir)")
    parser.add_argument("--files", type=int, default=8, help="W1 file count (default 8)")
    parser.add_argument("--file-mib", type=int, help="W1 file size in MiB (default 128)")
    parser.add_argument("--counts", help="W2 member counts, SMALL,LARGE (default 100000,1000000)")
    parser.add_argument("--only", choices=["w1", "w2"], help="run one workload")
    parser.add_argument("--json", help="also write the raw timings to this file")
    parser.add_argument("--child", nargs=2, metavar=("LIB", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(w2_child(args.child[0], int(args.child[1]))))
        return 0

    repeats = args.repeats or 3
    # W2 runs every (library, count) in its own process: the smoke run does each once
    w2_repeats = args.repeats or (1 if args.quick else 3)
    file_mib = args.file_mib or (16 if args.quick else 128)
    if args.counts:
        small, large = (int(c) for c in args.counts.split(","))
    else:
        small, large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    timing_count = 100_000

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    table = Table()
    raw: dict[str, Any] = {}
    if args.only != "w2":
        own_dir = args.data_dir is None
        directory = tempfile.mkdtemp(prefix="zipware-bench-") if own_dir else args.data_dir
        try:
            log(f"W1: writing/warming {args.files} x {file_mib} MiB in {directory}")
            data = make_data(directory, args.files, file_mib * MiB)
            times = run_w1(data, repeats, log)
        finally:
            if own_dir:
                shutil.rmtree(directory, ignore_errors=True)
        w1_table(table, data, times, f"W1 {args.files} x {file_mib} MiB")
        raw["w1"] = times
    if args.only != "w1":
        log(f"W2: {small:,} and {large:,} members, {w2_repeats} runs each, fresh processes")
        runs = run_w2((small, large), timing_count, w2_repeats, log)
        w2_table(table, runs, (small, large), timing_count)
        raw["w2"] = {f"{lib}@{count}": r for (lib, count), r in runs.items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)

    print(
        f"zipware benchmark: medians of {repeats} runs (W2: {w2_repeats}); "
        "MB = 10^6 bytes of member data."
    )
    print(machine_note())
    print()
    print(table.markdown())
    print()
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
