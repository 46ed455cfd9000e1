"""What the test apps serve; shared by the WSGI and the ASGI app.

The test writes a JSON config and passes its path in ``$ZW_CONFIG``::

    {"root": "/tmp/.../root",            # the only root local paths may use
     "origin": "http://127.0.0.1:PORT",  # a loopback http.server (the allowed URL prefix)
     "flags": "/tmp/.../flags",          # where the test drops the /plain "go" flag
     "manifests": {"zip": {...}, ...}}   # the fixed manifests, by route name

Routes (both apps): ``/<name>`` for each fixed manifest (``X-Zip-Manifest: 1``),
``/zip-crc`` (triggered by the Content-Type instead), ``/zip-split`` (the ``zip`` manifest
sent in three pieces), ``/one?p=PATH&p=PATH`` (a manifest of those local files, no CRC),
``/plain?flag=NAME`` (a streamed non-manifest response that waits for a flag file between
its two chunks) and ``/pid``.

When ``$ZW_AUDIT`` is set, an audit hook logs every ``open`` of a path under the root to
that file, one ``PID PATH`` line per open: the test proves from it that HEAD opens no member
and that GET opens each member once.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from zipware.manifest import CONTENT_TYPE, TRIGGER_HEADER

__all__ = [
    "CONTENT_TYPE",
    "TRIGGER_HEADER",
    "announce",
    "flag_file",
    "load_config",
    "manifest_bodies",
    "one_manifest",
    "policy_options",
    "split3",
]

FLAG_WAIT = 5.0  # seconds /plain waits for its flag before giving up (then says "timeout")


def load_config() -> dict[str, Any]:
    """The config the test wrote; also sets up logging and the audit hook (server mode)."""
    config: dict[str, Any] = json.loads(Path(os.environ["ZW_CONFIG"]).read_text("utf-8"))
    # a production-like setup: warnings and errors from everyone, zipware's info too
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("zipware").setLevel(logging.INFO)
    audit = os.environ.get("ZW_AUDIT")
    if audit:
        _install_audit_hook(config["root"], audit)
    return config


def _install_audit_hook(root: str, log: str) -> None:
    # os.write on a descriptor opened once: writing the log raises no "open" event itself
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    prefix = os.path.realpath(root) + os.sep

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and isinstance(args[0], str) and args[0].startswith(prefix):
            line = f"{os.getpid()} {args[0]}\n"
            os.write(fd, line.encode("utf-8", "surrogateescape"))

    sys.addaudithook(hook)


def announce(what: str) -> None:
    """Tell the harness this process has imported its app (one line per worker)."""
    sys.stderr.write(f"test-app ready: {what} pid={os.getpid()}\n")
    sys.stderr.flush()


def policy_options(config: dict[str, Any]) -> dict[str, Any]:
    return {"roots": [config["root"]], "allow_urls": [config["origin"] + "/"]}


def manifest_bodies(config: dict[str, Any]) -> dict[str, bytes]:
    return {name: json.dumps(m).encode() for name, m in config["manifests"].items()}


def one_manifest(query: str) -> bytes:
    """A manifest of the local files named by the ``p`` parameters (no CRC declared)."""
    paths = parse_qs(query).get("p", [])
    entries = [{"name": p, "path": p} for p in paths]
    return json.dumps({"version": 1, "filename": "one.zip", "entries": entries}).encode()


def split3(body: bytes) -> list[bytes]:
    third = len(body) // 3
    return [body[:third], body[third : 2 * third], body[2 * third :]]


def flag_file(config: dict[str, Any], query: str) -> Path:
    name = parse_qs(query).get("flag", ["none"])[0]
    return Path(config["flags"]) / Path(name).name


def plain_chunks(flag: Path) -> Iterator[bytes]:
    """The /plain body: a first chunk, then (once the test drops the flag) a second one."""
    yield b"first\n"
    deadline = time.monotonic() + FLAG_WAIT
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"go\n" if flag.exists() else b"timeout\n"
