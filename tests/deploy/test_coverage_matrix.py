"""Issue 19's coverage matrix: torchvision classification models and mpsctl's zoo, per layer
and per channel with pruning, through a short search on fake data, export (the exported
model computes what the supernet does) and integer and QDQ ONNX (every quantizer within
1 LSB given the same input codes, ≥ 99 % top-1 agreement). See matrix_models.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torchvision")

sys.path.insert(0, str(Path(__file__).parent))
import matrix_models  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("space", list(matrix_models.SPACES))
@pytest.mark.parametrize("name", list(matrix_models.MODELS))
def test_model_exports_to_both_onnx_variants(name: str, space: str, tmp_path: Path) -> None:
    result = matrix_models.run(name, space, tmp_path)
    assert result["export_exact"]
    if space == "per_channel":
        assert result["pruned"] > 0
    for variant in ("integer", "qdq"):
        check = result[variant]
        assert check["max_error_lsb"] <= 1, (variant, check)
        assert check["forced_top1_agreement"] >= 0.99, (variant, check)
