"""Real servers for tests/test_proxy.py: subprocesses on free loopback ports.

Each :class:`Proc` runs in its own session (so a server's children go with it), writes its
output to a file, is waited for (its port accepts connections) and is stopped and reaped
by :meth:`Proc.stop`. Loaded as a pytest plugin (``pytest_plugins = ("proxy_harness",)``):
when a test fails, what every running :class:`Proc` wrote during that test is added to the
failure report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0

_RUNNING: dict[int, Proc] = {}


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a Python server: zipware imported from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def uvicorn_argv(target: str, port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port), *options, target]


def proxy_argv(port: int) -> list[str]:
    """The proxy, served as documented (its config in ``ZIPWARE_PROXY_CONFIG``)."""
    return uvicorn_argv(
        "zipware.proxy:app_from_environment",
        port,
        "--factory",
        "--no-server-header",
        "--no-date-header",
        "--no-proxy-headers",  # the proxy writes X-Forwarded-For from the real peer
        "--timeout-graceful-shutdown",
        "3",
    )


class Proc:
    """One server subprocess; its stdout and stderr go to ``log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _RUNNING[id(self)] = self

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def mark(self) -> int:
        """Where the log ends now."""
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def output(self, since: int = 0) -> str:
        try:
            data = self.log.read_bytes()
        except FileNotFoundError:
            return ""
        return data[since:].decode("utf-8", "replace")

    def wait(self, timeout: float = START_TIMEOUT) -> Proc:
        """Return once the port accepts connections; raise with the output if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
            else:
                return self
        self.stop()
        raise RuntimeError(f"{self.name} not listening after {timeout} s:\n{self.output()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; always reaped, its session killed too."""
        _RUNNING.pop(id(self), None)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_all(procs: Sequence[Proc]) -> None:
    """Wait for every process (started together, so they boot in parallel)."""
    try:
        for p in procs:
            p.wait()
    except BaseException:
        for p in procs:
            p.stop()
        raise


# -- pytest plugin: server output in failure reports ----------------------------------------

_MARKS = pytest.StashKey[dict[int, int]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if call.when == "setup":
        item.stash[_MARKS] = {key: p.mark() for key, p in _RUNNING.items()}
        return
    if call.when != "call" or not report.failed:
        return
    marks = item.stash.get(_MARKS, {})
    for key, p in list(_RUNNING.items()):
        text = p.output(marks.get(key, 0))
        if len(text) > 20_000:
            text = "[...]\n" + text[-20_000:]
        report.sections.append((f"{p.name} output during the test", text or "(nothing)"))
