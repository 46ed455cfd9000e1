"""zipware through real HTTP servers: archive throughput against a static file, and memory.

Real processes on loopback, as deployed. This file is also the servers' app module
(``--app-dir bench``): ``asgi_app`` is a tiny starlette app wrapped in
``zipware.asgi.ZipMiddleware`` (run by uvicorn, one process), ``wsgi_app`` a tiny werkzeug
app wrapped in ``zipware.wsgi.ZipMiddleware`` (run by gunicorn). Each app serves the static
file (starlette ``FileResponse`` / werkzeug ``send_file``) and the manifests
(``X-Zip-Manifest: 1``, ``path`` entries relative to the data directory, the only root).

* Throughput. 8 files of 128 MiB of random bytes (written once, read once so the page cache
  holds them) and their 1 GiB concatenation. Each server sends the 1 GiB static file and
  the 1 GiB archive of the 8 files: with their CRC-32s declared (stored), without (default
  storage ``auto``, which is then stored deflate blocks), and without but ``"storage":
  "store"`` (CRC computed while streaming, data descriptors). gunicorn runs ``-w 2 -k sync``.
  The client is a plain socket reader in its own process (1 MiB ``recv_into``; curl's
  16 KiB reads top out below sendfile, ``--client curl`` uses it anyway): MB/s is 10^6
  bytes of body per second from connect to the last byte; every download's byte count is
  checked against its Content-Length and the size first seen. Rows run once untimed,
  then interleaved run by run ``--repeats`` times (median shown, range beside it); the
  server tree's CPU time per download is shown too. Target: archive / static file of the
  same server >= 0.8.
* Memory. 50 concurrent downloads (``--clients``) of a 64 MiB archive (4 x 16 MiB, no CRC
  declared) from uvicorn (one process) and from gunicorn ``-w 2 -k gthread --threads 25``
  (50 requests served at once; sync workers serve one each). The peak-RSS marks of the
  server's processes are reset (``/proc/PID/clear_refs``) just before; every 50 ms the
  VmRSS of every process in the server's process group is read and summed. Reported: the
  peak of that sum (target < 150 MiB), each process's VmHWM, and the peak of the summed
  PSS (shared pages split between master and workers). All 50 must answer 200 with as many
  bytes as Content-Length and the archive's size (50 ``curl`` processes). Before all this,
  the 64 MiB archive (with and without CRCs) is downloaded from each server to a file and
  checked with ``zipfile`` (every member's CRC).

Run ``python bench/http_bench.py`` (about 2 minutes, plus ~20 s to write the files;
``--data-dir DIR`` keeps the 2.1 GiB of files for later runs) or ``--quick`` (8 x 16 MiB,
50 x 16 MiB archives; about 20 s).
One markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
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
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MIB = 1024 * 1024
CONFIG_ENV = "ZIPWARE_HTTP_BENCH"
SAMPLE_EVERY = 0.05
READY_CURL = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"]


# -- the apps (imported by the servers) -----------------------------------------------------


def _config() -> dict[str, Any]:
    return json.loads(Path(os.environ[CONFIG_ENV]).read_text())


def asgi_app() -> Any:
    """uvicorn --factory http_bench:asgi_app"""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from zipware.asgi import ZipMiddleware

    config = _config()
    bodies = {k: json.dumps(v).encode() for k, v in config["manifests"].items()}

    async def static(request: Request) -> Response:
        return FileResponse(config["static"], media_type="application/octet-stream")

    async def manifest(request: Request) -> Response:
        body = bodies.get(request.path_params["name"])
        if body is None:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(body, media_type="application/json", headers={"X-Zip-Manifest": "1"})

    async def ready(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    inner = Starlette(
        routes=[
            Route("/static", static),
            Route("/m/{name}", manifest),
            Route("/ready", ready),
        ]
    )
    return ZipMiddleware(inner, roots=[config["root"]])


def wsgi_app() -> Any:
    """gunicorn 'http_bench:wsgi_app()'"""
    from werkzeug.exceptions import NotFound
    from werkzeug.utils import send_file
    from werkzeug.wrappers import Request, Response
    from werkzeug.wsgi import FileWrapper

    from zipware.wsgi import ZipMiddleware

    config = _config()
    bodies = {k: json.dumps(v).encode() for k, v in config["manifests"].items()}
    static_path = config["static"]

    @Request.application  # type: ignore[arg-type]
    def inner(request: Request) -> Any:
        path = request.path
        if path == "/static":  # wsgi.file_wrapper: gunicorn sends it with sendfile(2)
            return send_file(static_path, request.environ, mimetype="application/octet-stream")
        if path == "/static-py":  # the same bytes read and written by Python, no sendfile
            f = open(static_path, "rb", buffering=0)  # noqa: SIM115 - closed by the wrapper
            size = os.fstat(f.fileno()).st_size
            return Response(
                FileWrapper(f, 256 * 1024),
                mimetype="application/octet-stream",
                headers={"Content-Length": str(size)},
                direct_passthrough=True,
            )
        if path.startswith("/m/") and path[3:] in bodies:
            return Response(
                bodies[path[3:]], mimetype="application/json", headers={"X-Zip-Manifest": "1"}
            )
        if path == "/ready":
            return Response("ok\n", mimetype="text/plain")
        return NotFound()

    return ZipMiddleware(inner, roots=[config["root"]])


# -- the data -------------------------------------------------------------------------------


def make_files(files: Path, prefix: str, count: int, mib: int, rng: random.Random) -> list[Any]:
    """``count`` random files of ``mib`` MiB (reused when present): [(name, size, crc)]."""
    index = files / f"{prefix}.json"
    size = mib * MIB
    if index.exists():
        known = [tuple(x) for x in json.loads(index.read_text())]
        if len(known) == count and all(
            (files / n).is_file() and (files / n).stat().st_size == s == size for n, s, _ in known
        ):
            return known
    parts = []
    block = min(8, mib) * MIB
    for i in range(count):
        name = f"{prefix}-{i}.bin"
        crc = 0
        with open(files / name, "wb") as f:
            for _ in range(size // block):
                data = rng.randbytes(block)
                crc = zlib.crc32(data, crc)
                f.write(data)
        parts.append((name, size, crc))
    index.write_text(json.dumps(parts))
    return parts


def make_static(files: Path, parts: list[Any]) -> Path:
    """The parts concatenated: the same bytes as one file."""
    static = files / "static.bin"
    total = sum(s for _, s, _ in parts)
    if static.is_file() and static.stat().st_size == total:
        return static
    with open(static, "wb") as out:
        for name, _, _ in parts:
            with open(files / name, "rb") as f:
                shutil.copyfileobj(f, out, 8 * MIB)
    return static


def manifest(parts: list[Any], *, crc: bool, storage: str | None = None) -> dict[str, Any]:
    entries = []
    for name, _, c in parts:
        entry: dict[str, Any] = {"name": name, "path": name}
        if crc:
            entry["crc32"] = f"{c:08x}"
        if storage:
            entry["storage"] = storage
        entries.append(entry)
    return {"version": 1, "filename": "bench.zip", "entries": entries}


def warm(files: Path) -> None:
    """Read every file once so that every download reads from the page cache."""
    buf = bytearray(8 * MIB)
    for path in sorted(files.glob("*.bin")):
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


# -- the process tree -----------------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    """Every live process in process group ``pgid``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def status_kib(pid: int, *keys: str) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in keys:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Sums VmRSS (and PSS) over a process group every 50 ms; keeps the peaks."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.stop_event = threading.Event()
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self.seen: set[int] = set()

    def run(self) -> None:
        self.began = time.perf_counter()
        while not self.stop_event.is_set():
            pids = group_pids(self.pgid)
            self.seen.update(pids)
            rss = sum(status_kib(p, "VmRSS").get("VmRSS", 0) for p in pids)
            pss = sum(pss_kib(p) for p in pids)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.samples += 1
            self.stop_event.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.duration = time.perf_counter() - self.began


