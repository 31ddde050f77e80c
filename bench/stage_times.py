"""Wall time of the post-search commands on ResNet-8 (CIFAR-10 shape) and of `--help`.

Runs the real CLI as subprocesses (Python start-up and imports included), on a search
checkpoint made with fake CIFAR-shaped data, and prints one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

RECIPE = {
    "name": "r8",
    "model": {"name": "resnet8"},
    "data": {"name": "fake", "shape": [3, 32, 32], "size": 256, "val_size": 256,
             "batch_size": 64},
    "search": {"type": "per_channel", "weight_bits": [0, 2, 4, 8], "act_bits": [8],
               "cost": {"ne16": 1.0e-6}, "epochs": 1, "compile": False},
}


def cli(*args: str, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mpsctl", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout.strip().splitlines()[-1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe = folder / "r8.yaml"
        recipe.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(folder / "run")}))
        _, search = cli("search", str(recipe), "-q", cwd=folder)
        times = {}
        times["help_s"], _ = cli("--help", cwd=folder)
        times["refine_s"], refined = cli("refine", search, "-q", cwd=folder)
        times["export_s"], exported = cli("export", search, "-q", cwd=folder)
        times["report_s"], _ = cli("report", exported, "--json", cwd=folder)
        times["export_after_refine_s"], _ = cli("export", refined, "-q", cwd=folder)
    print(json.dumps({"model": "resnet8", "python": sys.version.split()[0], **times}))


if __name__ == "__main__":
    main()
