"""The safety policy: which local files, URLs and objects a manifest may name, how big it may be.

One :class:`Policy` object is shared by the CLI, the middlewares and the proxy. Its defaults
are safe: no local file (no root configured), no URL and no object (empty allow-lists).
"""

from __future__ import annotations

import contextlib
import os
import stat as _stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .errors import ZipwareError

__all__ = ["Policy", "PolicyError"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# protocols fsspec also knows that allow_uris must not open: local files go through `roots`
# (symlink checks), web resources through `allow_urls` (redirect checks)
_ODD_TAILS = frozenset({"", ".", ".."})  # last components resolve_paths leaves to resolve_path
_MODE = attrgetter("st_mode")
_NOT_OBJECT_STORAGE = frozenset({"file", "local", "http", "https", "data", "ftp", "sftp", "ssh"})


class PolicyError(ZipwareError, ValueError):
    """A manifest names something the policy does not allow."""


@dataclass(frozen=True)
class _URLPrefix:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, prefix: str) -> _URLPrefix:
        parts = urlsplit(prefix)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"allow_urls entry {prefix!r} must be an http(s) URL with a host")
        return cls(scheme, parts.hostname, parts.port or _DEFAULT_PORTS[scheme], parts.path)

    def admits(self, scheme: str, host: str, port: int, path: str) -> bool:
        if (scheme, host, port) != (self.scheme, self.host, self.port):
            return False
        if not self.path or self.path.endswith("/"):
            return path.startswith(self.path)
        return path == self.path or path.startswith(self.path + "/")


@dataclass(frozen=True)
class _URIPrefix:
    protocol: str
    bucket: str
    key: str

    @classmethod
    def parse(cls, prefix: str) -> _URIPrefix:
        from .sources import split_uri

        scheme = prefix.partition("://")[0].lower()
        if scheme in _NOT_OBJECT_STORAGE:
            raise ValueError(
                f"allow_uris entry {prefix!r}: {scheme}:// is not object storage "
                "(use roots for local files, allow_urls for http(s))"
            )
        try:
            protocol, bucket, key = split_uri(prefix)
        except ValueError:
            raise ValueError(
                f"allow_uris entry {prefix!r} must be protocol://bucket or protocol://bucket/prefix"
            ) from None
        if "::" in prefix:
            raise ValueError(f"allow_uris entry {prefix!r} is a chained URL")
        return cls(protocol, bucket, key)

    def admits(self, protocol: str, bucket: str, key: str) -> bool:
        if (protocol, bucket) != (self.protocol, self.bucket):
            return False
        if not self.key or self.key.endswith("/"):
            return key.startswith(self.key)
        return key == self.key or key.startswith(self.key + "/")


