"""``python -m zipware`` and the ``zipware`` command: see :mod:`zipware.cli`."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
