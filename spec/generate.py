"""Rewrite ``spec/manifest.schema.json`` from the Structs in :mod:`zipware.manifest`.

Run from anywhere: ``python spec/generate.py``. ``--check`` only compares and exits 1 when
the file is stale (``tests/test_spec.py::test_schema_is_current`` does the same).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parent / "manifest.schema.json"


def schema_text() -> str:
    """The schema exactly as the file should hold it (sorted keys, 2-space indent)."""
    from zipware.manifest import schema

    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = schema_text()
    if "--check" in argv:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is stale: run python spec/generate.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
