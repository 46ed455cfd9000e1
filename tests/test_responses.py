"""Manifest responses: ``zipware.responses`` and the Django, Flask and Starlette/FastAPI helpers.

Each helper's response is checked on its own (headers, and a body that
:func:`zipware.manifest.decode` accepts), then end to end through the real middleware: the
app wrapped in ``zipware.wsgi.ZipMiddleware`` or ``zipware.asgi.ZipMiddleware`` answers with
a ZIP that :mod:`zipfile` reads.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx
import pytest
from werkzeug.test import Client

from zipware.manifest import CONTENT_TYPE, TRIGGER_HEADER, Entry, Manifest, ManifestError, decode
from zipware.responses import manifest_body, manifest_headers, manifest_parts

ROOT = Path(__file__).resolve().parent.parent

ENTRIES: list[dict[str, Any]] = [
    {"name": "docs/a.txt", "path": "a.txt"},
    {"name": "b.bin", "path": "sub/b.bin", "mode": 0o600},
    {"name": "note.txt", "text": "héllo\n", "mtime": "2020-01-01T00:00:00Z"},
    {"name": "empty/"},
]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """The root the middleware serves: the files ENTRIES name."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(100_000))
    return root


def expected(files: Path) -> dict[str, bytes]:
    return {
        "docs/a.txt": b"alpha\n",
        "b.bin": (files / "sub" / "b.bin").read_bytes(),
        "note.txt": "héllo\n".encode(),
        "empty/": b"",
    }


def assert_zip(data: bytes, files: Path) -> None:
    z = zipfile.ZipFile(io.BytesIO(data))
    members = expected(files)
    assert z.namelist() == list(members)
    assert z.testzip() is None
    for name, content in members.items():
        assert z.read(name) == content
    assert z.getinfo("b.bin").external_attr >> 16 & 0o7777 == 0o600


def assert_manifest(headers: Any, body: bytes, filename: str = "x.zip") -> Manifest:
    """A manifest response: media type, trigger, and a body the middleware can decode."""
    assert headers["Content-Type"] == CONTENT_TYPE
    assert headers[TRIGGER_HEADER] == "1"
    manifest = decode(body)
    assert manifest.filename == filename
    assert [e.name for e in manifest.entries] == [e["name"] for e in ENTRIES]
    return manifest


def assert_download(status: int, headers: Any, body: bytes, files: Path) -> None:
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "application/zip"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Content-Disposition"] == 'attachment; filename="x.zip"'
    assert TRIGGER_HEADER not in headers
    assert_zip(body, files)


# -- zipware.responses -------------------------------------------------------------------


def test_manifest_parts_from_dicts() -> None:
    body, headers = manifest_parts([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")
    assert body == b'{"version":1,"filename":"x.zip","entries":[{"name":"a.txt","path":"a.txt"}]}'
    assert headers == {"Content-Type": CONTENT_TYPE, "X-Zip-Manifest": "1"}
    assert manifest_headers() == headers
    assert manifest_headers() is not manifest_headers()  # a fresh dict: callers may add to it


def test_manifest_body_accepts_every_form() -> None:
    entries = [Entry(name="a.txt", text="a"), {"name": "b/"}]
    want = Manifest(
        version=1,
        filename="x.zip",
        comment="hi",
        entries=[Entry(name="a.txt", text="a"), Entry(name="b/")],
    )
    forms: list[Any] = [
        entries,  # Entry objects and dicts, mixed
        iter(entries),  # any iterable, a generator too
        tuple(entries),
        {"filename": "x.zip", "comment": "hi", "entries": entries},  # a whole manifest
        {"version": 1, "filename": "x.zip", "comment": "hi", "entries": entries},
        Manifest(version=1, filename="x.zip", comment="hi", entries=want.entries),
    ]
    for form in forms:
        kw = {} if isinstance(form, (dict, Manifest)) else {"filename": "x.zip", "comment": "hi"}
        assert decode(manifest_body(form, **kw)) == want, form
    # filename and comment override the manifest's own
    body = manifest_body(want, filename="y.zip")
    assert decode(body).filename == "y.zip"
    assert decode(body).comment == "hi"
    assert want.filename == "x.zip"  # the Manifest given is not changed
    assert (
        decode(manifest_body({"filename": "x.zip", "entries": []}, filename="z.zip")).filename
        == "z.zip"
    )
    assert manifest_body([]) == b'{"version":1,"entries":[]}'


def test_dict_fields_are_converted_as_json_would_be() -> None:
    body = manifest_body(
        [
            {"name": "d.bin", "data": b"\x00\x01"},  # bytes, or base64 text as in JSON
            {"name": "e.bin", "data": "AAE="},
            {
                "name": "t.txt",
                "text": "x",
                "mtime": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
            },
            {"name": "u.txt", "text": "x", "mtime": "2024-01-01T00:00:00Z", "crc32": 0x8CDC1683},
        ]
    )
    m = decode(body)
    assert m.entries[0].data == m.entries[1].data == b"\x00\x01"
    assert m.entries[2].mtime == m.entries[3].mtime


def test_invalid_entries_report_every_problem_with_its_path() -> None:
    with pytest.raises(ManifestError) as info:
        manifest_body(
            [
                {"name": "ok.txt", "text": "x"},
                {"name": "", "text": "x"},
                {"name": "no-source.txt"},
                {"name": "t.txt", "text": "x", "sise": 1},
                {"name": "m.txt", "text": "x", "mode": 0o10000},
                "a.txt",
            ],
            filename="",
        )
    assert [str(p) for p in info.value.problems] == [
        "$.filename: Expected `str` of length >= 1",
        "$.entries[1].name: Expected `str` of length >= 1",
        "$.entries[2]: needs a source: one of path, url, uri, text, data",
        "$.entries[3]: Object contains unknown field `sise`",
        "$.entries[4].mode: Expected `int` <= 4095",
        "$.entries[5]: expected an Entry or a dict, got str",
    ]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ({"filename": "x.zip"}, "$: Object missing required field `entries`"),
        ({"entries": "a.txt"}, "$.entries: expected a list, got str"),
        ({"entries": [], "version": 2}, "$.version: Invalid enum value 2"),
        ({"entries": [], "sise": 1}, "$: Object contains unknown field `sise`"),
        (Manifest(version=1, entries=[]), "$.filename: Expected `str` of length <= 255"),
    ],
)
def test_invalid_manifests(manifest: Any, problem: str) -> None:
    kw = {"filename": "x" * 256} if isinstance(manifest, Manifest) else {}
    with pytest.raises(ManifestError) as info:
        manifest_body(manifest, **kw)
    assert [str(p) for p in info.value.problems] == [problem]