def _real_roots(roots: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    return tuple(os.path.realpath(os.fspath(r)) for r in roots)


@dataclass(frozen=True)
class Policy:
    """What a manifest may refer to, and the limits it must stay within.

    * ``roots``: directories local ``path`` entries must resolve into (symlinks followed).
      A relative path is resolved against the first root.
    * ``allow_urls``: URL prefixes (scheme, host, port and path prefix) that ``url`` entries
      and their redirects must stay within. ``https://cdn.example.com/media/`` admits
      everything under ``/media/``; ``https://cdn.example.com`` the whole host.
    * ``allow_uris``: object storage prefixes (``protocol://bucket/prefix``) that ``uri``
      entries must be inside. ``s3://media/public`` admits ``s3://media/public`` and
      everything under ``s3://media/public/`` (not ``s3://media/public-2/``);
      ``s3://media`` the whole bucket. Objects are read through fsspec (s3fs for ``s3://``).
    * ``storage_options``: keyword arguments of the fsspec filesystem that reads ``uri``
      entries (credentials, ``{"client_kwargs": {"endpoint_url": ...}}``, region...). Empty:
      fsspec's standard environment variables and configuration files. Never shown in a
      ``repr``, a log or an error.
    * limits: ``max_entries``, ``max_manifest_bytes``, ``max_archive_bytes`` (None: no
      limit), ``max_name_bytes`` (the format's own limit is 65,535).
    * URL fetching: ``url_timeout`` seconds, ``max_redirects``, ``head_concurrency`` (HEAD
      requests in flight at once when sizes must be found; also the metadata requests of
      ``uri`` objects).
    """

    roots: tuple[str, ...] = ()
    allow_urls: tuple[str, ...] = ()
    max_entries: int = 200_000
    max_manifest_bytes: int = 64 * 1024 * 1024
    max_archive_bytes: int | None = None
    max_name_bytes: int = 65_535
    url_timeout: float = 30.0
    max_redirects: int = 5
    head_concurrency: int = 16
    allow_uris: tuple[str, ...] = ()
    storage_options: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    _prefixes: tuple[_URLPrefix, ...] = field(init=False, repr=False, compare=False)
    _uri_prefixes: tuple[_URIPrefix, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_manifest_bytes", "max_name_bytes", "head_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_redirects < 0 or self.url_timeout <= 0:
            raise ValueError("max_redirects must be >= 0 and url_timeout > 0")
        # frozen: normalise through object.__setattr__ once, at construction
        object.__setattr__(self, "roots", _real_roots(self.roots))
        object.__setattr__(self, "allow_urls", tuple(self.allow_urls))
        object.__setattr__(self, "_prefixes", tuple(_URLPrefix.parse(p) for p in self.allow_urls))
        object.__setattr__(self, "allow_uris", tuple(self.allow_uris))
        object.__setattr__(
            self, "_uri_prefixes", tuple(_URIPrefix.parse(p) for p in self.allow_uris)
        )
        # a read-only copy: the caller's dict may change, the policy does not
        object.__setattr__(
            self, "storage_options", MappingProxyType(dict(self.storage_options or {}))
        )

    # -- local files ----------------------------------------------------------------------

    def _inside(self, real: str) -> bool:
        for root in self.roots:
            if real == root or real.startswith(root if root.endswith(os.sep) else root + os.sep):
                return True
        return False

    def resolve_path(
        self, path: str, dir_cache: dict[str, tuple[str, bool]] | None = None
    ) -> tuple[str, os.stat_result]:
        """The real path of a local ``path`` entry and its ``stat``; raises PolicyError.

        ``dir_cache`` remembers each directory's real path and whether it lies inside the
        roots, across calls: 100,000 files in a few folders cost one ``realpath`` per folder
        and one ``lstat`` per file.
        """
        if not self.roots:
            raise PolicyError("local files are not allowed (no root is configured)")
        if "\x00" in path:
            raise PolicyError("path contains a NUL byte")
        # plain string work: os.path.join/split cost more than the lstat itself here
        joined = path if path[:1] == "/" else f"{self.roots[0]}/{path}"
        head, _, tail = joined.rpartition("/")
        if tail in ("", ".", "..") or not head:
            real = os.path.realpath(joined)
            inside = self._inside(real)
        else:
            cache = {} if dir_cache is None else dir_cache
            known = cache.get(head)
            if known is None:
                real_head = os.path.realpath(head)
                known = cache[head] = (real_head, self._inside(real_head))
            real = f"{known[0]}/{tail}" if known[0] != "/" else f"/{tail}"
            inside = known[1]
        if not inside:
            raise PolicyError(f"path {path!r} is outside the allowed roots")
        try:
            st = os.lstat(real)
            if _stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(real)
                if not self._inside(real):
                    raise PolicyError(f"path {path!r} is a link that leads outside the roots")
                st = os.stat(real)
        except FileNotFoundError:
            raise PolicyError(f"path {path!r} does not exist") from None
        except PermissionError:
            raise PolicyError(f"path {path!r} cannot be read (permission denied)") from None
        except OSError as exc:
            raise PolicyError(f"path {path!r}: {exc.strerror}") from None
        if not _stat.S_ISREG(st.st_mode):
            raise PolicyError(f"path {path!r} is not a regular file")
        return real, st

    def resolve_paths(
        self, paths: list[str], dir_cache: dict[str, tuple[str, bool]] | None = None
    ) -> list[tuple[str, os.stat_result] | None]:
        """:meth:`resolve_path` for many paths; None where it would raise.

        The same rules, a column at a time: on a manifest of 100,000 files in a few
        folders the per-path work is one string join and one ``lstat``, with the rest done
        once per folder. A path that needs more (a symlink, ``..`` as its last component,
        an absolute path) goes through :meth:`resolve_path` alone, which the caller also
        calls to say why a path failed.
        """
        reals, stats = self._resolve_columns(paths, dir_cache)
        return [None if real is None else (real, st) for real, st in zip(reals, stats, strict=True)]

    def _resolve_columns(
        self, paths: list[str], dir_cache: dict[str, tuple[str, bool]] | None = None
    ) -> tuple[list[str | None], list[os.stat_result]]:
        """:meth:`resolve_paths` as two columns: real paths (None where refused), stats."""
        n = len(paths)
        reals: list[str | None] = [None] * n
        stats: list[os.stat_result] = [None] * n  # type: ignore[list-item]
        if not self.roots or not paths:
            return reals, stats
        cache = {} if dir_cache is None else dir_cache
        joined = "\x00" + "\x00".join(paths) + "\x00"
        # a NUL, or an absolute path: each path on its own
        if joined.count("\x00") == n + 1 and "\x00/" not in joined:
            # no last component that is empty, "." or "..": each real path may be the root
            # joined to the path as it is, when no folder on the way is a link or needs
            # normalising ("a//b", "./a")
            tails_plain = not any(odd in joined for odd in ("/\x00", "/.\x00", "/..\x00"))
            tails_plain = tails_plain and "\x00.\x00" not in joined and "\x00..\x00" not in joined
            del joined
            root = self.roots[0]
            split = list(map(str.rpartition, paths, repeat("/")))
            # each folder once: its real path, or None when outside the roots
            folders: dict[str, str | None] = {}
            for head in {part[0] for part in split}:
                full = f"{root}/{head}" if head else root
                known = cache.get(full)
                if known is None:
                    real_head = os.path.realpath(full)
                    known = cache[full] = (real_head, self._inside(real_head))
                # "/" as a prefix would double the slash below
                folders[head] = known[0].rstrip("/") if known[1] else None
            base = root.rstrip("/")
            if tails_plain and all(
                folder == (f"{base}/{head}" if head else base) for head, folder in folders.items()
            ):
                reals = [f"{base}/{path}" for path in paths]  # (the same strings, made faster)
            else:
                reals = [
                    None
                    if (folder := folders[head]) is None or tail in _ODD_TAILS
                    else f"{folder}/{tail}"
                    for head, _, tail in split
                ]
            del split, folders
            try:
                stats = (
                    list(map(os.lstat, reals))  # type: ignore[arg-type]
                    if None not in reals
                    else [None if real is None else os.lstat(real) for real in reals]  # type: ignore[misc]
                )
            except OSError:
                reals = [None] * n  # the rare missing file: each path on its own
            else:
                if None in reals or set(map(_stat.S_IFMT, map(_MODE, stats))) != {_stat.S_IFREG}:
                    reals = [
                        real if st is not None and _stat.S_ISREG(st.st_mode) else None
                        for real, st in zip(reals, stats, strict=True)
                    ]
        if None in reals:
            for k, real in enumerate(reals):
                if real is None:
                    with contextlib.suppress(PolicyError):
                        reals[k], stats[k] = self.resolve_path(paths[k], cache)
        return reals, stats

    # -- URLs -----------------------------------------------------------------------------

    def check_url(self, url: str) -> None:
        """Raise :class:`PolicyError` unless ``url`` is an http(s) URL in the allow-list."""
        from .sources import redact_url

        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise PolicyError("URL cannot be parsed") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise PolicyError(f"URL scheme {parts.scheme!r} is not allowed (http or https)")
        if not parts.hostname:
            raise PolicyError("URL has no host")
        path = parts.path or "/"
        lowered = path.lower()
        # a server normalises these, which would step out of an allowed prefix
        if "%2e" in lowered or "%2f" in lowered or "%5c" in lowered or "\\" in path:
            raise PolicyError(f"URL {redact_url(url)} has an encoded dot, slash or backslash")
        # ";params" too: some servers (Tomcat) read "..;x" as ".."
        segments = [segment.partition(";")[0] for segment in path.split("/")]
        if ".." in segments or "." in segments:
            raise PolicyError(f"URL {redact_url(url)} has a '.' or '..' segment")
        port = port or _DEFAULT_PORTS[scheme]
        if not any(p.admits(scheme, parts.hostname, port, path) for p in self._prefixes):
            raise PolicyError(f"URL {redact_url(url)} is not in the allow-list")

    # -- object storage -------------------------------------------------------------------

    def check_uri(self, uri: str) -> tuple[str, str, str]:
        """``(protocol, bucket, key)`` of a ``uri`` entry; PolicyError unless it is allowed.

        The key must name an object (not end in '/') and have no '.' or '..' segment, NUL
        or backslash, which some stores or gateways would normalise out of a prefix.
        """
        from .sources import redact_uri, split_uri

        if not self._uri_prefixes:
            raise PolicyError("object storage URIs are not allowed (allow_uris is empty)")
        try:
            protocol, bucket, key = split_uri(uri)
        except ValueError:
            raise PolicyError("URI is not of the form protocol://bucket/key") from None
        shown = redact_uri(uri)
        if "::" in uri:
            raise PolicyError(f"URI {shown} is a chained URL")
        if not key or key.endswith("/"):
            raise PolicyError(f"URI {shown} names a bucket or a folder, not an object")
        if "\x00" in key or "\\" in key:
            raise PolicyError(f"URI {shown} has a NUL or a backslash")
        segments = key.split("/")
        if ".." in segments or "." in segments:
            raise PolicyError(f"URI {shown} has a '.' or '..' segment")
        if not any(p.admits(protocol, bucket, key) for p in self._uri_prefixes):
            raise PolicyError(f"URI {shown} is not in the allow-list")
        return protocol, bucket, key
