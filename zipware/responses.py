"""Manifest responses without a framework: the body and the headers a view returns.

A view answers with a manifest; the zipware middleware in front of the app (WSGI or ASGI)
turns it into the streamed ZIP download. These helpers make that answer from a
:class:`~zipware.manifest.Manifest`, from :class:`~zipware.manifest.Entry` objects, or from
plain dicts (validated the way a manifest's JSON is)::

    body, headers = manifest_parts([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")

``zipware.contrib`` wraps them for Django, Flask and Starlette/FastAPI. Only what can be
checked without the server's policy is checked here (fields, types, one source per entry);
paths, URLs, names and limits are checked by the middleware when it prepares the archive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import msgspec

from .manifest import (
    CONTENT_TYPE,
    TRIGGER_HEADER,
    VERSION,
    Entry,
    Manifest,
    ManifestError,
    Problem,
    _problem,
    encode,
)

__all__ = ["Entries", "manifest_body", "manifest_headers", "manifest_parts"]

Entries: TypeAlias = Manifest | Mapping[str, Any] | Iterable[Entry | Mapping[str, Any]]
"""What the helpers accept: a whole manifest (a :class:`Manifest` or a dict), or its entries
(:class:`Entry` objects or dicts with the same fields as the JSON, in any mix)."""


def _head(fields: Mapping[str, Any], problems: list[Problem]) -> Manifest:
    """A manifest with ``fields`` (validated) and no entries yet."""
    try:
        return msgspec.convert({"version": VERSION, **fields, "entries": []}, Manifest)
    except msgspec.ValidationError as exc:
        problems.append(_problem(exc, "$"))
        return Manifest(version=1, entries=[])


def _entries(items: Iterable[Entry | Mapping[str, Any]], problems: list[Problem]) -> list[Entry]:
    entries: list[Entry] = []
    for i, item in enumerate(items):
        if isinstance(item, Entry):
            entries.append(item)
        elif isinstance(item, Mapping):
            try:
                entries.append(msgspec.convert(item, Entry))
            except msgspec.ValidationError as exc:
                problems.append(_problem(exc, f"$.entries[{i}]"))
        else:
            problems.append(
                Problem(
                    f"$.entries[{i}]", f"expected an Entry or a dict, got {type(item).__name__}"
                )
            )
    return entries


def _is_entry_list(items: object) -> bool:
    return isinstance(items, Iterable) and not isinstance(items, (str, bytes, Mapping))


def _manifest(manifest: Entries, filename: str | None, comment: str | None) -> Manifest:
    """The :class:`Manifest` the helpers' arguments describe; raises :class:`ManifestError`."""
    if isinstance(manifest, (str, bytes, bytearray, memoryview)):
        raise TypeError("give a Manifest, a dict or entries, not JSON (that is already a body)")
    problems: list[Problem] = []
    overrides = {k: v for k, v in (("filename", filename), ("comment", comment)) if v is not None}
    if isinstance(manifest, Manifest):
        if overrides:
            _head(overrides, problems)  # validate the overrides as the JSON would be
        out = msgspec.structs.replace(manifest, **overrides) if overrides else manifest
    elif isinstance(manifest, Mapping):
        out = _head({k: v for k, v in manifest.items() if k != "entries"} | overrides, problems)
        items = manifest.get("entries")
        if items is None:
            problems.append(Problem("$", "Object missing required field `entries`"))
        elif not _is_entry_list(items):
            problems.append(Problem("$.entries", f"expected a list, got {type(items).__name__}"))
        else:
            out.entries = _entries(items, problems)
    else:
        out = _head(overrides, problems)
        out.entries = _entries(manifest, problems)
    if problems:
        raise ManifestError(problems)
    return out


def manifest_body(
    manifest: Entries, *, filename: str | None = None, comment: str | None = None
) -> bytes:
    """The JSON body of a manifest response.

    ``manifest`` is a :class:`Manifest`, a dict of the whole manifest, or an iterable of
    entries (:class:`Entry` objects or dicts). ``filename`` (the download's name) and
    ``comment`` (the archive comment) override the manifest's own when given. Dicts are
    validated like the manifest's JSON; every problem is raised at once as a
    :class:`~zipware.manifest.ManifestError`, each with its JSON path.

    >>> manifest_body([{"name": "a.txt", "text": "hi"}], filename="x.zip")
    b'{"version":1,"filename":"x.zip","entries":[{"name":"a.txt","text":"hi"}]}'
    """
    return encode(_manifest(manifest, filename, comment))


def manifest_headers() -> dict[str, str]:
    """The headers that mark a response as a manifest: its media type and the trigger."""
    return {"Content-Type": CONTENT_TYPE, TRIGGER_HEADER: "1"}


def manifest_parts(
    manifest: Entries, *, filename: str | None = None, comment: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of a manifest response: :func:`manifest_body` and
    :func:`manifest_headers` together, for any framework's response class.

    >>> body, headers = manifest_parts([{"name": "a.txt", "path": "a.txt"}], filename="x.zip")
    """
    return manifest_body(manifest, filename=filename, comment=comment), manifest_headers()
