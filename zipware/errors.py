"""Exceptions raised by zipware.

Every exception derives from :class:`ZipwareError`; the ones about bad input also derive
from :class:`ValueError`, so callers that already catch ``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "CRCMismatchError",
    "InvalidMemberError",
    "MissingCRCError",
    "SourceError",
    "SourceSizeError",
    "ZipwareError",
]


class ZipwareError(Exception):
    """Base class of every error zipware raises."""


class InvalidMemberError(ZipwareError, ValueError):
    """One or more members cannot be planned (bad name, duplicate, impossible size...).

    Raised before any byte is produced. ``problems`` lists every problem found, as
    ``(index, name, message)`` tuples, so a caller can report all of them at once.
    """

    def __init__(self, problems: list[tuple[int, str, str]]) -> None:
        self.problems = problems
        shown = "; ".join(
            msg if i < 0 else f"member {i} ({name!r}): {msg}" for i, name, msg in problems[:10]
        )
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(shown + more)


class MissingCRCError(ZipwareError, ValueError):
    """A byte range needs CRC-32 values that are neither declared nor learned yet."""

    def __init__(self, indexes: list[int]) -> None:
        self.indexes = indexes
        super().__init__(
            f"the range needs the CRC-32 of {len(indexes)} member(s) that are not known "
            f"(first: member {indexes[0] if indexes else '?'})"
        )


class SourceError(ZipwareError):
    """A member's source failed while the archive was being produced.

    After this error the archive stream stops: no further byte is produced, so the
    consumer sees a truncated transfer instead of an archive that looks complete.
    """

    def __init__(self, index: int, name: str, message: str) -> None:
        self.index = index
        self.name = name
        self.detail = message
        super().__init__(f"member {index} ({name!r}): {message}")


class SourceSizeError(SourceError):
    """A source yielded fewer or more bytes than the size declared for it."""


class CRCMismatchError(SourceError):
    """A source's bytes do not match the CRC-32 declared for them."""
