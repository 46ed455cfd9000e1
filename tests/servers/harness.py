"""Start real servers as subprocesses on free ports, look inside them, stop and reap them.

Also a pytest plugin (``pytest_plugins = ("servers.harness",)``): when a test that used a
:class:`Server` fails, the part of that server's stderr written during the test is added to
the failure report.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid:
            found.append(int(entry))
    return sorted(found)


def fd_targets(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points to (a path, ``socket:[...]``, ...)."""
    targets = []
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    for name in names:
        try:
            targets.append(os.readlink(f"{base}/{name}"))
        except FileNotFoundError:  # closed while we looked
            continue
    return sorted(targets)


FdMap = dict[int, list[str]]


def describe_fd_change(before: FdMap, after: FdMap) -> str:
    lines = []
    for pid in sorted(set(before) | set(after)):
        gone = Counter(before.get(pid, [])) - Counter(after.get(pid, []))
        new = Counter(after.get(pid, [])) - Counter(before.get(pid, []))
        if gone or new:
            lines.append(f"pid {pid}: new {sorted(new.elements())}, gone {sorted(gone.elements())}")
    return "\n".join(lines) or "no change"


@dataclass
class Server:
    """One server subprocess and the files it writes (stderr, audit log of opens)."""

    name: str
    kind: str  # "wsgi" or "asgi"
    workers: int
    lint: bool
    port: int
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    audit_path: Path
    root: str
    baseline: FdMap = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __str__(self) -> str:
        return self.name

    # -- stderr ---------------------------------------------------------------------------

    def mark(self) -> int:
        """Where stderr ends now; pass to :meth:`log` for what was written since."""
        return self.stderr_path.stat().st_size

    def log(self, since: int = 0) -> str:
        with open(self.stderr_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, since: int, needles: Iterable[str], timeout: float = 5.0) -> str:
        """The log since ``since`` once it holds every needle (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log(since)
            if all(n in text for n in needles) or time.monotonic() > deadline:
                return text
            time.sleep(0.02)

    # -- opens under the root (audit hook) ------------------------------------------------

    def audit_mark(self) -> int:
        return self.audit_path.stat().st_size if self.audit_path.exists() else 0

    def opened(self, since: int) -> list[str]:
        """Paths under the root opened by the server since ``since``, in order."""
        if not self.audit_path.exists():
            return []
        with open(self.audit_path, "rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()
        return [line.split(" ", 1)[1] for line in lines]

    # -- processes and descriptors --------------------------------------------------------

    def pids(self) -> list[int]:
        """The processes that run the app: gunicorn's workers, or uvicorn itself."""
        return children(self.proc.pid) if self.kind == "wsgi" else [self.proc.pid]

    def fds(self) -> FdMap:
        return {pid: fd_targets(pid) for pid in self.pids()}

    def stable_fds(self, timeout: float = 10.0) -> FdMap:
        """Descriptors once two looks 0.2 s apart agree (the server is idle)."""
        deadline = time.monotonic() + timeout
        last = self.fds()
        while True:
            time.sleep(0.2)
            now = self.fds()
            if now == last or time.monotonic() > deadline:
                return now
            last = now

    def settled_fds(self, timeout: float = 5.0) -> FdMap:
        """Descriptors once their count per process is back to the baseline (or at timeout).

        Closing a connection is asynchronous (uvicorn notices the client's FIN on its next
        loop turn), so the count is polled rather than read once.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = self.fds()
            counts = {pid: len(t) for pid, t in now.items()}
            if counts == {pid: len(t) for pid, t in self.baseline.items()}:
                return now
            if time.monotonic() > deadline:
                return now
            time.sleep(0.05)

    def assert_no_leak(self) -> None:
        """Same processes as at start, each with its baseline number of descriptors, and
        none of them holding a file under the root."""
        now = self.settled_fds()
        assert self.proc.poll() is None, f"{self.name} exited with {self.proc.returncode}"
        assert set(now) == set(self.baseline), (
            f"{self.name}: worker processes changed {sorted(self.baseline)} -> {sorted(now)}"
        )
        under_root = [t for ts in now.values() for t in ts if t.startswith(self.root + os.sep)]
        assert not under_root, f"{self.name} still holds files under the root: {under_root}"
        counts = {pid: len(t) for pid, t in now.items()}
        want = {pid: len(t) for pid, t in self.baseline.items()}
        assert counts == want, (
            f"{self.name}: descriptors did not return to the baseline:\n"
            + describe_fd_change(self.baseline, now)
        )

    # -- life cycle -----------------------------------------------------------------------

    def request(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        """SIGINT (gunicorn's quick shutdown, uvicorn's Ctrl-C), reap; SIGKILL the process
        group this server was started in if anything is left after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.reap()

    def reap(self) -> None:
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            pass
        else:  # leftovers of our own group (it was created for this server)
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def stop_all(servers: Iterable[Server]) -> None:
    """Stop several servers at once (signal them all, then reap each)."""
    servers = list(servers)
    for server in servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGINT)
    for server in servers:
        server.reap()


