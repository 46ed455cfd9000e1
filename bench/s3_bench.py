"""An archive of 1,000 objects of 1 MiB from a local S3 server (moto): metadata, TTFB, MB/s, RSS.

    pip install -e '.[s3,test]'      # s3fs, and moto's server
    python bench/s3_bench.py         # 1000 x 1 MiB; about a minute
    python bench/s3_bench.py --objects 200 --object-kib 256

A moto server is started on a free loopback port and filled once with boto3. Each row then
runs in a fresh Python process (so its peak RSS is its own) and prints one line of JSON:

| row | what it does |
|---|---|
| raw GETs (baseline) | no zipware: boto3 ``get_object`` of each object in turn, bodies dropped |
| sequential metadata | ``prepare``, ``head_concurrency=1``: one HEAD after another; then streams |
| concurrent metadata | ``prepare``, default ``head_concurrency`` (16); then streams (sync) |
| async | ``aprepare`` and ``Archive.astream`` with one member read ahead (the ASGI path) |
| upload | ``prepare``, then ``zipware.upload.upload`` into the same server (16 MiB parts) |

*metadata* is the time ``prepare`` takes (decode, one HEAD per object, plan); *TTFB* is from
the start to the archive's first chunk; *stream* from the first chunk to the last, and MB/s is
10^6 bytes of member data per second of it. Reading an object costs one ranged GET per 4 MiB
(s3fs pins them with If-Match to the ETag prepare found; no second HEAD).

moto runs on the same 2 cores and answers a request in about 10 ms of its own CPU, so on
plain loopback concurrency cannot win much: the server is the bottleneck. Every row is run
twice: straight to moto, and through a loopback proxy in this process that holds each request
for ``--latency-ms`` (default 20) before passing it on, as a real bucket's round trip would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

HOST = "127.0.0.1"
ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
ROWS = ("raw GETs (baseline)", "sequential metadata", "concurrent metadata", "async", "upload")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("moto server did not start") from None
            time.sleep(0.1)


_METHODS = (b"GET ", b"HEAD ", b"PUT ", b"POST ", b"DELETE ")


def start_latency_proxy(upstream: str, latency: float) -> str:
    """A loopback TCP proxy to ``upstream`` that holds each request ``latency`` seconds."""
    host, port = upstream.removeprefix("http://").split(":")
    ready = threading.Event()
    bound: list[int] = []

    async def pipe(reader: Any, writer: Any, delay: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if delay and data.startswith(_METHODS):  # a request's first bytes
                    await asyncio.sleep(latency)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r: Any, client_w: Any) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_r, server_w, True), pipe(server_r, client_w, False))

    async def serve() -> None:
        server = await asyncio.start_server(handle, HOST, 0)
        bound.append(server.sockets[0].getsockname()[1])
        ready.set()
        await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    ready.wait(10)
    return f"http://{HOST}:{bound[0]}"


def fill(endpoint: str, bucket: str, objects: int, size: int) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    for i in range(objects):
        body = i.to_bytes(4, "little") * (size // 4)
        s3.put_object(Bucket=bucket, Key=f"media/{i:05d}.bin", Body=body)


def manifest(bucket: str, objects: int) -> bytes:
    entries = [
        {"name": f"{i:05d}.bin", "uri": f"s3://{bucket}/media/{i:05d}.bin"} for i in range(objects)
    ]
    return json.dumps({"version": 1, "filename": "bench.zip", "entries": entries}).encode()


def data_bytes(plan: Any) -> int:
    return sum(plan.file_size(i) for i in range(len(plan)))


def run_row(row: str, endpoint: str, bucket: str, objects: int) -> dict[str, Any]:
    """One row, in this process; returns its timings and peak RSS."""
    import anyio

    from zipware.policy import Policy
    from zipware.prepare import aprepare, prepare
    from zipware.upload import upload

    options = {"client_kwargs": {"endpoint_url": endpoint}}
    body = manifest(bucket, objects)
    concurrency = 1 if row == "sequential metadata" else Policy().head_concurrency
    policy = Policy(
        allow_uris=(f"s3://{bucket}/media",),
        storage_options=options,
        head_concurrency=concurrency,
    )
    first: float | None = None
    total = 0
    t0 = time.perf_counter()
    if row.startswith("raw"):
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint)
        prepared = time.perf_counter()
        for i in range(objects):
            data = s3.get_object(Bucket=bucket, Key=f"media/{i:05d}.bin")["Body"].read()
            if first is None:
                first = time.perf_counter()
            total += len(data)
        end = time.perf_counter()
        return {
            "row": row,
            "metadata_s": 0.0,
            "ttfb_s": first - t0,
            "stream_s": end - first,
            "mb_s": total / 1e6 / (end - first),
            "rss_mib": peak_rss_mib(),
        }
    if row == "async":

        async def main() -> tuple[float, int, float]:
            nonlocal first, total
            download = await aprepare(body, policy)
            ready = time.perf_counter()

            async def sink(chunk: bytes) -> None:
                nonlocal first, total
                if first is None:
                    first = time.perf_counter()
                total += len(chunk)

            await download.archive.astream(sink, lookahead=1)
            return ready, download.size, data_bytes(download.archive.plan)

        prepared, size, data = anyio.run(main)
    else:
        download = prepare(body, policy)
        prepared = time.perf_counter()
        size = download.size
        data = data_bytes(download.archive.plan)
        if row == "upload":
            first = prepared  # the upload starts sending with its first part
            total = upload(
                download.archive, f"s3://{bucket}/out/bench.zip", storage_options=options
            )
        else:
            for chunk in download.archive:
                if first is None:
                    first = time.perf_counter()
                total += len(chunk)
    end = time.perf_counter()
    assert total == size, (total, size)
    assert first is not None
    return {
        "row": row,
        "metadata_s": prepared - t0,
        "ttfb_s": first - t0,
        "stream_s": end - first,
        "mb_s": data / 1e6 / (end - first),
        "rss_mib": peak_rss_mib(),
        "size": size,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--object-kib", type=int, default=1024)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:  # a child: one row
        print(json.dumps(run_row(args.row, args.endpoint, args.bucket, args.objects)))
        return 0
    os.environ.update(ENV)
    proc, endpoint = start_moto()
    try:
        bucket = "zipware-bench"
        t = time.perf_counter()
        fill(endpoint, bucket, args.objects, args.object_kib * 1024)
        filled = time.perf_counter() - t
        slow = start_latency_proxy(endpoint, args.latency_ms / 1000)
        results = []
        for label, url in (("loopback", endpoint), (f"+{args.latency_ms:g} ms", slow)):
            for row in ROWS:
                out = subprocess.run(
                    [
                        *(sys.executable, __file__, "--row", row, "--endpoint", url),
                        *("--bucket", bucket, "--objects", str(args.objects)),
                    ],
                    check=False,
                    capture_output=True,
                    text=True,
                    env={**os.environ, **ENV},
                    cwd=tempfile.gettempdir(),
                )
                if out.returncode:
                    sys.exit(f"row {row!r} ({label}) failed:\n{out.stderr}")
                results.append({**json.loads(out.stdout.strip().splitlines()[-1]), "net": label})
    finally:
        proc.terminate()
        proc.wait(10)
    baseline = subprocess.run(
        [
            sys.executable,
            "-c",
            "import s3fs, zipware.prepare, zipware.upload, resource;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    load = os.getloadavg()[0]
    print(
        f"{args.objects} objects x {args.object_kib} KiB from moto on {HOST} "
        f"({platform.python_version()}, {os.cpu_count()} cores, load {load:.2f}; "
        f"bucket filled in {filled:.1f} s; imports alone: {float(baseline.stdout):.0f} MiB RSS)\n"
    )
    print("| network | row | metadata (s) | TTFB (s) | stream (s) | MB/s | peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['net']} | {r['row']} | {r['metadata_s']:.2f} | {r['ttfb_s']:.2f} "
            f"| {r['stream_s']:.2f} | {r['mb_s']:.0f} | {r['rss_mib']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
