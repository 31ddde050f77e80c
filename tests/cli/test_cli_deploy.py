"""`mpsctl export --onnx` and `mpsctl report --plot` through the command line."""

from __future__ import annotations

import importlib.util
import struct

import pytest
from conftest import write_recipe


def test_export_onnx_from_search_checkpoint(cli, recipe, tmp_path):
    pytest.importorskip("onnxruntime")
    search = cli.json("search", recipe)
    out = cli.json("export", search["checkpoint"], "--onnx", tmp_path / "model.onnx")
    assert out["checkpoint"].endswith("export.pt")
    assert (tmp_path / "model.onnx").stat().st_size > 1000
    assert out["onnx"]["top1_agreement"] >= 0.99
    qdq = cli.json("export", out["checkpoint"], "--onnx", tmp_path / "qdq.onnx",
                   "--onnx-variant", "qdq")
    assert qdq["variant"] == "qdq" and qdq["top1_agreement"] >= 0.99
    if importlib.util.find_spec("qonnx") is not None:
        qonnx = cli.json("export", out["checkpoint"], "--onnx", tmp_path / "q.onnx",
                         "--onnx-variant", "qonnx")
        assert qonnx["variant"] == "qonnx" and qonnx["executor"] == "qonnx"
        assert qonnx["top1_agreement"] >= 0.99 and (tmp_path / "q.onnx").exists()
    bad = cli("export", out["checkpoint"], "--onnx", tmp_path / "x.onnx",
              "--onnx-variant", "int4")
    assert bad.exit_code == 2 and "integer, qdq, qonnx" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()
    human = cli("export", out["checkpoint"], "--onnx", tmp_path / "again.onnx")
    assert human.exit_code == 0, human.stderr
    assert "top-1 agreement" in human.stderr and "Traceback" not in human.stderr
    assert human.stdout.strip().splitlines()[-1].endswith("export.pt")


def test_report_plot_writes_pngs(cli, recipe, tmp_path):
    pytest.importorskip("matplotlib")
    search = cli.json("search", recipe)
    out = cli.json("report", search["checkpoint"], "--plot", tmp_path / "plots")
    assert len(out["plots"]) >= 3
    for path in out["plots"]:
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 100 and height > 100


def test_conv1d_keyword_spotting_recipe_to_integer_onnx(cli, tmp_path):
    """The shipped ds_cnn1d recipe, shortened: search → export → finetune → integer ONNX."""
    pytest.importorskip("onnxruntime")
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "kws-ds-cnn1d.yaml"
    short = ["warmup.epochs=1", "search.epochs=1", "finetune.epochs=1", "model.width=8",
             "data.size=64", "data.val_size=32", "data.test_size=32",
             f"output_dir={tmp_path / 'kws'}"]
    search = cli.json("search", recipe, *short)
    assert {row["type"] for row in search["layers"]} == {"Conv1d", "Linear"}
    export = cli.json("export", search["checkpoint"])
    finetune = cli.json("finetune", export["checkpoint"])
    out = cli.json("export", finetune["checkpoint"], "--onnx", tmp_path / "kws.onnx")
    assert out["top1_agreement"] >= 0.99 and out["max_error_lsb"] <= 1
    import onnx

    ops = {node.op_type for node in onnx.load(tmp_path / "kws.onnx").graph.node}
    assert "ConvInteger" in ops and "Conv" not in ops


def _torchvision_search_and_export(cli, tmp_path, name: str, model: str, width: float,
                                   **search) -> dict:
    """Search a torchvision model for one epoch on fake 3×32×32 data, export it with integer
    ONNX, and check that export is exact and ONNX within 1 LSB; returns export's JSON."""
    path = write_recipe(
        tmp_path, name=name,
        model={"name": f"torchvision:{model}", "width_mult": width, "num_classes": 10},
        data={"name": "fake", "shape": [3, 32, 32], "num_classes": 10, "size": 32,
              "val_size": 16, "batch_size": 16},
        **({"search": search} if search else {}),
    )
    found = cli.json("search", path)
    out = cli.json("export", found["checkpoint"], "--onnx", tmp_path / f"{name}.onnx")
    assert out["check"]["max_abs_diff"] <= 1e-5 * max(out["check"]["output_scale"], 1.0)
    assert out["onnx"]["max_error_lsb"] <= 1
    return out


@pytest.mark.slow
def test_torchvision_model_from_search_to_both_onnx_variants(cli, tmp_path):
    """Issue 19 end to end: mobilenet_v3_small (Hardswish, squeeze-and-excitation) searched
    per channel with pruning for one epoch on fake data, exported, written as integer and
    QDQ ONNX; `report` says both formats are supported."""
    pytest.importorskip("onnxruntime")
    out = _torchvision_search_and_export(cli, tmp_path, "tv", "mobilenet_v3_small", 0.5)
    qdq = cli.json("export", out["checkpoint"], "--onnx", tmp_path / "tv-qdq.onnx",
                   "--onnx-variant", "qdq")
    assert qdq["max_error_lsb"] <= 1 and qdq["forced_top1_agreement"] >= 0.99
    report = cli.json("report", out["checkpoint"])
    assert report["deployment"]["integer"] is None and report["deployment"]["qdq"] is None
    if importlib.util.find_spec("qonnx") is not None:  # QONNX writes Hardswish and SE too
        assert report["deployment"]["qonnx"] is None


@pytest.mark.slow
def test_relu6_mobilenet_v2_with_a_high_initial_clip_to_integer_onnx(cli, tmp_path):
    """Bounded activations end to end: torchvision mobilenet_v2 (ReLU6) searched from
    ``act_clip: 8`` for one epoch, exported and written as integer ONNX; every quantizer
    before a ReLU6 keeps its clip at or below 6."""
    pytest.importorskip("onnxruntime")
    from mpsctl.checkpoint.state import load_model

    out = _torchvision_search_and_export(cli, tmp_path, "mbv2", "mobilenet_v2", 0.25,
                                         act_clip=8.0)
    bounded = [(name, slot.quantizer) for name, slot in load_model(out["checkpoint"])
               .activation_slots() if slot.quantizer.clip_max is not None]
    assert len(bounded) > 10
    assert all(q.clip_max == 6.0 and float(q.clip.detach()) <= 6.0 for _, q in bounded)