def command(name: str, port: int) -> tuple[str, int, bool, list[str]]:
    """``(kind, workers, lint, argv)`` of the named server variant."""
    bind = f"127.0.0.1:{port}"
    gunicorn = [sys.executable, "-m", "gunicorn", "-k", "sync", "-b", bind]
    gunicorn += ["--graceful-timeout", "3", "--timeout", "60"]
    if name == "gunicorn":
        return "wsgi", 2, False, [*gunicorn, "-w", "2", "servers.wsgi_app:app"]
    if name == "gunicorn-lint":
        # one worker: the CRC cache lives in a worker, so a warm-cache test needs just one
        return "wsgi", 1, True, [*gunicorn, "-w", "1", "servers.wsgi_app:linted"]
    if name == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", "servers.asgi_app:app", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "3"]
        return "asgi", 1, False, argv
    raise ValueError(name)


def launch(name: str, config: Path, workdir: Path, root: str) -> Server:
    """Start a server variant (without waiting for it)."""
    port = free_port()
    kind, workers, lint, argv = command(name, port)
    stderr_path = workdir / f"{name}.stderr"
    audit_path = workdir / f"{name}.audit"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
        "PYTHONUNBUFFERED": "1",
        "ZW_CONFIG": str(config),
        "ZW_AUDIT": str(audit_path),
    }
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=env,
            cwd=REPO,
            start_new_session=True,  # its own process group, so a stop can never miss a worker
        )
    return Server(name, kind, workers, lint, port, proc, stderr_path, audit_path, root)


def wait_ready(server: Server, timeout: float = START_TIMEOUT) -> None:
    """Until every worker has imported the app and the port answers; raises with stderr."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.log()}"
            )
        ready = server.log().count("test-app ready:")
        if ready >= server.workers and len(server.pids()) == server.workers:
            try:
                status, _ = server.request("GET", "/pid")
            except OSError:
                status = 0
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not ready after {timeout} s:\n{server.log()}")
        time.sleep(0.05)


@dataclass
class Servers:
    """The running servers by name (module fixture)."""

    by_name: Mapping[str, Server]

    def __getitem__(self, name: str) -> Server:
        return self.by_name[name]

    def __iter__(self) -> Iterator[Server]:
        return iter(self.by_name.values())


# -- pytest plugin: the server's stderr in failure reports ----------------------------------

_MARKS = pytest.StashKey[dict[str, int]]()


def _servers_of(item: pytest.Item) -> list[Server]:
    """The server a test ran against, or all of them if it used the ``Servers``."""
    values = getattr(item, "funcargs", {}).values()
    found = [v for v in values if isinstance(v, Server)]
    if not found:
        found = [s for v in values if isinstance(v, Servers) for s in v]
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    servers = _servers_of(item)
    if call.when == "setup":
        item.stash[_MARKS] = {s.name: s.mark() for s in servers if s.stderr_path.exists()}
    if not report.failed:
        return
    marks = item.stash.get(_MARKS, {})
    for s in servers:
        text = s.log(marks.get(s.name, 0))
        if len(text) > 20_000:
            text = "[...]\n" + text[-20_000:]
        report.sections.append((f"{s.name} stderr during the test", text or "(empty)"))