# -- the servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, procs: int):
        self.name, self.log, self.procs = name, log, procs
        self.port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
        if not self.port:
            self.port = int(argv[argv.index("--bind") + 1].rpartition(":")[2])
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: master and workers
            )

    @property
    def pids(self) -> list[int]:
        return group_pids(self.proc.pid)

    def wait(self, timeout: float = 60) -> None:
        """Until all its processes exist and one answers /ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()}")
            if len(self.pids) >= self.procs:
                code = subprocess.run(
                    [*READY_CURL, self.url("/ready")],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                if code == "200":
                    time.sleep(0.5)  # let the other workers finish importing the app
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


def start_uvicorn(root: Path, env: dict[str, str]) -> Server:
    port = free_port()
    argv = [
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
        "--app-dir",
        str(REPO / "bench"),
        "--factory",
        "http_bench:asgi_app",
    ]
    return Server("uvicorn", argv, env, root / "uvicorn.log", procs=1)


def start_gunicorn(root: Path, env: dict[str, str], options: list[str], workers: int) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{HOST}:{port}",
        "--chdir",
        str(REPO / "bench"),
        "--log-level",
        "warning",
        "--timeout",
        "300",
        "-w",
        str(workers),
        *options,
        "http_bench:wsgi_app()",
    ]
    log_file = root / f"gunicorn-{options[1]}.log"
    return Server("gunicorn", argv, env, log_file, procs=workers + 1)


# -- the client -----------------------------------------------------------------------------

CURL_FORMAT = "%{http_code} %{size_download} %{time_total} %header{content-length}"


def curl_argv(url: str, out: str = "/dev/null") -> list[str]:
    return ["curl", "-sS", "-o", out, "--max-time", "300", "-w", CURL_FORMAT, url]


def check(result: str, url: str, expected: int | None) -> tuple[int, float]:
    """(bytes, seconds) of a finished curl, after checking its status and sizes."""
    fields = result.split()
    if len(fields) != 4:
        raise RuntimeError(f"GET {url}: curl said {result!r}")
    code, size, seconds, length = fields
    if code != "200":
        raise RuntimeError(f"GET {url}: status {code}")
    if int(size) != int(length):
        raise RuntimeError(f"GET {url}: {size} bytes, Content-Length {length}")
    if expected is not None and int(size) != expected:
        raise RuntimeError(f"GET {url}: {size} bytes, expected {expected}")
    return int(size), float(seconds)


def download(url: str, expected: int | None = None, out: str = "/dev/null") -> tuple[int, float]:
    done = subprocess.run(curl_argv(url, out), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"GET {url}: curl exit {done.returncode}: {done.stderr.strip()}")
    return check(done.stdout, url, expected)


def raw_read(port: int, path: str) -> str:
    """GET on a plain socket, 1 MiB ``recv_into`` calls: "status bytes seconds length".

    Run in its own process (``--read PORT PATH``) as the throughput client: curl reads in
    16 KiB calls and tops out near 2 GB/s on loopback, below sendfile(2).
    """
    buf = bytearray(MIB)
    view = memoryview(buf)
    started = time.perf_counter()
    with socket.create_connection((HOST, port)) as s:
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
        s.sendall(request.encode())
        head = bytearray()
        while (end := head.find(b"\r\n\r\n")) < 0:
            n = s.recv_into(buf)
            if not n:
                return f"000 {len(head)} 0 -1"
            head += view[:n]
        lines = head[:end].decode("latin-1").split("\r\n")
        status, length = lines[0].split()[1], "-1"
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = value.strip()
        got = len(head) - end - 4
        while n := s.recv_into(buf):
            got += n
    return f"{status} {got} {time.perf_counter() - started:.6f} {length}"


def fetch(server: Server, path: str, expected: int, client: str) -> tuple[int, float]:
    """One timed download by ``client`` (raw: :func:`raw_read` in a child process)."""
    if client == "curl":
        return download(server.url(path), expected)
    argv = [sys.executable, __file__, "--read", str(server.port), path]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"GET {path}: reader failed: {done.stderr.strip()}")
    return check(done.stdout, server.url(path), expected)


def verify_archive(url: str, names: list[str], tmp: Path) -> int:
    """Download the archive to a file and check every member's CRC with zipfile."""
    target = tmp / "check.zip"
    size, _ = download(url, out=str(target))
    with zipfile.ZipFile(target) as z:
        if z.namelist() != names:
            raise RuntimeError(f"{url}: members {z.namelist()}")
        bad = z.testzip()
        if bad is not None:
            raise RuntimeError(f"{url}: bad CRC in {bad}")
    target.unlink()
    return size


