"""Rewrite the README's operation table from mpsctl.search.operations (run after changing
what the converter or the exporters support; tests/deploy/test_operations.py checks it)."""

from __future__ import annotations

import sys
from pathlib import Path

from mpsctl.search.operations import markdown_table

START, END = "<!-- ops-table:start -->", "<!-- ops-table:end -->"


def main() -> int:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        print(f"README.md has no {START} marker", file=sys.stderr)
        return 1
    readme.write_text(f"{head}{START}\n{markdown_table()}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
