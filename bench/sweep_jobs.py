"""`mpsctl sweep --jobs`: wall time of the same short sweep run one point at a time and
N points side by side, in one run, on the quickstart's model and bundled data.

A shortened schedule of recipes/sweep-mnist5k.yaml (2 warm-up, 3 search, 3 fine-tuning
epochs; budgets 10 % and 25 %: 7 points with the baselines). Prints one JSON object.

    python bench/sweep_jobs.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"warmup": {"epochs": 2}, "search": {"epochs": 3}, "finetune": {"epochs": 3}}


def sweep_seconds(recipe: Path, name: str, jobs: int, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mpsctl", "sweep", str(recipe), f"name={name}",
                    "--budgets", "10%,25%", "--jobs", str(jobs), "-q"],
                   cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    jobs = parser.parse_args().jobs
    recipe = yaml.safe_load((ROOT / "recipes" / "sweep-mnist5k.yaml").read_text())
    for section, values in SHORT.items():
        recipe[section] = {**recipe[section], **values}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "sweep.yaml"
        path.write_text(yaml.safe_dump(recipe))  # runs/<name> under the temporary folder
        one = sweep_seconds(path, "one", 1, folder)
        many = sweep_seconds(path, "many", jobs, folder)
    print(json.dumps({"recipe": "sweep-mnist5k (short)", "points": 7, "jobs": jobs,
                      "jobs_1_s": round(one, 1), f"jobs_{jobs}_s": round(many, 1),
                      "speedup": round(one / many, 2)}))


if __name__ == "__main__":
    main()
