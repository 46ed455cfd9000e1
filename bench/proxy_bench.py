"""zipware proxy benchmark: archive throughput against a pass-through, and per-request cost.

Real processes on loopback, as deployed: the upstream is tests/proxy_upstream.py under
uvicorn (a backend that knows nothing of zipware), the proxy is
``uvicorn --factory zipware.proxy:app_from_environment``, one worker each.

* Throughput. The upstream serves 8 files of 128 MiB of random bytes and one 1 GiB file
  (the same bytes, concatenated). Through the proxy, a client downloads the 1 GiB static
  file (passed through untouched) and the 1 GiB archive of the 8 files (a manifest of
  ``url`` entries with their sizes; once with their CRC-32s declared, once without). The
  ratio archive / pass-through is the proxy's cost of making a ZIP out of the stream
  (target >= 0.8). Rows are interleaved run by run, so drift hits them alike; the median
  of ``--repeats`` runs is shown. MB/s is 10^6 bytes of body per second, first request
  byte to last response byte, read by a Python client in 1 MiB ``readinto`` calls. The
  proxy process's CPU time per run is shown too: contention on a small machine moves wall
  times much more than it moves CPU time.
* Overhead on a small non-manifest answer: requests per second straight to the upstream
  and through the proxy, with ``wrk`` if installed (2 threads, ``--connections``
  connections, ``--seconds`` s), otherwise an httpx client with that many concurrent
  connections.
* HEAD of the 1 GiB static file through the proxy: how fast the client has its answer,
  and how much CPU the proxy and the upstream spend on it until they are idle again.

Run ``python bench/proxy_bench.py`` (about two minutes; ``--data-dir DIR`` keeps the 2 GiB
of files for later runs). One markdown table is printed, with the machine's core count and
load average before and after: on a machine with 2 cores, anything else running shows up.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MIB = 1024 * 1024
FILES = 8
FILE_MIB = 128
READ = MIB


# -- the data -------------------------------------------------------------------------------


def make_data(root: Path) -> list[tuple[str, int, int]]:
    """8 random files and their concatenation under ``root/html``: [(name, size, crc)]."""
    html = root / "html"
    html.mkdir(parents=True, exist_ok=True)
    index = root / "files.json"
    size = FILE_MIB * MIB
    if index.exists():
        known = [tuple(x) for x in json.loads(index.read_text())]
        present = all((html / n).is_file() and (html / n).stat().st_size == s for n, s, _ in known)
        if present and (html / "static-1g.bin").is_file():
            return known  # type: ignore[return-value]
    rng = random.Random(20240601)
    parts = []
    with open(html / "static-1g.bin", "wb") as whole:
        for i in range(FILES):
            name = f"part-{i}.bin"
            crc = 0
            with open(html / name, "wb") as f:
                for _ in range(FILE_MIB // 8):
                    block = rng.randbytes(8 * MIB)
                    crc = zlib.crc32(block, crc)
                    f.write(block)
                    whole.write(block)
            parts.append((name, size, crc))
    index.write_text(json.dumps(parts))
    return parts


def write_manifests(root: Path, upstream: str, parts: list[tuple[str, int, int]]) -> None:
    manifests = root / "manifests"
    manifests.mkdir(exist_ok=True)
    for variant, with_crc in (("crc", True), ("nocrc", False)):
        entries = []
        for name, size, crc in parts:
            entry: dict[str, object] = {"name": name, "url": f"{upstream}/{name}", "size": size}
            if with_crc:
                entry["crc32"] = f"{crc:08x}"
            entries.append(entry)
        doc = {"version": 1, "filename": "bench.zip", "entries": entries}
        (manifests / f"bench-{variant}.json").write_text(json.dumps(doc))


def warm(root: Path) -> None:
    """Read every file once so that every row reads from the page cache."""
    buf = bytearray(8 * MIB)
    for path in sorted((root / "html").iterdir()):
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


# -- the servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], log: Path):
        self.name, self.port, self.log = name, port, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def uvicorn(target: str, port: int, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        *options,
        target,
    ]


# -- the measurements -----------------------------------------------------------------------


def download(port: int, path: str, expected: int) -> float:
    """Seconds to receive the whole body (checked against Content-Length and ``expected``)."""
    buf = bytearray(READ)
    view = memoryview(buf)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {response.read()[:300]!r}")
        length = int(response.getheader("Content-Length", "-1"))
        got = 0
        while n := response.readinto(view):
            got += n
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    if got != length or (expected and got < expected):
        raise RuntimeError(f"GET {path}: {got} bytes, Content-Length {length}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pids: list[int], quiet: float = 0.02, step: float = 0.5) -> None:
    """Until none of ``pids`` used more than ``quiet`` s of CPU during ``step`` s."""
    last = [cpu_seconds(p) for p in pids]
    while True:
        time.sleep(step)
        now = [cpu_seconds(p) for p in pids]
        if all(b - a <= quiet for a, b in zip(last, now)):
            return
        last = now


def head(port: int, path: str, watch: list[int]) -> tuple[float, list[float]]:
    """A HEAD's time to answer, and the CPU each watched process spent until idle again."""
    wait_idle(watch)
    before = [cpu_seconds(p) for p in watch]
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        conn.request("HEAD", path)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    answered = time.perf_counter() - started
    wait_idle(watch)
    return answered, [cpu_seconds(p) - b for p, b in zip(watch, before)]


