"""The examples in examples/, each started under a real server and downloaded from.

Flask and Django (WSGI) run under gunicorn's sync workers; Starlette, FastAPI and Django
(ASGI) under uvicorn. Each server is a subprocess on a free loopback port, started once per
example (module-scoped) and stopped and reaped at the end; when a check fails, what the
server wrote to stderr during that test is printed with the failure.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import unquote

import pytest

pytest.register_assert_rewrite("proxy_harness")  # a plugin of test_proxy.py too
from proxy_harness import HOST, Proc, free_port, python_env, uvicorn_argv  # noqa: E402

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="gunicorn and process groups: POSIX"),
    pytest.mark.timeout(60),
]

REPO = Path(__file__).resolve().parents[1]
DJANGO = REPO / "examples" / "django_app"
SAMPLES = Path(str(files("zipware") / "samples"))
REQUEST_TIMEOUT = 20.0


@dataclass(frozen=True)
class Example:
    server: str  # "gunicorn" or "uvicorn"
    target: str  # what the server imports, from `cwd`
    cwd: Path
    filename: str  # the download's expected name
    needs: tuple[str, ...]  # importable modules the example needs


EXAMPLES = {
    "flask": Example("gunicorn", "examples.flask_app:app", REPO, "samples.zip", ("flask",)),
    "django-wsgi": Example("gunicorn", "mysite.wsgi", DJANGO, "échantillons.zip", ("django",)),
    "django-asgi": Example(
        "uvicorn", "mysite.asgi:application", DJANGO, "échantillons.zip", ("django",)
    ),
    "starlette": Example(
        "uvicorn", "examples.starlette_app:app", REPO, "samples.zip", ("starlette",)
    ),
    "fastapi": Example("uvicorn", "examples.fastapi_app:app", REPO, "samples.zip", ("fastapi",)),
}


def server_argv(example: Example, port: int) -> list[str]:
    if example.server == "uvicorn":
        return uvicorn_argv(example.target, port)
    from gunicorn.config import KNOWN_SETTINGS

    argv = [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync"]
    argv += ["--bind", f"{HOST}:{port}", "--graceful-timeout", "5", "--access-logfile", "-"]
    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        # recent gunicorns open a control socket at one fixed path, shared by every instance
        argv.append("--no-control-socket")
    return [*argv, example.target]


class Server(Proc):
    """An example's server (its own process group, output in a file), with the requests the
    tests make."""

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """On failure, print what the server wrote meanwhile (pytest shows it with the error)."""
        mark = self.mark()
        try:
            yield
        except BaseException:
            print(f"--- {self.name} output during the test ---\n{self.output(mark)}")
            raise

    def request(self, method: str, path: str) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def raw(self, request: bytes) -> bytes:
        """Everything the server sends back for ``request``, until it closes the connection."""
        with socket.create_connection((HOST, self.port), timeout=REQUEST_TIMEOUT) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data


@pytest.fixture(scope="module", params=list(EXAMPLES))
def example(request: pytest.FixtureRequest) -> Example:
    ex = EXAMPLES[request.param]
    for module in (ex.server, *ex.needs):
        pytest.importorskip(module)
    return ex


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, example: Example, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    name = f"{example.server} {example.target}"
    port = free_port()
    log = tmp_path_factory.mktemp("example") / "server.log"
    env = python_env()  # the examples import zipware from this checkout
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the example's own settings, not a leftover
    srv = Server(name, server_argv(example, port), port=port, log=log, env=env, cwd=example.cwd)
    request.addfinalizer(srv.stop)
    srv.wait()
    return srv


def sample_files() -> dict[str, bytes]:
    return {
        p.relative_to(SAMPLES).as_posix(): p.read_bytes() for p in SAMPLES.rglob("*") if p.is_file()
    }


def disposition_filename(value: str) -> str:
    """The file name a Content-Disposition gives: ``filename*`` (RFC 5987) wins."""
    params = dict(part.strip().split("=", 1) for part in value.split(";")[1:] if "=" in part)
    if "filename*" in params:
        charset, _, encoded = params["filename*"].split("'", 2)
        assert charset.upper() == "UTF-8"
        return unquote(encoded, encoding="utf-8")
    return params["filename"].strip('"')


def test_index(server: Server) -> None:
    with server.explained():
        response, body = server.request("GET", "/")
        assert response.status == 200
        assert b'href="/download"' in body


def test_download(server: Server, example: Example) -> None:
    with server.explained():
        response, body = server.request("GET", "/download")
        assert response.status == 200, body[:500]
        assert response.getheader("Content-Type") == "application/zip"
        assert int(response.getheader("Content-Length", "-1")) == len(body)
        disposition = response.getheader("Content-Disposition", "")
        assert disposition.startswith("attachment;")
        assert disposition_filename(disposition) == example.filename
        assert response.getheader("ETag")

        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            assert zf.testzip() is None
            members = {info.filename: info for info in zf.infolist()}
            expected = sample_files()
            assert set(members) == {*expected, "notes.txt", "empty/"}
            for name, data in expected.items():
                assert zf.read(name) == data, name
            assert zf.read("notes.txt").decode("utf-8").strip()  # the `text` entry
            assert members["empty/"].is_dir()
            assert members["empty/"].file_size == 0


def test_head(server: Server) -> None:
    with server.explained():
        response, body = server.request("GET", "/download")
        assert response.status == 200
        raw = server.raw(
            f"HEAD /download HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, raw[:500]
        status_line, *lines = head.decode("latin-1").split("\r\n")
        assert status_line.split()[1] == "200", status_line
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        assert headers["content-type"] == "application/zip"
        assert int(headers["content-length"]) == len(body)
        assert headers["etag"] == response.getheader("ETag")
        assert rest == b""  # no body, not even one byte