def test_json_text_is_refused() -> None:
    with pytest.raises(TypeError, match="not JSON"):
        manifest_body('{"version": 1, "entries": []}')  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        manifest_body(b"{}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("module", "own", "others"),
    [
        ("zipware.responses", (), ("django", "flask", "starlette", "fastapi")),
        ("zipware.contrib.django", ("django",), ("flask", "starlette", "fastapi")),
        ("zipware.contrib.flask", ("flask",), ("django", "starlette", "fastapi")),
        ("zipware.contrib.starlette", ("starlette",), ("django", "flask", "fastapi")),
    ],
)
def test_each_module_imports_only_its_own_framework(
    module: str, own: tuple[str, ...], others: tuple[str, ...]
) -> None:
    code = (
        f"import sys, {module}\n"
        f"assert all(m in sys.modules for m in {own!r}), {own!r}\n"
        f"print(sorted(m for m in {others!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"[]\n"


# -- Django ------------------------------------------------------------------------------


class URLConf:
    """The ROOT_URLCONF of the Django tests (filled by the ``django_urls`` fixture)."""

    urlpatterns: ClassVar[list[Any]] = []


def _django_setup() -> None:
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="zipware-tests",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=URLConf,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()


def django_view(request: Any) -> Any:
    from zipware.contrib.django import ManifestResponse

    return ManifestResponse(ENTRIES, filename="x.zip")


def django_view_padded(request: Any) -> Any:
    """A manifest GZipMiddleware always compresses (it skips bodies that would not shrink,
    and its random gzip header padding makes a short one shrink only sometimes)."""
    from zipware.contrib.django import ManifestResponse

    return ManifestResponse(ENTRIES, filename="x.zip", comment="z" * 2000)


@pytest.fixture
def django_urls() -> Iterator[None]:
    _django_setup()
    from django.test.utils import override_settings
    from django.urls import clear_url_caches, path

    URLConf.urlpatterns = [path("download", django_view), path("padded", django_view_padded)]
    clear_url_caches()
    with override_settings(ROOT_URLCONF=URLConf, ALLOWED_HOSTS=["*"]):
        yield
    clear_url_caches()


def test_django_response() -> None:
    _django_setup()
    from django.test import RequestFactory

    from zipware.contrib.django import ManifestResponse

    response = django_view(RequestFactory().get("/download"))
    assert isinstance(response, ManifestResponse)
    assert response.status_code == 200
    assert_manifest(response, response.content)
    # other HttpResponse arguments pass through
    response = ManifestResponse(ENTRIES, filename="x.zip", headers={"Cache-Control": "no-store"})
    assert response["Cache-Control"] == "no-store"
    assert_manifest(response, response.content)
    with pytest.raises(ManifestError):
        ManifestResponse([{"name": "a.txt"}])


def test_django_end_to_end(files: Path, django_urls: None) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    from zipware.wsgi import ZipMiddleware

    client = Client(ZipMiddleware(WSGIHandler(), roots=[files]))
    r = client.get("/download")
    assert_download(r.status_code, r.headers, r.data, files)
    head = client.head("/download")
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == r.headers["Content-Length"]


def test_django_asgi_end_to_end(files: Path, django_urls: None) -> None:
    from django.core.handlers.asgi import ASGIHandler

    from zipware.asgi import ZipMiddleware

    r = asgi_get(ZipMiddleware(ASGIHandler(), roots=[files]))
    assert_download(r.status_code, r.headers, r.content, files)


def test_django_end_to_end_with_gzip_middleware(files: Path, django_urls: None) -> None:
    """zipware outside Django's GZipMiddleware, a client that accepts gzip (any browser)."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    from zipware.wsgi import ZipMiddleware

    with override_settings(MIDDLEWARE=["django.middleware.gzip.GZipMiddleware"]):
        app = ZipMiddleware(WSGIHandler(), roots=[files])
    r = Client(app).get("/padded", headers={"Accept-Encoding": "gzip"})
    assert_download(r.status_code, r.headers, r.data, files)
    assert zipfile.ZipFile(io.BytesIO(r.data)).comment == b"z" * 2000


# -- Flask -------------------------------------------------------------------------------


def flask_app() -> Any:
    flask = pytest.importorskip("flask")
    from zipware.contrib.flask import manifest_response

    app = flask.Flask(__name__)

    @app.get("/download")
    def download() -> Any:
        return manifest_response(ENTRIES, filename="x.zip")

    @app.get("/other")
    def other() -> str:
        return "not a manifest"

    return app


def test_flask_response() -> None:
    from zipware.contrib.flask import manifest_response

    r = flask_app().test_client().get("/download")
    assert r.status_code == 200
    assert_manifest(r.headers, r.data)
    assert manifest_response([], status=404).status_code == 404
    with pytest.raises(ManifestError):
        manifest_response([{"name": "a.txt"}])


def test_flask_end_to_end(files: Path) -> None:
    from zipware.wsgi import ZipMiddleware

    client = Client(ZipMiddleware(flask_app(), roots=[files]))
    r = client.get("/download")
    assert_download(r.status_code, r.headers, r.data, files)
    r = client.get("/other")  # not a manifest: passed through
    assert r.data == b"not a manifest"
    # the usual wiring: app.wsgi_app wrapped, the Flask test client
    app = flask_app()
    app.wsgi_app = ZipMiddleware(app.wsgi_app, roots=[files])  # type: ignore[method-assign]
    r = app.test_client().get("/download")
    assert_download(r.status_code, r.headers, r.data, files)


# -- Starlette and FastAPI ---------------------------------------------------------------


def starlette_app() -> Any:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Route

    from zipware.contrib.starlette import ManifestResponse

    async def download(request: Any) -> ManifestResponse:
        return ManifestResponse(ENTRIES, filename="x.zip", headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/download", download)])


def fastapi_app() -> Any:
    fastapi = pytest.importorskip("fastapi")
    from zipware.contrib.starlette import ManifestResponse

    app = fastapi.FastAPI()

    @app.get("/download")
    async def download() -> ManifestResponse:
        return ManifestResponse(ENTRIES, filename="x.zip")

    return app


def asgi_get(app: Any, path: str = "/download", method: str = "GET") -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)

    return anyio.run(run)


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
def test_starlette_response(make_app: Any) -> None:
    r = asgi_get(make_app())
    assert r.status_code == 200
    assert_manifest(r.headers, r.content)
    from zipware.contrib.starlette import ManifestResponse

    assert ManifestResponse([], status_code=404).status_code == 404
    assert ManifestResponse([]).media_type == CONTENT_TYPE
    with pytest.raises(ManifestError):
        ManifestResponse([{"name": "a.txt"}])


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
def test_starlette_end_to_end(make_app: Any, files: Path) -> None:
    from zipware.asgi import ZipMiddleware

    app = ZipMiddleware(make_app(), roots=[files])
    r = asgi_get(app)
    assert_download(r.status_code, r.headers, r.content, files)
    head = asgi_get(app, method="HEAD")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == r.headers["Content-Length"]


def test_fastapi_add_middleware(files: Path) -> None:
    """FastAPI's own wiring: ``app.add_middleware(ZipMiddleware, roots=...)``."""
    from zipware.asgi import ZipMiddleware

    app = fastapi_app()
    app.add_middleware(ZipMiddleware, roots=[files])
    r = asgi_get(app)
    assert_download(r.status_code, r.headers, r.content, files)


def test_starlette_end_to_end_with_gzip_middleware(files: Path) -> None:
    """zipware outside Starlette's GZipMiddleware, a client that accepts gzip."""
    from starlette.middleware.gzip import GZipMiddleware

    from zipware.asgi import ZipMiddleware

    app = ZipMiddleware(GZipMiddleware(starlette_app(), minimum_size=10), roots=[files])
    r = asgi_get(app)  # httpx sends Accept-Encoding: gzip, deflate
    assert_download(r.status_code, r.headers, r.content, files)
