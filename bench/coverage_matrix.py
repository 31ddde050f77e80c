"""The ONNX coverage matrix's figures (tests/deploy/test_coverage_matrix.py checks them):
per model and search space, whether export is exact, how many channels were pruned, and
for the integer and QDQ variants the top-1 agreement (free-running and given the same input
codes), the largest quantizer error in LSB given the same codes, and the free-running drift.
Prints one JSON object per line, then a Markdown table.

    python bench/coverage_matrix.py [model ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "deploy"))
import matrix_models  # noqa: E402


def main(names: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or list(matrix_models.MODELS):
            for space in matrix_models.SPACES:
                result = matrix_models.run(name, space, Path(tmp))
                print(json.dumps(result), flush=True)
                rows.append(result)
    print("\n| model | space | export exact | pruned | integer: top-1 (same codes), max LSB, "
          "drift | QDQ: top-1 (same codes), max LSB, drift |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for v in ("integer", "qdq"):
            c = r[v]
            free, forced = 100 * c["top1_agreement"], 100 * c["forced_top1_agreement"]
            cells.append(f"{free:.1f} % ({forced:.1f} %), {c['max_error_lsb']}, "
                         f"{c['drift_max_lsb']}")
        print(f"| {r['model']} | {r['space']} | {r['export_exact']} | {r['pruned']} | "
              f"{cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
