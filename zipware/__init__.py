"""zipware: streamed ZIP64 archives with an exact size known before the first byte.

Describe the members, build an :class:`Archive`, and stream it::

    from zipware import Archive, Member, BytesSource

    archive = Archive([Member("a.txt", size=3, source=BytesSource(b"abc"))])
    archive.size          # exact, before any byte is read
    for chunk in archive:  # or: async for chunk in archive
        ...
"""

from __future__ import annotations

from .archive import Archive
from .errors import (
    CRCMismatchError,
    InvalidMemberError,
    MissingCRCError,
    SourceError,
    SourceSizeError,
    ZipwareError,
)
from .plan import Member, Plan, Storage
from .sources import (
    AsyncIterSource,
    BytesSource,
    FileSource,
    FSSpecSource,
    IterSource,
    Source,
    URLSource,
)

__version__ = "0.1.0"

__all__ = [
    "Archive",
    "AsyncIterSource",
    "BytesSource",
    "CRCMismatchError",
    "FSSpecSource",
    "FileSource",
    "InvalidMemberError",
    "IterSource",
    "Member",
    "MissingCRCError",
    "Plan",
    "Source",
    "SourceError",
    "SourceSizeError",
    "Storage",
    "URLSource",
    "ZipwareError",
    "__version__",
]
