"""nginx mod_zip manifests, read as zipware manifests.

A backend written for nginx's mod_zip answers with the header ``X-Archive-Files: zip`` and
a body of lines ``CRC SIZE LOCATION NAME``: the CRC-32 in hex or ``-``, the size in bytes,
the location (URL-encoded, optionally with ``?args``) and the member name (the rest of the
line; spaces allowed). ``0 0 @directory NAME/`` makes a directory. Such a backend can move
behind zipware with no change: locations are fetched from the backend itself (``base_url``)
or mapped onto a local directory (``root``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

from werkzeug.http import parse_options_header

from .manifest import Entry, Manifest, ManifestError, Problem

__all__ = ["HEADER", "is_modzip", "parse"]

HEADER = "X-Archive-Files"

# the field grammar of mod_zip's own parser: hex CRC or "-", spaces, decimal size, spaces,
# a location without spaces or "?", optional "?args", spaces, then the name
_LINE = re.compile(
    r"(?P<crc>[0-9a-fA-F]{1,8}|-) +(?P<size>[0-9]+) +(?P<location>[^? ]+)"
    r"(?:\?(?P<args>[^ ]+))? +(?P<name>[^\r\n\x00]+)"
)


def is_modzip(status: int, headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a response is a mod_zip file list (status 200, ``X-Archive-Files: zip``)."""
    return status == 200 and any(
        k.lower() == "x-archive-files" and v.strip().lower() == "zip" for k, v in headers
    )


def _filename(headers: Iterable[tuple[str, str]]) -> str | None:
    for k, v in headers:
        if k.lower() == "content-disposition":
            name = parse_options_header(v)[1].get("filename")
            if name:
                return name.replace("/", "_").replace("\\", "_")
    return None


def parse(
    body: bytes,
    headers: Iterable[tuple[str, str]] = (),
    *,
    base_url: str | None = None,
    root: str | None = None,
) -> Manifest:
    """A :class:`Manifest` from a mod_zip body; raise :class:`ManifestError` on bad lines.

    Locations become ``url`` entries under ``base_url`` (kept URL-encoded, as mod_zip's
    subrequests send them), or ``path`` entries under ``root`` (``%XX``-decoded; ``+``
    stays a plus, as in mod_zip). The download's name comes from the response's
    Content-Disposition, as in mod_zip.
    """
    if (base_url is None) == (root is None):
        raise ValueError("give exactly one of base_url and root")
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem("$", f"mod_zip list is not UTF-8: {exc}")]) from None
    entries: list[Entry] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.fullmatch(line.strip(" "))
        if m is None:
            problems.append(Problem(f"line {number}", "not 'CRC SIZE LOCATION NAME'"))
            continue
        name = m["name"].rstrip(" ")
        location = m["location"]
        if location == "@directory":
            entries.append(Entry(name=name if name.endswith("/") else name + "/"))
            continue
        crc = None if m["crc"] == "-" else int(m["crc"], 16)
        size = int(m["size"])
        try:
            if base_url is not None:
                query = f"?{m['args']}" if m["args"] else ""
                url = base_url.rstrip("/") + "/" + location.lstrip("/") + query
                entries.append(Entry(name=name, url=url, size=size, crc32=crc))
            else:
                assert root is not None
                path = root.rstrip("/") + "/" + unquote(location).lstrip("/")
                entries.append(Entry(name=name, path=path, size=size, crc32=crc))
        except (ValueError, TypeError) as exc:  # __post_init__ checks
            problems.append(Problem(f"line {number}", str(exc)))
    if problems:
        raise ManifestError(problems)
    return Manifest(version=1, filename=_filename(headers), entries=entries)