def throughput(
    server: Server, rows: dict[str, str], repeats: int, expected: dict[str, int], client: str
) -> dict[str, list[tuple[float, float]]]:
    """{row: [(MB/s, server CPU s)]}: each row once untimed, then interleaved runs."""
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in rows}
    for path in rows.values():
        fetch(server, path, expected[path], client)
    for r in range(repeats):
        for label, path in rows.items():
            pids = server.pids
            before = cpu_seconds(pids)
            size, seconds = fetch(server, path, expected[path], client)
            cpu = cpu_seconds(pids) - before
            results[label].append((size / seconds / 1e6, cpu))
            log(f"  {server.name} run {r + 1}: {label}: {size / seconds / 1e6:,.0f} MB/s")
    return results


def concurrent(server: Server, path: str, clients: int, expected: int) -> dict[str, Any]:
    """``clients`` curls at once; the server tree's memory meanwhile."""
    pids = server.pids
    idle = sum(status_kib(p, "VmRSS").get("VmRSS", 0) for p in pids)
    for pid in pids:  # reset the peak-RSS marks (VmHWM) to the current RSS
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    sampler = Sampler(server.proc.pid)
    sampler.start()
    time.sleep(0.2)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            curl_argv(server.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(clients)
    ]
    errors = []
    for p in procs:
        out, err = p.communicate()
        try:
            if p.returncode != 0:
                raise RuntimeError(f"curl exit {p.returncode}: {err.strip()}")
            check(out, path, expected)
        except RuntimeError as exc:
            errors.append(str(exc))
    wall = time.perf_counter() - started
    time.sleep(0.2)
    per_process = {pid: status_kib(pid, "VmHWM").get("VmHWM", 0) for pid in sorted(sampler.seen)}
    sampler.stop()
    return {
        "idle_kib": idle,
        "peak_rss_kib": sampler.peak_rss,
        "peak_pss_kib": sampler.peak_pss,
        "hwm_kib": per_process,
        "samples": sampler.samples,
        "interval_ms": 1000 * sampler.duration / max(sampler.samples, 1),
        "errors": errors,
        "wall": wall,
        "bytes": clients * expected,
        "master": server.proc.pid,
    }


