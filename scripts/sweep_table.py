"""Aggregate the sweep.json of several seeds into one Markdown table (mean and min-max).

    python scripts/sweep_table.py runs/sweep-s0/sweep.json runs/sweep-s1/sweep.json ...
        [--plot front.png]

For sweeps run one seed at a time (``mpsctl sweep ... seed=S name=<name>-sS``);
``mpsctl sweep --seeds 0,1,2`` does the same in one command (``seeds.json``). One row per
point id present in every file: kind, size as a share of the highest-precision model, share
of its budget used, and validation and (where recorded) test accuracy, with the front on
the mean accuracy (test when every point has it, else validation).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mpsctl.cli.plots import plot_pareto_seeds
from mpsctl.cli.views import mean_range
from mpsctl.stages.seeds import across_seeds


def _summary(paths: list[Path]) -> dict:
    sweeps = [json.loads(p.read_text()) for p in paths]
    return {"recipe": sweeps[0]["recipe"].rsplit("-s", 1)[0], **across_seeds(sweeps)}


def aggregate(paths: list[Path]) -> str:
    """The Markdown table over the sweeps in ``paths``."""
    summary = _summary(paths)
    lines = [
        f"| point | kind | {summary['cost']} (% of top) | budget used (%) | "
        "validation acc (%) | test acc (%) | front |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in summary["points"]:
        lines.append(
            f"| {p['id']} | {p['kind']} | {mean_range(p['share'])} | {mean_range(p['used'])} | "
            f"{mean_range(p['accuracy'])} | {mean_range(p['test_accuracy'])} | "
            f"{'*' if p['front'] else ''} |"
        )
    seeds = summary["seeds_found"]
    on = "test" if summary["score_on"] == "test_accuracy" else "validation"
    lines.append("")
    lines.append(f"{len(seeds)} seeds ({', '.join(str(s) for s in seeds)}); mean (min-max); "
                 f"front on mean {on} accuracy.")
    return "\n".join(lines)


def plot(paths: list[Path], out: Path) -> Path:
    """Accuracy (mean, min-max bars) against size, one marker per kind of point."""
    return plot_pareto_seeds(_summary(paths), out)


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
