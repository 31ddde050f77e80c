"""The documentation stands on its own: links into docs/algorithm.md land on a heading, and
nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALGORITHM = REPO / "docs" / "algorithm.md"
#: Where a citation of docs/algorithm.md may appear.
CITING = ["README.md", "mpsctl/**/*.py", "tests/**/*.py", "configs/**/*.yaml", "docs/*.md"]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _files() -> list[Path]:
    return sorted({p for pattern in CITING for p in REPO.glob(pattern)})


def test_every_algorithm_anchor_exists() -> None:
    headings = re.findall(r"^#+ (.+)$", ALGORITHM.read_text(), flags=re.M)
    anchors = {_slug(h) for h in headings}
    assert {"bias", "ne16-latency", "params_bit-and-bitops", "refine-for-ne16"} <= anchors
    cited = {}
    for path in _files():
        for anchor in re.findall(r"(?:docs/)?algorithm\.md#([\w\-]+)", path.read_text()):
            cited.setdefault(anchor, path.relative_to(REPO))
        if path == ALGORITHM:
            for anchor in re.findall(r"\]\(#([\w\-]+)\)", path.read_text()):
                cited.setdefault(anchor, path.relative_to(REPO))
    assert len(cited) > 10
    missing = {a: str(p) for a, p in cited.items() if a not in anchors}
    assert not missing


def test_nothing_points_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|shared/SPEC|SPEC[- ]?(?:MPS|TARGETS)|SPEC §")
    hits = [str(p.relative_to(REPO)) for p in _files() if p != Path(__file__)
            and outside.search(p.read_text())]
    assert not hits
