"""Aggregate the sweep.json of several seeds into one Markdown table (mean and min-max).

    python scripts/sweep_table.py runs/sweep-s0/sweep.json runs/sweep-s1/sweep.json ...

One row per point id present in every file: kind, size as a share of the highest-precision
model, share of its budget used, and validation and (where recorded) test accuracy. Points
whose mean accuracy no cheaper-or-equal point beats are marked as the front (on the
accuracy the table is sorted by: test when every point has it, else validation).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean


def _span(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    low, high = min(values) * scale, max(values) * scale
    return f"{mean(values) * scale:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def aggregate(paths: list[Path]) -> str:
    sweeps = [json.loads(p.read_text()) for p in paths]
    ids = [p["id"] for p in sweeps[0]["points"]]
    common = [i for i in ids if all(i in {p["id"] for p in s["points"]} for s in sweeps)]
    rows = []
    for pid in common:
        pts = [next(p for p in s["points"] if p["id"] == pid) for s in sweeps]
        rows.append({
            "id": pid, "kind": pts[0]["kind"],
            "share": [p["share"] for p in pts],
            "used": [p["used"] for p in pts if p.get("used") is not None],
            "val": [p["accuracy"] for p in pts],
            "test": [p["test_accuracy"] for p in pts if p.get("test_accuracy") is not None],
        })
    key = "test" if all(len(r["test"]) == len(sweeps) for r in rows) else "val"
    for r in rows:
        r["score"] = mean(r[key])
        r["size"] = mean(r["share"])
    for r in rows:
        r["front"] = not any(
            o is not r and o["size"] <= r["size"] and o["score"] >= r["score"]
            and (o["size"] < r["size"] or o["score"] > r["score"]) for o in rows
        )
    cost = sweeps[0]["cost"]
    lines = [
        f"| point | kind | {cost} (% of top) | budget used (%) | validation acc (%) | "
        f"test acc (%) | front |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["size"]):
        lines.append(
            f"| {r['id']} | {r['kind']} | {_span(r['share'])} | {_span(r['used'])} | "
            f"{_span(r['val'])} | {_span(r['test'])} | {'*' if r['front'] else ''} |"
        )
    seeds = ", ".join(str(s.get("seed")) for s in sweeps)
    lines.append("")
    lines.append(f"{len(sweeps)} seeds ({seeds}); mean (min-max); front on mean {key} accuracy.")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/sweep_table.py SWEEP.json [SWEEP.json ...]")
    print(aggregate([Path(a) for a in sys.argv[1:]]))