# -- the run --------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "zipware"],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted changes in zipware/' if dirty else ''}"


def versions() -> str:
    from importlib.metadata import version

    names = ("uvicorn", "h11", "httptools", "uvloop", "starlette", "gunicorn", "werkzeug", "anyio")
    out = []
    for name in names:
        try:
            out.append(f"{name} {version(name)}")
        except Exception:
            if name in ("httptools", "uvloop"):
                out.append(f"no {name}")
    return ", ".join(out)


def mbps(runs: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    speeds = sorted(s for s, _ in runs)
    return statistics.median(speeds), speeds[0], speeds[-1], statistics.median(c for _, c in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 x 16 MiB; 50 x 16 MiB archives")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="keep the files here and reuse them")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--threads", type=int, default=25, help="gthread threads per worker")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--client",
        choices=("raw", "curl"),
        default="raw",
        help="throughput client: a socket reader in a child process (default), or curl",
    )
    parser.add_argument("--read", nargs=2, metavar=("PORT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.read:  # the throughput client, in its own process
        print(raw_read(int(args.read[0]), args.read[1]))
        return 0
    big_mib, small_mib = (16, 4) if args.quick else (128, 16)
    n_big, n_small = 8, 4

    load_before = os.getloadavg()
    began = time.perf_counter()
    own_dir = args.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="zipware-http-bench-")) if own_dir else args.data_dir
    root.mkdir(parents=True, exist_ok=True)
    files = root / "files"
    files.mkdir(exist_ok=True)
    servers: list[Server] = []
    try:
        log(f"data in {files}")
        rng = random.Random(20240601)
        big = make_files(files, f"big{big_mib}", n_big, big_mib, rng)
        small = make_files(files, f"small{small_mib}", n_small, small_mib, rng)
        static = make_static(files, big)
        warm(files)
        manifests = {
            "big-crc": manifest(big, crc=True),
            "big-nocrc": manifest(big, crc=False),
            "big-nocrc-store": manifest(big, crc=False, storage="store"),
            "small-crc": manifest(small, crc=True),
            "small-nocrc": manifest(small, crc=False),
        }
        config = root / "config.json"
        config.write_text(
            json.dumps({"root": str(files), "static": str(static), "manifests": manifests})
        )
        env = dict(os.environ)
        # the zipware of this work tree, whatever is installed
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), str(REPO / "bench"), env.get("PYTHONPATH")])
        )
        env[CONFIG_ENV] = str(config)
        total = sum(s for _, s, _ in big)
        gib = f"{total / 2**30:g} GiB" if total >= 2**30 else f"{total // MIB} MiB"
        big_shape = f"{n_big} x {big_mib} MiB"
        rows = {
            f"{gib} static file": "/static",
            f"{gib} archive, {big_shape}, CRC declared (stored)": "/m/big-crc",
            f"{gib} archive, {big_shape}, no CRC (default auto: deflate-stored)": "/m/big-nocrc",
            f"{gib} archive, {big_shape}, no CRC, storage store": "/m/big-nocrc-store",
        }
        labels = list(rows)
        wsgi_rows = {
            labels[0]: "/static",
            f"{gib} static file read by Python (no sendfile; no target)": "/static-py",
            **{label: rows[label] for label in labels[1:]},
        }

        results: dict[str, Any] = {"throughput": {}, "memory": {}}
        tmp = root / "tmp"
        tmp.mkdir(exist_ok=True)
        small_names = [n for n, _, _ in small]

        # -- 1. throughput ---------------------------------------------------------------
        log("uvicorn: throughput")
        uv = start_uvicorn(root, env)
        servers.append(uv)
        uv.wait()
        sizes = {path: download(uv.url(path))[0] for path in rows.values()}
        sizes["/static-py"] = total
        for path in ("/m/small-crc", "/m/small-nocrc"):
            verify_archive(uv.url(path), small_names, tmp)
        results["throughput"]["uvicorn"] = throughput(uv, rows, args.repeats, sizes, args.client)

        log(f"gunicorn -w {args.workers} -k sync: throughput")
        gs = start_gunicorn(root, env, ["-k", "sync"], args.workers)
        servers.append(gs)
        gs.wait()
        for path in ("/m/small-crc", "/m/small-nocrc"):
            verify_archive(gs.url(path), small_names, tmp)
        results["throughput"]["gunicorn"] = throughput(
            gs, wsgi_rows, args.repeats, sizes, args.client
        )
        gs.stop()
        servers.remove(gs)

        # -- 2. memory under 50 concurrent downloads ----------------------------------------
        small_size = download(uv.url("/m/small-nocrc"))[0]
        log(f"uvicorn: {args.clients} concurrent downloads of {small_size:,} bytes")
        results["memory"]["uvicorn"] = concurrent(uv, "/m/small-nocrc", args.clients, small_size)
        uv.stop()
        servers.remove(uv)
        log(f"gunicorn -w {args.workers} -k gthread --threads {args.threads}: concurrent")
        gt = start_gunicorn(
            root, env, ["-k", "gthread", "--threads", str(args.threads)], args.workers
        )
        servers.append(gt)
        gt.wait()
        results["memory"]["gunicorn"] = concurrent(gt, "/m/small-nocrc", args.clients, small_size)
        gt.stop()
        servers.remove(gt)
        load_after = os.getloadavg()
        elapsed = time.perf_counter() - began
        for s in servers:
            s.stop()
        for server_log in sorted(root.glob("*.log")):
            text = server_log.read_text(errors="replace").strip()
            if text:
                log(f"--- {server_log.name} (last lines)\n" + "\n".join(text.splitlines()[-20:]))
    finally:
        for s in servers:
            s.stop()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)

    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    report(
        results,
        rows=labels,
        wsgi_rows=list(wsgi_rows),
        args=args,
        small_shape=f"{n_small} x {small_mib} MiB",
        small_size=small_size,
        load=(load_before, load_after),
        elapsed=elapsed,
    )
    return 0


