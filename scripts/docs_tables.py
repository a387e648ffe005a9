"""Regenerate every results table in README.md and docs/results/*.md from committed results.json.

    python scripts/docs_tables.py           # rewrite the <!-- table ... --> blocks in place
    python scripts/docs_tables.py --check   # exit 1, naming each file whose tables are stale

See privquant.report.tables for the block format. CI runs --check (tests/test_docs.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from privquant.artifacts.atomic import atomic_write_bytes
from privquant.errors import PrivquantError
from privquant.report.tables import render_file

ROOT = Path(__file__).resolve().parents[1]


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs" / "results").glob("*.md"))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report stale files")
    args = ap.parse_args()
    stale = []
    for path in doc_files():
        try:
            old, new = render_file(path, ROOT)
        except PrivquantError as e:  # a block naming a missing file or a bad spec: one line
            print(f"docs_tables: {e}", file=sys.stderr)
            return 2
        if old != new:
            stale.append(path)
            if not args.check:
                atomic_write_bytes(path, new.encode())
    for path in stale:
        print(f"{path.relative_to(ROOT)}: {'stale' if args.check else 'regenerated'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
