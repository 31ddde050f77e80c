"""`mpsctl.cli.plots.write_plots`: one PNG per view of a report, valid and non-empty."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from mpsctl.cli.plots import plot_costs, write_plots  # noqa: E402
from mpsctl.errors import MissingPackageError  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

REPORT = {
    "checkpoint": "runs/t/export.pt",
    "stage": "export",
    "layers": [
        {"name": "features.conv1.conv", "w_bits": [8, 8, 4, 2, 2], "a_bits": 8,
         "in_channels": 1, "out_channels": 5, "total_out_channels": 8},
        {"name": "features.conv2.conv", "w_bits": [4, 4, 2], "a_bits": 4,
         "in_channels": 5, "out_channels": 3, "total_out_channels": 16},
        {"name": "head.fc", "w_bits": 8, "a_bits": 8, "in_channels": 3, "out_channels": 10,
         "total_out_channels": 10},
    ],
    "cost": {"params_bit": 1500.0, "bitops": 2.5e6},
    "layer_costs": {
        "features.conv1.conv": {"params_bit": 216.0, "bitops": 1.5e6},
        "features.conv2.conv": {"params_bit": 324.0, "bitops": 0.9e6},
        "head.fc": {"params_bit": 960.0, "bitops": 0.1e6},
    },
    "metrics": {"accuracy": 0.93},
    "history": [
        {"epoch": e, "accuracy": 0.5 + 0.1 * e, "soft_accuracy": 0.6 + 0.05 * e,
         "temperature": 0.95**e, "cost": {"params_bit": 3000.0 - 500 * e, "bitops": 5e6 / e}}
        for e in range(1, 5)
    ],
}


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (the IHDR chunk right after the signature)."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_every_plot_is_a_real_png(tmp_path: Path) -> None:
    paths = write_plots(REPORT, tmp_path / "plots")
    names = [p.name for p in paths]
    assert names == ["bits_per_layer.png", "channel_bits.png", "cost_per_layer.png",
                     "search_history.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert path.stat().st_size > 5_000  # axes, bars and labels, not a blank canvas
        width, height = _png_size(path)
        assert width >= 300 and height >= 250


def test_cost_plot_widens_with_the_number_of_cost_models(tmp_path: Path) -> None:
    one = {k: {"params_bit": v["params_bit"]} for k, v in REPORT["layer_costs"].items()}
    narrow = _png_size(plot_costs(one, tmp_path / "one.png"))[0]
    wide = _png_size(plot_costs(REPORT["layer_costs"], tmp_path / "two.png"))[0]
    assert wide > narrow


def test_history_plot_is_skipped_without_history(tmp_path: Path) -> None:
    paths = write_plots(dict(REPORT, history=[]), tmp_path)
    assert [p.name for p in paths] == ["bits_per_layer.png", "channel_bits.png",
                                       "cost_per_layer.png"]
    assert not (tmp_path / "search_history.png").exists()


def test_missing_matplotlib_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingPackageError, match=r"plots need the deploy extra: pip install"):
        write_plots(REPORT, tmp_path)