def report(
    results: dict[str, Any],
    *,
    rows: list[str],
    wsgi_rows: list[str],
    args: argparse.Namespace,
    small_shape: str,
    small_size: int,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    elapsed: float,
) -> None:
    (b1, b5, _), (a1, a5, _) = load
    print(
        f"zipware HTTP bench ({'quick' if args.quick else 'full'}), zipware {git_state()}: "
        f"{os.cpu_count()} CPUs, load average (1 / 5 min) {b1:.2f} / {b5:.2f} before, "
        f"{a1:.2f} / {a5:.2f} after; Python {sys.version.split()[0]}; {versions()}; "
        f"client {args.client}; median of {args.repeats}; {elapsed:.0f} s\n"
    )
    print("| server | measurement | result | range / note | target |")
    print("|---|---|---:|---|---|")
    servers = {
        "uvicorn": ("uvicorn (1 process)", rows),
        "gunicorn": (f"gunicorn -w {args.workers} -k sync", wsgi_rows),
    }
    for key, (title, labels) in servers.items():
        runs = results["throughput"][key]
        static_speed = mbps(runs[labels[0]])[0]
        for label in labels:
            median, low, high, cpu = mbps(runs[label])
            how = "FileResponse" if key == "uvicorn" else "send_file (sendfile)"
            name = f"{label} ({how})" if label == labels[0] else label
            print(
                f"| {title} | {name} | {median:,.0f} MB/s | {low:,.0f} - {high:,.0f}; "
                f"server CPU {cpu:.2f} s | |"
            )
        for label in labels[1:]:
            if "archive" not in label:
                continue
            ratio = mbps(runs[label])[0] / static_speed
            what = label.split(", ", 2)[2]
            verdict = "met" if ratio >= 0.8 else "**not met**"
            print(
                f"| {title} | ratio: archive ({what}) / static file | {ratio:.2f} | "
                f"| >= 0.8: {verdict} |"
            )
    for key, title in (
        ("uvicorn", "uvicorn (1 process)"),
        ("gunicorn", f"gunicorn -w {args.workers} -k gthread --threads {args.threads}"),
    ):
        m = results["memory"][key]
        peak = m["peak_rss_kib"] / 1024
        ok = "met" if peak < 150 and not m["errors"] else "**not met**"
        hwm = ", ".join(
            f"{'master' if pid == m['master'] and key == 'gunicorn' else 'pid'} {pid}: "
            f"{kib / 1024:.0f}"
            for pid, kib in m["hwm_kib"].items()
        )
        done = args.clients - len(m["errors"])
        print(
            f"| {title} | {args.clients} concurrent downloads of a {small_size / MIB:.0f} MiB "
            f"archive ({small_shape}, no CRC): peak of summed VmRSS | {peak:.0f} MiB "
            f"| idle before {m['idle_kib'] / 1024:.0f} MiB; VmHWM per process (MiB) {hwm}; "
            f"peak summed PSS {m['peak_pss_kib'] / 1024:.0f} MiB; {m['samples']} samples, "
            f"one per {m['interval_ms']:.0f} ms | < 150 MiB: {ok} |"
        )
        verdict = "met" if not m["errors"] else "**not met**"
        print(
            f"| {title} | {args.clients} concurrent downloads: complete with the right size "
            f"| {done} / {args.clients} | {m['wall']:.1f} s for all, "
            f"{m['bytes'] / m['wall'] / 1e6:,.0f} MB/s together | 0 errors: {verdict} |"
        )
        for error in m["errors"][:5]:
            print(f"| {title} | error | | {error} | |")


if __name__ == "__main__":
    sys.exit(main())
