"""Stream an archive into object storage, as a multipart upload that is aborted on failure.

::

    from zipware.prepare import prepare
    from zipware.upload import upload

    download = prepare(manifest, policy)
    upload(download.archive, "s3://exports/2024/photos.zip")

The archive is produced and sent part by part (s3fs's ``open(uri, "wb", block_size=...)``
does the multipart upload), so memory stays bounded by the part size whatever the archive's
size. Since the archive's exact size is known before the first byte, the part size is chosen
up front so the upload fits S3's limit of 10,000 parts.

On any failure (a member's source fails, the store refuses a part, the caller interrupts)
the multipart upload is aborted: no object appears, an existing object at ``uri`` is left as
it was, and no half-finished upload is left to be billed. This is done by hand on purpose:
an fsspec file used as ``with fs.open(...) as f:`` *completes* the upload when an exception
leaves the block, publishing a truncated object, and would do the same when the garbage
collector closes a file that was not.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from .archive import Archive
from .errors import SourceError, ZipwareError
from .sources import explain_object_error, filesystem, redact_uri, scrub, split_uri

__all__ = ["DEFAULT_PART_SIZE", "MAX_PARTS", "MIN_PART_SIZE", "UploadError", "upload"]

logger = logging.getLogger("zipware")

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 5 * MIB  # S3: every part but the last is at least 5 MiB...
MAX_PART_SIZE = 5 * 1024 * MIB  # ...and at most 5 GiB
MAX_PARTS = 10_000  # S3: parts in one multipart upload


class UploadError(ZipwareError, OSError):
    """The object store refused or failed the upload; the multipart upload was aborted."""


def part_size_for(size: int, part_size: int | None = None) -> int:
    """The part size for an archive of ``size`` bytes.

    ``None``: :data:`DEFAULT_PART_SIZE`, or more (a whole number of MiB) when the archive
    needs it to fit in :data:`MAX_PARTS` parts. A given size is checked against S3's limits.
    """
    needed = math.ceil(size / MAX_PARTS)
    if part_size is None:
        return max(DEFAULT_PART_SIZE, math.ceil(needed / MIB) * MIB)
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(f"part_size must be between 5 MiB and 5 GiB, not {part_size}")
    if part_size < needed:
        mib = math.ceil(needed / MIB)
        raise ValueError(
            f"a {size}-byte archive in parts of {part_size} bytes needs more than "
            f"{MAX_PARTS} parts: use part_size={mib * MIB} ({mib} MiB) or more"
        )
    return part_size


def upload(
    archive: Archive,
    uri: str,
    *,
    part_size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    fs: Any = None,
    open_options: Mapping[str, Any] | None = None,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Write ``archive`` to the object ``uri`` (``s3://bucket/key``); return its size.

    ``part_size``: bytes per part (default: :func:`part_size_for`). Memory peaks at about
    three times the part size (the part being filled, grown in place, and the copy being
    sent): 48 MiB for the default 16 MiB. Parts are sent one at a time, while the archive
    waits. ``storage_options`` configure the fsspec filesystem (credentials,
    ``{"client_kwargs": {"endpoint_url": ...}}``...); without them fsspec's standard
    environment and configuration are used. ``fs`` is a ready filesystem instead.
    ``open_options`` go to ``fs.open`` (default for S3: ``ContentType: application/zip``).
    ``progress`` is called with the size of each chunk handed to the store.

    A member that fails raises its :class:`~zipware.errors.SourceError`; a failure of the
    store raises :class:`UploadError`. Either way the multipart upload is aborted first.
    """
    protocol, bucket, key = split_uri(uri)
    if not key or key.endswith("/"):
        raise ValueError(f"{redact_uri(uri)} names a bucket or a folder, not an object")
    size = archive.size
    block = part_size_for(size, part_size)
    if open_options is None:
        open_options = {"ContentType": "application/zip"} if protocol in ("s3", "s3a") else {}
    where = redact_uri(uri)
    try:
        if fs is None:
            fs = filesystem(protocol, storage_options)
        f = fs.open(f"{bucket}/{key}", "wb", block_size=block, **open_options)
    except Exception as exc:
        raise UploadError(_explain(exc, uri, storage_options)) from exc
    written = 0
    chunks = archive.iter_range()
    try:
        try:
            for chunk in chunks:
                f.write(chunk)  # a part goes out each time part_size bytes are held
                written += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        finally:
            chunks.close()
        if written != size:  # pragma: no cover - the encoder guarantees it
            raise UploadError(f"the archive gave {written} of its {size} bytes")
        f.close()  # the last part, then CompleteMultipartUpload (or one PUT if small)
    except BaseException as exc:
        _abort(f, where, storage_options)
        if isinstance(exc, (SourceError, UploadError)) or not isinstance(exc, Exception):
            raise
        raise UploadError(_explain(exc, uri, storage_options)) from exc
    logger.info("zipware: uploaded %s (%d bytes)", where, written)
    return written


def _explain(exc: BaseException, uri: str, storage_options: Mapping[str, Any] | None) -> str:
    return "upload failed: " + explain_object_error(exc, uri, storage_options, action="write")


def _abort(f: Any, where: str, storage_options: Mapping[str, Any] | None) -> None:
    """Abort the upload behind ``f`` and make sure nothing commits it later."""
    try:
        discard = getattr(f, "discard", None)
        if discard is not None:
            discard()  # s3fs: AbortMultipartUpload, if one was started; drops the buffer
    except Exception as exc:
        logger.warning(
            "zipware: could not abort the multipart upload of %s (%s); a lifecycle rule "
            "with AbortIncompleteMultipartUpload removes what is left",
            where,
            scrub(f"{type(exc).__name__}: {exc}", storage_options),
        )
    from fsspec.spec import AbstractBufferedFile

    if isinstance(f, AbstractBufferedFile):
        # close() would flush and commit: mark it closed instead (also stops __del__)
        f.closed = True
    else:  # a file written in place (local): close the handle, the partial file stays
        with contextlib.suppress(Exception):  # already failing: the first error is raised
            f.close()
