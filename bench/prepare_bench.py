"""Decode and prepare a 100,000-entry manifest of local files; target <= 0.5 s (median).

    python bench/prepare_bench.py                  # 100 dirs x 1000 files of 100 bytes
    python bench/prepare_bench.py --repeats 5 --dirs 10 --files 1000

The files are written once under ``--data-dir`` (default /tmp/zipware-prepare-bench) and
reused by later runs. Each timed run is ``prepare(json_bytes, policy)``: decoding and
validating the JSON, resolving and stat'ing every path against the root, planning the archive
and computing the fingerprint. A warm-up run comes first (page cache, dentry cache), so the
figure is the warm-cache cost a server pays per request. The machine has 2 cores: the load
average is printed beside the result, since other processes show up directly in wall time;
CPU time (user + sys of this process) is printed too, as it is much less disturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from zipware.manifest import decode_files
from zipware.policy import Policy
from zipware.prepare import prepare

TARGET_S = 0.5
FILE_SIZE = 100


def make_tree(root: Path, dirs: int, files: int) -> None:
    """``dirs`` folders of ``files`` files of 100 bytes, written once (a marker says so)."""
    marker = root / f".complete-{dirs}x{files}"
    if marker.exists():
        return
    for d in range(dirs):
        folder = root / f"d{d:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            (folder / f"f{f:04d}.bin").write_bytes(f"{d:03d}/{f:04d}".encode().ljust(FILE_SIZE))
    marker.touch()


def manifest_bytes(dirs: int, files: int) -> bytes:
    entries = [
        {"name": f"d{d:03d}/f{f:04d}.bin", "path": f"d{d:03d}/f{f:04d}.bin"}
        for d in range(dirs)
        for f in range(files)
    ]
    return json.dumps({"version": 1, "filename": "bench.zip", "entries": entries}).encode()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="/tmp/zipware-prepare-bench")
    parser.add_argument("--dirs", type=int, default=100)
    parser.add_argument("--files", type=int, default=1000, help="files per directory")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    root = Path(args.data_dir)
    started = time.perf_counter()
    make_tree(root, args.dirs, args.files)
    made = time.perf_counter() - started
    body = manifest_bytes(args.dirs, args.files)
    count = args.dirs * args.files
    policy = Policy(roots=(str(root),), max_manifest_bytes=len(body))

    download = prepare(body, policy)  # warm-up, and a check of the result
    assert len(download.archive.plan) == count

    # the floor under any Python implementation: one os.lstat per file, nothing else
    reals = [f"{root}/{entry['path']}" for entry in json.loads(body)["entries"]]
    walls, cpus, decodes, stats = [], [], [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), cpu_seconds()
        prepare(body, policy)
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
        t0 = time.perf_counter()
        assert decode_files(body) is not None  # the decoder prepare uses for this manifest
        decodes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        list(map(os.lstat, reals))
        stats.append(time.perf_counter() - t0)

    wall = statistics.median(walls)
    load = os.getloadavg()
    print(
        f"tree: {count:,} files of {FILE_SIZE} B under {root} ({'made' if made > 1 else 'reused'}"
        f" in {made:.1f} s); manifest {len(body):,} bytes"
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"decode + prepare, {count:,} path entries, median of {args.repeats}: {wall:.3f} s")
    print(f"  runs: {', '.join(f'{w:.3f}' for w in walls)} s wall")
    print(f"  CPU (user+sys) median: {statistics.median(cpus):.3f} s")
    print(f"  of which decoding alone (median): {statistics.median(decodes):.3f} s")
    print(f"  of which os.lstat of every file alone (median): {statistics.median(stats):.3f} s")
    print(f"  load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    verdict = "yes" if wall <= TARGET_S else "NO"
    print(f"target <= {TARGET_S} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
