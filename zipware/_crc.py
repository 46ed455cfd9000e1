"""The fastest CRC-32 available: ISA-L, then zlib-ng, then the standard library."""

from __future__ import annotations

from collections.abc import Callable

crc32: Callable[[bytes | bytearray | memoryview, int], int]
try:
    from isal.isal_zlib import crc32 as _isal_crc32

    crc32 = _isal_crc32
    IMPLEMENTATION = "isal"
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from zlib_ng.zlib_ng import crc32 as _ng_crc32  # type: ignore[import-not-found]

        crc32 = _ng_crc32
        IMPLEMENTATION = "zlib-ng"
    except ImportError:
        from zlib import crc32 as _zlib_crc32

        crc32 = _zlib_crc32
        IMPLEMENTATION = "zlib"

__all__ = ["IMPLEMENTATION", "crc32"]
