"""Aggregate the sweep.json of several seeds into one Markdown table (mean and min-max).

    python scripts/sweep_table.py runs/sweep-s0/sweep.json runs/sweep-s1/sweep.json ...
        [--plot front.png]

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
    """The Markdown table over the sweeps in ``paths``."""
    rows, key, sweeps = _rows(paths)
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


def plot(paths: list[Path], out: Path) -> Path:
    """Accuracy (mean, min-max bars) against size, one marker per kind of point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, key, sweeps = _rows(paths)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    styles = {"searched": ("o", "tab:blue", "searched (budget)"),
              "uniform": ("s", "tab:orange", "uniform QAT"),
              "pruned": ("^", "tab:green", "L1-pruned uniform QAT")}
    for kind, (marker, color, label) in styles.items():
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["size"])
        if not mine:
            continue
        x = [100 * r["size"] for r in mine]
        y = [100 * r["score"] for r in mine]
        low = [y_ - 100 * min(r[key]) for y_, r in zip(y, mine, strict=True)]
        high = [100 * max(r[key]) - y_ for y_, r in zip(y, mine, strict=True)]
        ax.errorbar(x, y, yerr=[low, high], fmt=marker, color=color, label=label, capsize=3,
                    linestyle="-" if kind == "searched" else "none")
    ax.set_xscale("log")
    ticks = [t for t in (1, 2, 5, 10, 25, 50, 100)
             if min(r["size"] for r in rows) * 50 <= t <= max(r["size"] for r in rows) * 200]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"{sweeps[0]['cost']} (% of the highest-precision model)")
    ax.set_ylabel(f"{'test' if key == 'test' else 'validation'} accuracy (%)")
    ax.set_title(f"{sweeps[0]['recipe'].rsplit('-s', 1)[0]}: {len(sweeps)} seeds, mean and "
                 "min-max")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _rows(paths: list[Path]) -> tuple[list[dict], str, list[dict]]:
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
    return rows, key, sweeps


if __name__ == "__main__":
    args = sys.argv[1:]
    png = None
    if "--plot" in args:
        at = args.index("--plot")
        png = Path(args[at + 1])
        del args[at:at + 2]
    if not args:
        sys.exit("usage: python scripts/sweep_table.py SWEEP.json [SWEEP.json ...] [--plot PNG]")
    print(aggregate([Path(a) for a in args]))
    if png is not None:
        print(f"plot: {plot([Path(a) for a in args], png)}")
