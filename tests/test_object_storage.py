"""Object storage: ``uri`` members read from S3 buckets, archives uploaded into one.

Everything runs against a real S3 server: moto's standalone server, started once for this
module on a free loopback port (``python -m moto.server``), reached over HTTP by s3fs exactly
as a bucket on AWS, Backblaze B2 or MinIO would be. boto3 sets the buckets up and checks
them from the outside (objects, multipart uploads left open). Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from zipware import Archive, IterSource, Member, SourceError  # noqa: E402
from zipware.manifest import ManifestError, decode  # noqa: E402
from zipware.policy import Policy, PolicyError  # noqa: E402
from zipware.prepare import aprepare, prepare  # noqa: E402
from zipware.sources import FSSpecSource, ObjectChangedError, redact_uri, split_uri  # noqa: E402
from zipware.upload import MIB, UploadError, part_size_for, upload  # noqa: E402

try:
    from .readers import check_all
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from readers import check_all

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
KEY_ID = "testing"
SECRET = "testing"
REGION = "us-east-1"
ENV = {
    "AWS_ACCESS_KEY_ID": KEY_ID,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_DEFAULT_REGION": REGION,
    # never the developer's own ~/.aws files
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


# -- the S3 server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A moto S3 server on loopback for this module; the environment has its credentials."""
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    port = free_port()
    log = open(os.devnull, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **ENV},
    )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with status {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("moto server did not start within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    """A boto3 client of the server, to set buckets up and look at them from outside."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def options(endpoint: str) -> dict[str, Any]:
    """s3fs storage options for the server (credentials come from the environment)."""
    return {"client_kwargs": {"endpoint_url": endpoint}}


def new_bucket(s3: Any) -> str:
    name = f"zw-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ from block to block (a misplaced block changes the CRC)."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += i.to_bytes(8, "little") * 512
        i += 1
    return bytes(out[:n])


# objects of a typical bucket: empty, small, a non-ASCII key, several read blocks
OBJECTS = {
    "media/empty.bin": b"",
    "media/hello.txt": b"hello from a bucket\n",
    "media/été/photo.jpg": payload(300_000, 1),
    "media/video.mp4": payload(9 * MIB + 12_345, 2),  # three 4 MiB GETs
}


@pytest.fixture
def bucket(s3: Any) -> str:
    name = new_bucket(s3)
    for key, data in OBJECTS.items():
        s3.put_object(Bucket=name, Key=key, Body=data)
    return name


def policy_for(bucket: str, options: dict[str, Any], **kw: Any) -> Policy:
    return Policy(allow_uris=(f"s3://{bucket}/media",), storage_options=options, **kw)


def manifest_for(bucket: str, **extra: Any) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [
        {"name": key.removeprefix("media/"), "uri": f"s3://{bucket}/{key}"} for key in OBJECTS
    ]
    entries.append({"name": "README.txt", "text": "made from a bucket\n"})
    return {"version": 1, "filename": "bucket.zip", "entries": entries, **extra}


def expected_files() -> dict[str, bytes]:
    out = {key.removeprefix("media/"): data for key, data in OBJECTS.items()}
    out["README.txt"] = b"made from a bucket\n"
    return out


def assert_zip(data: bytes, expected: dict[str, bytes]) -> zipfile.ZipFile:
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    assert {i.filename: zf.read(i) for i in zf.infolist()} == expected
    return zf


def multipart_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# -- manifest and policy -------------------------------------------------------------------


def test_uri_is_a_manifest_source() -> None:
    m = decode(json.dumps({"version": 1, "entries": [{"name": "a", "uri": "s3://b/k"}]}))
    assert m.entries[0].uri == "s3://b/k"
    bad = {
        "version": 1,
        "entries": [
            {"name": "a", "uri": "s3://b/k", "path": "a"},
            {"name": "d/", "uri": "s3://b/k"},
            {"name": "h", "uri": "s3://b/k", "headers": {"A": "b"}},
            {"name": "e", "uri": ""},
        ],
    }
    with pytest.raises(ManifestError) as info:
        decode(json.dumps(bad))
    got = [str(p) for p in info.value.problems]
    assert "has path and uri" in got[0]
    assert "takes no uri" in got[1]
    assert "url entries only" in got[2]
    assert got[3].startswith("$.entries[3].uri:")


def test_policy_allows_only_its_prefixes() -> None:
    policy = Policy(allow_uris=("s3://media/public", "s3://media/users/7/", "gs://other"))
    for ok in (
        "s3://media/public",
        "s3://media/public/a.jpg",
        "s3://media/users/7/x/y.txt",
        "gs://other/any/thing",
        "S3://media/public/a.jpg",  # the protocol is case-insensitive, as in URLs
    ):
        policy.check_uri(ok)
    refused = {
        "s3://media/public-2/a.jpg": "not in the allow-list",  # a prefix ends at a '/'
        "s3://media/publicity": "not in the allow-list",
        "s3://media/users/70/a": "not in the allow-list",
        "s3://Media/public/a": "not in the allow-list",  # bucket names are exact
        "s3a://media/public/a": "not in the allow-list",
        "gs://others/a": "not in the allow-list",
        "s3://media/public/../private/a": "'.' or '..' segment",
        "s3://media/public/./a": "'.' or '..' segment",
        "s3://media/public/": "not an object",
        "s3://media": "not an object",
        "s3://media/public/a\\b": "backslash",
        "s3://media/public/a::file:///etc/passwd": "chained",
        "media/public/a": "protocol://bucket/key",
        "file:///etc/passwd": "protocol://bucket/key",
    }
    for uri, message in refused.items():
        with pytest.raises(PolicyError, match=message.replace(".", r"\.").replace("'", "'")):
            policy.check_uri(uri)
    with pytest.raises(PolicyError, match="allow_uris is empty"):
        Policy().check_uri("s3://media/public/a")
    for prefix in ("file:///srv", "https://example.com/x", "local://x/y"):
        with pytest.raises(ValueError, match="is not object storage"):
            Policy(allow_uris=(prefix,))
    for prefix in ("s3:/x", "s3://", "bucket/prefix", "s3://b/x::memory://y"):
        with pytest.raises(ValueError, match="allow_uris entry"):
            Policy(allow_uris=(prefix,))


def test_storage_options_stay_out_of_repr_and_equality() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    a = Policy(allow_uris=("s3://b",), storage_options={"key": "AKIA", "secret": secret})
    assert secret not in repr(a)
    assert "storage_options" not in repr(a)
    assert a == Policy(allow_uris=("s3://b",))
    assert a.storage_options["secret"] == secret
    with pytest.raises(TypeError):
        a.storage_options["secret"] = "x"  # type: ignore[index]
    hash(a)


def test_split_and_redact() -> None:
    assert split_uri("S3://bkt/a/b.txt") == ("s3", "bkt", "a/b.txt")
    assert split_uri("s3://bkt") == ("s3", "bkt", "")
    assert redact_uri("s3://user:pw@bkt/k?versionId=1#x") == "s3://bkt/k"
    with pytest.raises(ValueError):
        FSSpecSource("s3://bkt/")


def test_part_size() -> None:
    assert part_size_for(0) == 16 * MIB
    assert part_size_for(100 * 1024**3) == 16 * MIB  # 6,400 parts
    assert part_size_for(1024**4) == 105 * MIB  # 1 TiB: just under 10,000 parts
    assert part_size_for(10, 5 * MIB) == 5 * MIB
    with pytest.raises(ValueError, match="between 5 MiB and 5 GiB"):
        part_size_for(10, MIB)
    with pytest.raises(ValueError, match=r"\(105 MiB\)"):
        part_size_for(1024**4, 100 * MIB)


# -- reading objects -----------------------------------------------------------------------


def test_source_reads_big_blocks_from_an_offset(bucket: str, options: dict[str, Any]) -> None:
    data = OBJECTS["media/video.mp4"]
    src = FSSpecSource(f"s3://{bucket}/media/video.mp4", storage_options=options)
    info = src.stat()
    assert info.size == len(data)
    assert info.etag
    assert info.mtime is not None and abs(info.mtime - time.time()) < 3600
    chunks = list(src.iter_chunks())
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks[:-1]] == [4 * MIB, 4 * MIB]  # whole blocks, no cache
    assert b"".join(src.iter_chunks(5 * MIB + 7)) == data[5 * MIB + 7 :]
    small = FSSpecSource(src.uri, storage_options=options, block_size=MIB)
    assert max(len(c) for c in small.iter_chunks(123)) == MIB

    async def read() -> bytes:
        return b"".join([c async for c in src.aiter_chunks(len(data) - 10)])

    assert anyio.run(read) == data[-10:]


def test_prepare_and_stream(bucket: str, options: dict[str, Any], tmp_path: Path) -> None:
    download = prepare(json.dumps(manifest_for(bucket)), policy_for(bucket, options))
    archive = download.archive
    data = b"".join(archive)
    assert len(data) == archive.size == download.size
    zf = assert_zip(data, expected_files())
    # LastModified became the members' mtime (ZIP keeps it to 2 s, in local time fields)
    head = boto3.client(
        "s3", endpoint_url=options["client_kwargs"]["endpoint_url"], region_name=REGION
    ).head_object(Bucket=bucket, Key="media/hello.txt")
    stamp = head["LastModified"].timestamp()
    assert download.last_modified is not None
    assert abs(download.last_modified - stamp) < 2
    assert zf.getinfo("hello.txt").date_time[0] >= 2024
    # identity: the same objects give the same fingerprint, a changed one another
    again = prepare(json.dumps(manifest_for(bucket)), policy_for(bucket, options))
    assert again.fingerprint == download.fingerprint
    # every member with an ETag can have its CRC remembered (ranges after a full pass),
    # but for the empty object, whose CRC is known (0)
    assert set(download.file_keys) == {1, 2, 3}
    path = tmp_path / "bucket.zip"
    path.write_bytes(data)
    check_all(path, {name: (len(b), zlib.crc32(b)) for name, b in expected_files().items()})


def test_one_request_per_object_and_block(
    bucket: str, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """One HEAD per object at prepare time; then only GETs (4 MiB each), no second HEAD."""

    def calls() -> list[str]:
        out = [r.getMessage().split()[1] for r in caplog.records if r.name == "s3fs"]
        caplog.clear()
        return [c for c in out if c in ("head_object", "get_object")]

    with caplog.at_level(logging.DEBUG, logger="s3fs"):
        download = prepare(json.dumps(manifest_for(bucket)), policy_for(bucket, options))
        assert calls() == ["head_object"] * 4
        b"".join(download.archive)
        # the empty object: none; hello, photo: one each; the 9 MiB video: three
        assert calls() == ["get_object"] * 5


def test_aprepare_and_astream(bucket: str, options: dict[str, Any]) -> None:
    async def run() -> bytes:
        download = await aprepare(json.dumps(manifest_for(bucket)), policy_for(bucket, options))
        out: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            out.append(chunk)

        await download.archive.astream(sink)
        async_bytes = b"".join([c async for c in download.archive])
        assert async_bytes == b"".join(out)
        return async_bytes

    assert_zip(anyio.run(run), expected_files())


def test_many_objects_concurrent_metadata(s3: Any, options: dict[str, Any]) -> None:
    name = new_bucket(s3)
    n = 120
    for i in range(n):
        s3.put_object(Bucket=name, Key=f"media/f{i:04}.txt", Body=f"object {i}\n".encode())
    manifest = {
        "version": 1,
        "entries": [
            {"name": f"f{i:04}.txt", "uri": f"s3://{name}/media/f{i:04}.txt"} for i in range(n)
        ],
    }
    policy = policy_for(name, options, head_concurrency=8)
    download = prepare(json.dumps(manifest), policy)
    assert len(download.archive.plan) == n
    zf = zipfile.ZipFile(io.BytesIO(b"".join(download.archive)))
    assert zf.read("f0077.txt") == b"object 77\n"

    async def run() -> int:
        return (await aprepare(json.dumps(manifest), policy)).size

    assert anyio.run(run) == download.size


def test_range_from_an_object_at_an_offset(bucket: str, options: dict[str, Any]) -> None:
    entries: list[dict[str, Any]] = [
        {"name": "a.txt", "text": "first\n"},
        {
            "name": "video.mp4",
            "uri": f"s3://{bucket}/media/video.mp4",
            "crc32": zlib.crc32(OBJECTS["media/video.mp4"]),
        },
    ]
    manifest = {"version": 1, "entries": entries}
    archive = prepare(json.dumps(manifest), policy_for(bucket, options)).archive
    whole = b"".join(archive)
    # from 5 MiB into the video's data (one GET from there on, not from its start)
    start = whole.index(OBJECTS["media/video.mp4"][:4096]) + 5 * MIB + 3
    end = start + 2 * MIB
    assert archive.missing_crcs(start, end) == []
    assert b"".join(archive.iter_range(start, end)) == whole[start:end]

    async def read() -> bytes:
        return b"".join([c async for c in archive.aiter_range(start, end)])

    assert anyio.run(read) == whole[start:end]


def test_any_fsspec_filesystem() -> None:
    """Another fsspec filesystem (memory): no ETag, no pinned reads, still checked sizes."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"zw-{uuid.uuid4().hex[:8]}"
    fs.pipe(f"memory://{root}/a.txt", b"in memory\n")
    fs.pipe(f"memory://{root}/b.bin", payload(3 * MIB, 4))
    manifest = {
        "version": 1,
        "entries": [
            {"name": "a.txt", "uri": f"memory://{root}/a.txt"},
            {"name": "b.bin", "uri": f"memory://{root}/b.bin"},
        ],
    }
    download = prepare(json.dumps(manifest), Policy(allow_uris=(f"memory://{root}",)))
    assert_zip(b"".join(download.archive), {"a.txt": b"in memory\n", "b.bin": payload(3 * MIB, 4)})
    assert download.file_keys == {}  # no ETag: no identity a CRC cache could trust
    fs.pipe(f"memory://{root}/a.txt", b"changed, longer\n")
    with pytest.raises(SourceError, match="more than the declared"):
        b"".join(download.archive)
    fs.rm(f"memory://{root}", recursive=True)


# -- the middlewares -----------------------------------------------------------------------


def wsgi_manifest_app(manifest: dict[str, Any]) -> Any:
    body = json.dumps(manifest).encode()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/vnd.zipware.manifest+json"),
                ("X-Zip-Manifest", "1"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    return app


def starlette_app(manifest: dict[str, Any]) -> Any:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Route

    from zipware.contrib.starlette import ManifestResponse

    async def download(request: Any) -> ManifestResponse:
        return ManifestResponse(manifest)

    return Starlette(routes=[Route("/download", download)])


def asgi_request(app: Any, headers: dict[str, str] | None = None) -> Any:
    import httpx

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/download", headers=headers or {})

    return anyio.run(run)


def test_asgi_middleware(bucket: str, options: dict[str, Any]) -> None:
    from zipware.asgi import ZipMiddleware

    app = ZipMiddleware(
        starlette_app(manifest_for(bucket)),
        allow_uris=[f"s3://{bucket}/media/"],
        storage_options=options,
    )
    r = asgi_request(app)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["content-disposition"].endswith('"bucket.zip"')
    assert_zip(r.content, expected_files())


def test_wsgi_middleware_with_ranges(bucket: str, options: dict[str, Any]) -> None:
    from werkzeug.test import Client

    from zipware.wsgi import ZipMiddleware

    app = ZipMiddleware(
        wsgi_manifest_app(manifest_for(bucket)),
        allow_uris=[f"s3://{bucket}/media"],
        storage_options=options,
    )
    client = Client(app)
    # no CRC declared: no Range before a full download taught the CRC cache
    first = client.get("/", headers={"Range": "bytes=100-199"})
    assert first.status_code == 200
    whole = first.get_data()
    assert_zip(whole, expected_files())
    # learned (keyed by each object's ETag): ranges now, one inside the 9 MiB video
    at = whole.index(OBJECTS["media/video.mp4"][:4096]) + 4 * MIB + 1
    r = client.get("/", headers={"Range": f"bytes={at}-{at + 99_999}"})
    assert r.status_code == 206
    assert r.get_data() == whole[at : at + 100_000]
    assert r.headers["Content-Range"] == f"bytes {at}-{at + 99_999}/{len(whole)}"


# -- failures: before the headers ----------------------------------------------------------


def problems(exc: pytest.ExceptionInfo[ManifestError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_missing_object_bucket_and_refused_uri(bucket: str, options: dict[str, Any]) -> None:
    manifest = {
        "version": 1,
        "entries": [
            {"name": "ok.txt", "uri": f"s3://{bucket}/media/hello.txt"},
            {"name": "gone.txt", "uri": f"s3://{bucket}/media/missing.txt"},
            {"name": "nobucket.txt", "uri": "s3://zw-no-such-bucket/media/a.txt"},
            {"name": "denied.txt", "uri": f"s3://{bucket}/private/a.txt"},
            {"name": "folder", "uri": f"s3://{bucket}/media/%C3%A9t%C3%A9"},
            {"name": "size.txt", "uri": f"s3://{bucket}/media/hello.txt", "size": 3},
        ],
    }
    policy = Policy(
        allow_uris=(f"s3://{bucket}/media", "s3://zw-no-such-bucket"), storage_options=options
    )
    with pytest.raises(ManifestError) as info:
        prepare(json.dumps(manifest), policy)
    got = problems(info)
    assert got == [
        f"$.entries[1].uri: object s3://{bucket}/media/missing.txt does not exist",
        "$.entries[2].uri: object s3://zw-no-such-bucket/media/a.txt does not exist "
        "(The specified bucket does not exist)",
        f"$.entries[3].uri: URI s3://{bucket}/private/a.txt is not in the allow-list",
        f"$.entries[4].uri: object s3://{bucket}/media/%C3%A9t%C3%A9 does not exist",
        "$.entries[5].size: declared 3 bytes, the object has 20",
    ]

    async def run() -> None:
        await aprepare(json.dumps(manifest), policy)

    with pytest.raises(ManifestError) as again:
        anyio.run(run)
    assert problems(again) == got


def test_a_folder_is_not_an_object(bucket: str, options: dict[str, Any]) -> None:
    manifest = {"version": 1, "entries": [{"name": "f", "uri": f"s3://{bucket}/media/été"}]}
    with pytest.raises(ManifestError) as info:
        prepare(json.dumps(manifest), policy_for(bucket, options))
    assert problems(info) == [
        f"$.entries[0].uri: s3://{bucket}/media/été is a folder, not an object"
    ]


def test_missing_object_is_an_error_response(bucket: str, options: dict[str, Any]) -> None:
    from werkzeug.test import Client

    from zipware.asgi import ZipMiddleware as AsgiZip
    from zipware.wsgi import ZipMiddleware as WsgiZip

    manifest = {"version": 1, "entries": [{"name": "x", "uri": f"s3://{bucket}/media/nope"}]}
    wsgi = WsgiZip(
        wsgi_manifest_app(manifest), allow_uris=[f"s3://{bucket}"], storage_options=options
    )
    r = Client(wsgi).get("/")
    assert r.status_code == 500
    assert b"invalid manifest" in r.get_data()
    asgi = AsgiZip(starlette_app(manifest), allow_uris=[f"s3://{bucket}"], storage_options=options)
    r2 = asgi_request(asgi)
    assert r2.status_code == 500


@contextlib.contextmanager
def iam_enforced(endpoint: str) -> Iterator[None]:
    """Make moto check signatures and IAM policies (it accepts anything by default)."""

    def reset_auth(count: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    reset_auth("0")
    try:
        yield
    finally:
        reset_auth("inf")


def iam_user(endpoint: str, resource: str) -> tuple[str, str]:
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION)
    name = f"zw-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": resource}],
    }
    iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_credentials_errors_name_no_secret(s3: Any, bucket: str, endpoint: str) -> None:
    other = new_bucket(s3)
    s3.put_object(Bucket=other, Key="media/a.txt", Body=b"a")
    key_id, secret = iam_user(endpoint, f"arn:aws:s3:::{bucket}*")
    wrong = "Wrong/Secret+" + secret[13:]
    manifest = {
        "version": 1,
        "entries": [
            {"name": "a.txt", "uri": f"s3://{bucket}/media/hello.txt"},
            {"name": "b.txt", "uri": f"s3://{other}/media/a.txt"},
        ],
    }
    allow = (f"s3://{bucket}/media", f"s3://{other}/media")

    def options(secret_key: str) -> dict[str, Any]:
        return {
            "key": key_id,
            "secret": secret_key,
            "client_kwargs": {"endpoint_url": endpoint},
            "skip_instance_cache": True,
        }

    with iam_enforced(endpoint):
        # the right secret: the user may read `bucket`, and not `other` (IAM denies it)
        with pytest.raises(ManifestError) as denied:
            prepare(json.dumps(manifest), Policy(allow_uris=allow, storage_options=options(secret)))
        # a wrong secret: the signature does not match, for both
        with pytest.raises(ManifestError) as forged:
            prepare(json.dumps(manifest), Policy(allow_uris=allow, storage_options=options(wrong)))
        good = {"version": 1, "entries": manifest["entries"][:1]}
        ok = prepare(json.dumps(good), Policy(allow_uris=allow, storage_options=options(secret)))
        assert b"".join(ok.archive)
    assert [p.path for p in denied.value.problems] == ["$.entries[1].uri"]
    assert "access to s3://" in denied.value.problems[0].message
    assert "denied" in denied.value.problems[0].message
    assert [p.path for p in forged.value.problems] == ["$.entries[0].uri", "$.entries[1].uri"]
    for exc in (denied.value, forged.value):
        text = str(exc) + repr(exc.problems)
        assert secret not in text
        assert wrong not in text


def test_no_secret_in_connection_errors(bucket: str) -> None:
    secret = "sUp3r-s3cret-v4lue-that-must-not-leak"
    port = free_port()  # nothing listens there
    config = {"retries": {"max_attempts": 1}, "connect_timeout": 2}
    manifest = {"version": 1, "entries": [{"name": "a", "uri": f"s3://{bucket}/media/a"}]}
    for endpoint in (f"http://{HOST}:{port}", f"http://user:{secret}@{HOST}:{port}"):
        options = {
            "key": "AKIAEXAMPLE",
            "secret": secret,
            "client_kwargs": {"endpoint_url": endpoint},
            "config_kwargs": config,
        }
        policy = Policy(allow_uris=(f"s3://{bucket}",), storage_options=options)
        with pytest.raises(ManifestError) as info:
            prepare(json.dumps(manifest), policy)
        (problem,) = info.value.problems
        assert problem.path == "$.entries[0].uri"
        assert problem.message.startswith(f"cannot read s3://{bucket}/media/a: ")
        assert secret not in str(info.value)
        assert secret not in repr(policy)


# -- failures: after the headers -----------------------------------------------------------


def changing_manifest(bucket: str) -> dict[str, Any]:
    return {
        "version": 1,
        "entries": [
            # enough bytes before it that the response has started when it fails
            {"name": "first.bin", "data": "QUFB" * 100_000},
            {"name": "changing.bin", "uri": f"s3://{bucket}/media/changing.bin"},
        ],
    }


@pytest.mark.parametrize("new_size", [100_000, 99_000, 101_000])
def test_object_changed_after_prepare(
    s3: Any, bucket: str, options: dict[str, Any], new_size: int
) -> None:
    s3.put_object(Bucket=bucket, Key="media/changing.bin", Body=payload(100_000, 5))
    download = prepare(json.dumps(changing_manifest(bucket)), policy_for(bucket, options))
    s3.put_object(Bucket=bucket, Key="media/changing.bin", Body=payload(new_size, 6))
    got: list[bytes] = []
    with pytest.raises(SourceError) as info:
        for chunk in download.archive:
            got.append(chunk)
    assert info.value.index == 1
    assert "changed after the archive was prepared" in str(info.value)
    assert sum(map(len, got)) < download.size  # a truncated transfer, never a "complete" one


def test_object_changed_during_the_read(s3: Any, bucket: str, options: dict[str, Any]) -> None:
    """s3fs pins each ranged GET to the ETag seen at open time (If-Match)."""
    key = "media/long.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=payload(3 * MIB, 7))
    src = FSSpecSource(f"s3://{bucket}/{key}", storage_options=options, block_size=MIB)
    chunks = src.iter_chunks()
    assert len(next(chunks)) == MIB
    s3.put_object(Bucket=bucket, Key=key, Body=payload(3 * MIB, 8))
    with pytest.raises(ObjectChangedError, match="changed while it was read"):
        next(chunks)


def test_object_changed_is_an_aborted_transfer(
    s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    from werkzeug.test import Client

    from zipware.asgi import ZipMiddleware as AsgiZip
    from zipware.wsgi import ZipMiddleware as WsgiZip

    manifest = changing_manifest(bucket)
    s3.put_object(Bucket=bucket, Key="media/changing.bin", Body=payload(100_000, 5))
    wsgi = WsgiZip(
        wsgi_manifest_app(manifest), allow_uris=[f"s3://{bucket}"], storage_options=options
    )
    complete = Client(wsgi).get("/")
    size = len(complete.get_data())
    assert zipfile.ZipFile(io.BytesIO(complete.get_data())).testzip() is None

    # WSGI: the middleware prepares, then the object changes while the response streams
    response = Client(wsgi).get("/", buffered=False)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(size)
    body = iter(response.response)
    received = next(body)
    s3.put_object(Bucket=bucket, Key="media/changing.bin", Body=payload(100_001, 9))
    with pytest.raises(SourceError):
        for chunk in body:
            received += chunk
    assert len(received) < size

    # ASGI, driven by hand: the object changes once the start message is out (the event
    # loop is held meanwhile). 40 MiB is more than the middleware and the read-ahead hold
    # (about 8 blocks of 4 MiB), so GETs remain, and If-Match fails them
    s3.put_object(Bucket=bucket, Key="media/changing.bin", Body=payload(40 * MIB, 5))
    asgi = AsgiZip(starlette_app(manifest), allow_uris=[f"s3://{bucket}"], storage_options=options)
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            s3.put_object(Bucket=bucket, Key="media/changing.bin", Body=payload(40 * MIB, 6))
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/download",
        "raw_path": b"/download",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }

    async def run() -> None:
        await asgi(scope, receive, send)

    with pytest.raises(SourceError, match="changed"):
        anyio.run(run)
    start_message = messages[0]
    assert start_message["status"] == 200
    length = int(dict(start_message["headers"])[b"content-length"])
    bodies = [m for m in messages[1:] if m["type"] == "http.response.body"]
    assert 0 < sum(len(m.get("body", b"")) for m in bodies) < length
    assert all(m.get("more_body") for m in bodies)  # never the final message of a whole body


# -- upload --------------------------------------------------------------------------------


def test_upload_multipart_and_read_back(
    s3: Any, bucket: str, options: dict[str, Any], tmp_path: Path
) -> None:
    download = prepare(json.dumps(manifest_for(bucket)), policy_for(bucket, options))
    out = new_bucket(s3)
    uri = f"s3://{out}/exports/bucket.zip"
    assert download.size > 5 * MIB  # parts of 5 MiB: a real multipart upload
    written = upload(download.archive, uri, part_size=5 * MIB, storage_options=options)
    assert written == download.size
    obj = s3.get_object(Bucket=out, Key="exports/bucket.zip")
    assert obj["ContentType"] == "application/zip"
    assert int(obj["ETag"].strip('"').partition("-")[2]) >= 2  # a multipart ETag: "md5-N"
    data = obj["Body"].read()
    assert len(data) == download.size
    assert_zip(data, expected_files())
    assert multipart_uploads(s3, out) == []


def test_upload_small_archive_is_one_put(s3: Any, options: dict[str, Any]) -> None:
    out = new_bucket(s3)
    archive = Archive([Member("a.txt", size=5, source=IterSource([b"hello"]))])
    seen: list[int] = []
    assert upload(archive, f"s3://{out}/small.zip", storage_options=options, progress=seen.append)
    assert sum(seen) == archive.size
    assert multipart_uploads(s3, out) == []
    data = s3.get_object(Bucket=out, Key="small.zip")["Body"].read()
    assert zipfile.ZipFile(io.BytesIO(data)).read("a.txt") == b"hello"


def failing_archive(after: int, exc: BaseException, total: int = 40 * MIB) -> Archive:
    def chunks() -> Iterator[bytes]:
        sent = 0
        block = payload(MIB, 3)
        while sent < total:
            if sent >= after:
                raise exc
            yield block
            sent += len(block)

    return Archive([Member("big.bin", size=total, source=IterSource(chunks()))])


@pytest.mark.parametrize(
    ("after", "exc", "raised"),
    [
        (0, OSError("disk gone"), SourceError),  # before any part
        (12 * MIB, OSError("disk gone"), SourceError),  # two parts already uploaded
        (12 * MIB, KeyboardInterrupt(), KeyboardInterrupt),  # interrupted, not an Exception
    ],
)
def test_failed_upload_is_aborted(
    s3: Any, options: dict[str, Any], after: int, exc: BaseException, raised: type
) -> None:
    out = new_bucket(s3)
    s3.put_object(Bucket=out, Key="exports/x.zip", Body=b"the previous version")
    with pytest.raises(raised):
        upload(
            failing_archive(after, exc),
            f"s3://{out}/exports/x.zip",
            part_size=5 * MIB,
            storage_options=options,
        )
    assert multipart_uploads(s3, out) == []
    # the object that was there is untouched; nothing truncated was published
    assert s3.get_object(Bucket=out, Key="exports/x.zip")["Body"].read() == b"the previous version"
    assert keys(s3, out) == ["exports/x.zip"]


def test_failed_upload_of_changed_object_is_aborted(
    s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    download = prepare(json.dumps(manifest_for(bucket)), policy_for(bucket, options))
    s3.put_object(Bucket=bucket, Key="media/video.mp4", Body=b"replaced")
    out = new_bucket(s3)
    with pytest.raises(SourceError, match="changed after the archive was prepared"):
        upload(download.archive, f"s3://{out}/a.zip", part_size=5 * MIB, storage_options=options)
    assert multipart_uploads(s3, out) == []
    assert keys(s3, out) == []


def test_upload_into_a_missing_bucket(options: dict[str, Any]) -> None:
    expected = r"upload failed: cannot write s3://zw-missing-out/a\.zip"
    with pytest.raises(UploadError, match=expected) as e:
        upload(
            failing_archive(99 * MIB, OSError(), 6 * MIB),
            "s3://zw-missing-out/a.zip",
            part_size=5 * MIB,
            storage_options=options,
        )
    assert "does not exist" in str(e.value)


def test_upload_memory_is_bounded_by_the_part_size(s3: Any, options: dict[str, Any]) -> None:
    out = new_bucket(s3)
    total = 96 * MIB
    archive = failing_archive(total + 1, OSError(), total)
    tracemalloc.start()
    try:
        upload(archive, f"s3://{out}/big.zip", part_size=8 * MIB, storage_options=options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # about three parts (the buffer being filled, the copy in flight): not the 96 MiB archive
    assert peak < 4 * 8 * MIB, f"peak {peak / MIB:.1f} MiB"
    head = s3.head_object(Bucket=out, Key="big.zip")
    assert head["ContentLength"] == archive.size


# -- the example ---------------------------------------------------------------------------


def test_example_app(bucket: str, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("starlette")
    import httpx

    monkeypatch.setenv("S3_BUCKET", bucket)
    monkeypatch.setenv("S3_PREFIX", "media/")
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    sys.modules.pop("s3_download", None)
    import s3_download

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=s3_download.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            page = await client.get("/")
            form = {"key": ["media/hello.txt", "media/été/photo.jpg"]}
            zipped = await client.get("/download", params=form)
            refused = await client.get("/download", params={"key": ["media/../secret"]})
            exported = await client.get("/export", params=form)
            return page, zipped, refused, exported

    page, zipped, refused, exported = anyio.run(run)
    assert page.status_code == 200
    assert "media/video.mp4" in page.text
    assert zipped.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert zf.read("hello.txt") == OBJECTS["media/hello.txt"]
    assert zf.read("été/photo.jpg") == OBJECTS["media/été/photo.jpg"]
    assert refused.status_code == 400
    assert exported.status_code == 200
    uri = exported.json()["uri"]
    assert uri.startswith(f"s3://{bucket}/exports/")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    data = s3.get_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"))["Body"].read()
    assert zipfile.ZipFile(io.BytesIO(data)).read("hello.txt") == OBJECTS["media/hello.txt"]


# -- the command line: objects in, an object out -------------------------------------------


def test_cli_build_from_and_into_a_bucket(
    bucket: str, endpoint: str, s3: Any, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(manifest_for(bucket)))
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "zipware",
            "build",
            str(manifest),
            "--allow-uri",
            f"s3://{bucket}/media",
            "-o",
            f"s3://{bucket}/exports/out.zip",
            "--quiet",
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    body = s3.get_object(Bucket=bucket, Key="exports/out.zip")["Body"].read()
    assert_zip(body, expected_files())
    # an object outside --allow-uri: exit 2 with the problem, nothing uploaded
    refused = subprocess.run(
        [sys.executable, "-m", "zipware", "build", str(manifest), "-o", f"s3://{bucket}/x.zip"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "allow" in refused.stderr and ".uri" in refused.stderr
    assert "x.zip" not in keys(s3, bucket)
    assert multipart_uploads(s3, bucket) == []