def requests_per_second(port: int, path: str, connections: int, seconds: float) -> float:
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run(
            [wrk, "-t2", f"-c{connections}", f"-d{seconds:g}s", f"http://{HOST}:{port}{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        errors = [line for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
        if errors:
            print(f"wrk on :{port}{path}: {'; '.join(errors)}", file=sys.stderr)
        line = next(line for line in out.splitlines() if line.startswith("Requests/sec:"))
        return float(line.split()[1])
    return asyncio.run(_httpx_rps(port, path, connections, seconds))


async def _httpx_rps(port: int, path: str, connections: int, seconds: float) -> float:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits) as client:
        deadline = time.perf_counter() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await client.get(path)
                response.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.perf_counter() - started)


def median_mbps(times: list[float], size: int) -> tuple[float, float, float]:
    speeds = sorted(size / t / 1e6 for t in times)
    return statistics.median(speeds), speeds[0], speeds[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="keep the files here and reuse them")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    own_dir = args.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="zipware-proxy-bench-")) if own_dir else args.data_dir
    root.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    try:
        parts = make_data(root)
        total = sum(size for _, size, _ in parts)
        up_port, proxy_port = free_port(), free_port()
        upstream = f"http://{HOST}:{up_port}"
        write_manifests(root, upstream, parts)
        warm(root)

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        up_env = {**env, "UPSTREAM_ROOT": str(root)}
        proxy_env = {**env, "ZIPWARE_PROXY_CONFIG": json.dumps({"upstream": upstream})}
        servers = [
            Server(
                "upstream",
                uvicorn("proxy_upstream:app", up_port, "--app-dir", str(REPO / "tests")),
                up_port,
                up_env,
                root / "upstream.log",
            ),
            Server(
                "proxy",
                uvicorn(
                    "zipware.proxy:app_from_environment",
                    proxy_port,
                    "--factory",
                    "--no-server-header",
                    "--no-date-header",
                ),
                proxy_port,
                proxy_env,
                root / "proxy.log",
            ),
        ]
        for s in servers:
            s.wait()

        proxy_pid = servers[1].proc.pid
        upstream_pid = servers[0].proc.pid

        def timed(port: int, path: str) -> Callable[[], tuple[float, float]]:
            def run() -> tuple[float, float]:
                before = cpu_seconds(proxy_pid)
                elapsed = download(port, path, total)
                return elapsed, cpu_seconds(proxy_pid) - before

            return run

        rows: dict[str, tuple[Callable[[], tuple[float, float]], list[tuple[float, float]]]] = {
            "1 GiB static file, straight from the upstream": (
                timed(up_port, "/static-1g.bin"),
                [],
            ),
            "1 GiB static file through the proxy (pass-through)": (
                timed(proxy_port, "/static-1g.bin"),
                [],
            ),
            "1 GiB archive (8 x 128 MiB url entries, CRC declared)": (
                timed(proxy_port, "/manifests/bench-crc.json"),
                [],
            ),
            "1 GiB archive (8 x 128 MiB url entries, no CRC)": (
                timed(proxy_port, "/manifests/bench-nocrc.json"),
                [],
            ),
        }
        for run, _ in rows.values():  # once untimed: connections, caches, checks
            run()
        for _ in range(args.repeats):
            for run, times in rows.values():
                times.append(run())

        speeds = {
            label: median_mbps([t for t, _ in runs], total) for label, (_, runs) in rows.items()
        }
        proxy_cpu = {
            label: statistics.median(c for _, c in runs) for label, (_, runs) in rows.items()
        }
        labels = list(rows)
        passthrough = speeds[labels[1]][0]

        rps_direct = requests_per_second(up_port, "/small", args.connections, args.seconds)
        rps_proxy = requests_per_second(proxy_port, "/small", args.connections, args.seconds)
        head_direct, _ = head(up_port, "/static-1g.bin", [upstream_pid])
        head_proxy, (head_proxy_cpu, head_upstream_cpu) = head(
            proxy_port, "/static-1g.bin", [proxy_pid, upstream_pid]
        )
        load_after = os.getloadavg()
    finally:
        for s in servers:
            s.stop()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)

    tool = "wrk -t2" if shutil.which("wrk") else "httpx"
    print(
        f"zipware proxy bench: {os.cpu_count()} cores, load average "
        f"{load_before[0]:.2f} before / {load_after[0]:.2f} after (1 min), "
        f"Python {sys.version.split()[0]}, median of {args.repeats} runs\n"
    )
    print("| measurement | result | range / note |")
    print("|---|---:|---|")
    for label in labels:
        median, low, high = speeds[label]
        cpu = f"; proxy CPU {proxy_cpu[label]:.1f} s per GiB" if label != labels[0] else ""
        print(f"| {label} | {median:,.0f} MB/s | {low:,.0f} - {high:,.0f}{cpu} |")
    for label in labels[2:]:
        ratio = speeds[label][0] / passthrough
        verdict = "met" if ratio >= 0.8 else "NOT met"
        print(
            f"| ratio: {label.split('(')[1].rstrip(')')} / pass-through | {ratio:.2f} "
            f"| target >= 0.8: {verdict} |"
        )
    print(
        f"| small response straight from the upstream | {rps_direct:,.0f} req/s "
        f"| {tool}, {args.connections} connections, {args.seconds:g} s |"
    )
    print(
        f"| small response through the proxy | {rps_proxy:,.0f} req/s "
        f"| {rps_proxy / rps_direct:.2f} of direct |"
    )
    print(
        f"| HEAD of the 1 GiB static file through the proxy | answered in "
        f"{head_proxy * 1000:,.0f} ms (straight: {head_direct * 1000:,.1f} ms) "
        f"| then, until idle: proxy CPU {head_proxy_cpu:.1f} s, upstream CPU "
        f"{head_upstream_cpu:.1f} s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
