"""Integer-only / QDQ ONNX export: onnxruntime agrees with the fake-quant model (issue 9)."""

from __future__ import annotations

import copy
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from fixed_models import (  # noqa: E402, F401 - the fixtures are used by their names
    PER_CHANNEL_A8,
    assert_agrees,
    calibrate,
    center_logits,
    mixed_mnist_fixture,
    pruned_dscnn_fixture,
    pruned_resnet_fixture,
    randomize,
)

from mpsctl.deploy import export_onnx  # noqa: E402
from mpsctl.deploy.integer import (  # noqa: E402
    MULTIPLIER_BITS,
    ActGrid,
    IntegerOverflowError,
    fixed_point,
    requantizer,
)
from mpsctl.errors import (  # noqa: E402
    CheckpointError,
    MissingPackageError,  # noqa: E402
    UserError,
)
from mpsctl.search.convert import build_supernet  # noqa: E402
from mpsctl.search.space import SearchSpace  # noqa: E402
from mpsctl.stages.export import run_onnx_export  # noqa: E402


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_per_layer_mixed_model_runs_integer_only(mixed_mnist, tmp_path: Path) -> None:
    _, fixed, x = mixed_mnist
    path = tmp_path / "mixed.onnx"
    summary = export_onnx(fixed, x, path)
    assert_agrees(summary, fixed, x)
    assert summary["onnx"] == str(path) and path.stat().st_size == summary["bytes"]
    assert len({layer["w_bits"] for layer in summary["layers"]}) > 1  # really mixed
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"ConvInteger", "MatMulInteger", "BitShift"} <= ops
    assert not ops & {"Conv", "Gemm", "MatMul", "QuantizeLinear", "DequantizeLinear"}
    types = {init.name: init.data_type for init in graph.initializer}
    for layer in summary["layers"]:
        assert types[f"{layer['name']}.weight"] == onnx.TensorProto.INT8
        assert types[f"{layer['name']}.bias"] == onnx.TensorProto.INT32


@pytest.mark.parametrize("variant", ["integer", "qdq"])
@pytest.mark.parametrize("which", ["pruned_resnet", "pruned_dscnn"])
def test_pruned_per_channel_models_agree(which, variant, request, tmp_path: Path) -> None:
    net, fixed, x = request.getfixturevalue(which)
    original = {n: layer.weight.shape[0] for n, layer in net.layers()}
    kept = {n: layer.weight.shape[0] for n, layer in fixed.layers()}
    assert any(kept[n] < original[n] for n in kept)  # channels were physically removed
    summary = export_onnx(fixed, x, tmp_path / f"{which}.onnx", variant)
    assert_agrees(summary, fixed, x)
    assert summary["variant"] == variant
    graph = onnx.load(summary["onnx"]).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    for name, channels in kept.items():
        assert shapes[f"{name}.weight"][0 if variant == "qdq" or "conv" in name else 1] == channels


def test_metadata_records_bits_of_every_tensor(pruned_resnet, tmp_path: Path) -> None:
    _, fixed, x = pruned_resnet
    path = tmp_path / "meta.onnx"
    export_onnx(fixed, x, path)
    props = _props(path)
    assert props["mpsctl.variant"] == "integer"
    assert props["mpsctl.format"].startswith("mpsctl-onnx/")
    tensors = json.loads(props["mpsctl.tensors"])
    for name, layer in fixed.layers():
        chosen = [layer.choice.bits[int(i)] for i in layer.choice.assignment()]
        entry = tensors[f"{name}.weight"]
        assert entry["role"] == "weight"
        assert entry["bits"] == (chosen if len(set(chosen)) > 1 else chosen[0])
        assert tensors[f"{name}.bias"]["bits"] == 32
    acts = [t for t in tensors.values() if t["role"] == "activation"]
    slots = {s for s in (t["slot"] for t in acts)}
    assert slots == {k for k, _ in fixed.activation_slots()}
    assert all(t["bits"] in (4, 8) and t["range"][1] > 0 for t in acts)
    assert any(t["signed"] for t in acts)  # the residual branches are signed
    requant = [t["requant"] for t in acts if "requant" in t]
    assert requant and all(m < 2**MULTIPLIER_BITS for r in requant for m in r["multiplier"])
    layers = json.loads(props["mpsctl.layers"])
    assert [entry["name"] for entry in layers] == [n for n, _ in fixed.layers()]


def test_overflowing_accumulator_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(70_000, 2))
    with torch.no_grad():  # every weight code at ±127, 8-bit inputs: Σ|w|·255 > 2^31
        model[1].weight.copy_(torch.randint(0, 2, (2, 70_000)).float() * 2 - 1)
    space = SearchSpace(weight_bits=(8,), act_bits=(8,))
    x = torch.rand(4, 70_000)
    fixed = build_supernet(model, x, space).harden()
    with pytest.raises(IntegerOverflowError) as err:
        export_onnx(fixed, x, tmp_path / "big.onnx")
    message = str(err.value)
    assert "'1'" in message and "int32" in message and "\n" not in message
    assert isinstance(err.value, UserError)
    assert not (tmp_path / "big.onnx").exists()


def test_fixed_point_multipliers_are_precise() -> None:
    real = np.array([1e-6, 3.7e-3, 0.5, 0.999, 1.0, 7.25, 1234.5])
    mult, shift = fixed_point(real)
    assert np.all(mult < 2**MULTIPLIER_BITS) and np.all(mult >= 2 ** (MULTIPLIER_BITS - 1))
    assert np.all(np.abs(mult / np.exp2(shift) - real) / real < 2.0 ** -(MULTIPLIER_BITS - 1))


@pytest.mark.parametrize("signed", [False, True])
def test_requantizer_floors_or_rounds_like_pact(signed: bool) -> None:
    grid = ActGrid(bits=8, signed=signed, clip=2.0, inv_scale=(127 if signed else 255) / 2.0)
    rng = np.random.default_rng(0)
    real = rng.uniform(1e-5, 1e-2, size=16)
    acc = rng.integers(-(2**20), 2**20, size=(32, 16, 5))
    got = requantizer(real, grid).apply(acc, axis=1)
    exact = acc * real.reshape(1, -1, 1)
    want = np.round(exact) if signed else np.floor(exact + grid.floor_eps)
    want = np.clip(want, grid.low, grid.high)
    # 23-bit multipliers: only values within ~2^-22 (relative) of a rounding edge may differ.
    assert (got != want).mean() < 1e-3
    assert np.abs(got - want).max() <= 1


def test_bad_variant_and_unfixed_model_are_user_errors(mixed_mnist, tmp_path: Path) -> None:
    net, fixed, x = mixed_mnist
    with pytest.raises(UserError, match="variant"):
        export_onnx(fixed, x, tmp_path / "a.onnx", variant="fp8")
    with pytest.raises(UserError, match="mpsctl export"):
        export_onnx(net, x, tmp_path / "b.onnx")


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    for name in [m for m in sys.modules if m.startswith(("mpsctl.deploy.onnx_",
                                                           "mpsctl.deploy.export"))]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingPackageError) as err:
        importlib.import_module("mpsctl.deploy.export")
    assert str(err.value) == (
        "ONNX export needs the deploy extra: pip install 'mpsctl[deploy]'"
    )


def test_run_onnx_export_from_checkpoints(tmp_path: Path, monkeypatch) -> None:
    from mpsctl.checkpoint import state
    from mpsctl.recipe import recipe_from_dict
    from mpsctl.recipe.build import float_model, supernet_for

    monkeypatch.chdir(tmp_path)
    recipe = recipe_from_dict({
        "name": "t", "seed": 0, "output_dir": str(tmp_path / "runs" / "t"),
        "model": {"name": "mnist_cnn"},
        "data": {"name": "fake", "shape": [1, 28, 28], "size": 64, "val_size": 64,
                 "batch_size": 32},
        "search": {"type": "per_channel", "weight_bits": [0, 2, 4, 8], "act_bits": [4, 8],
                   "cost": {"params_bit": 1.0e-6}, "epochs": 1},
    })
    shape = (1, 28, 28)
    torch.manual_seed(0)
    net = supernet_for(recipe, randomize(float_model(recipe)), shape)
    for _, choice in net.choices():
        choice.alpha.data = torch.randn_like(choice.alpha)
    search_ckpt = state.write(tmp_path / "search.pt", state.payload("search", recipe, net, shape))
    with pytest.raises(CheckpointError, match="mpsctl export"):
        run_onnx_export(search_ckpt, tmp_path / "x.onnx", "integer")
    fixed = net.harden()
    calibrate(fixed, torch.rand(32, *shape))
    export_ckpt = state.write(tmp_path / "export.pt", state.payload("export", recipe, fixed,
                                                                    shape))
    out = tmp_path / "model.onnx"
    result = run_onnx_export(export_ckpt, out, "integer")
    assert result["onnx"] == str(out) and out.exists()
    assert result["stage"] == "export" and result["variant"] == "integer"
    assert result["top1_agreement"] >= 0.99 and result["samples"] == 64
    assert result["onnx_accuracy"] == pytest.approx(result["model_accuracy"], abs=0.02)


class _PoolingNet(nn.Module):
    """ReLU6, padded average pooling, adaptive max pooling: the less common value ops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU6()
        self.pool1 = nn.AvgPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool2 = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class _SequenceNet(nn.Module):
    """Conv1d, max-pool 1d, global average pool 1d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 8, 5, padding=2)
        self.pool1 = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=1, groups=8)
        self.pool2 = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("variant", ["integer", "qdq"])
@pytest.mark.parametrize("model, shape", [(_PoolingNet, (3, 12, 12)), (_SequenceNet, (4, 32))])
def test_pooling_and_1d_models_agree(model, shape, variant, tmp_path: Path) -> None:
    torch.manual_seed(4)
    x = torch.rand(64, *shape) * torch.rand(64, shape[0], *([1] * (len(shape) - 1)))
    net = build_supernet(randomize(model()), x[:2], PER_CHANNEL_A8)
    for _, choice in net.choices():
        choice.alpha.data = torch.randn_like(choice.alpha)
    fixed = net.harden()
    calibrate(fixed, x)
    for _, slot in fixed.activation_slots():  # ReLU6 needs a range within [0, 6]
        slot.quantizer.clip.data.clamp_(max=6.0)
    center_logits(fixed, x)
    assert_agrees(export_onnx(fixed, x, tmp_path / "m.onnx", variant), fixed, x)


def test_float_only_op_is_named_in_one_line(tmp_path: Path) -> None:
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.exp(self.conv(x)).mean((2, 3)))

    x = torch.rand(4, 3, 8, 8)
    fixed = build_supernet(Gated(), x, SearchSpace(weight_bits=(8,), act_bits=(8,))).harden()
    with pytest.raises(UserError, match=r"op 'exp' .* cannot be exported") as err:
        export_onnx(fixed, x, tmp_path / "g.onnx")
    assert "\n" not in str(err.value) and "search.exclude" not in str(err.value)
    assert "operation table" in str(err.value)


def _tiny_regnet(seed: int = 0):
    """torchvision's RegNet-X at toy size (4 blocks, widths 16-64, grouped 3×3 convs) with
    2-bit weights per layer: a one-code difference grows along its residual chain."""
    from torchvision.models.regnet import BlockParams, RegNet

    sys.path.insert(0, str(Path(__file__).parents[1] / "search"))
    from tiny_nets import calibrate_bn

    torch.manual_seed(seed)
    params = BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8)
    model = RegNet(params, num_classes=10, stem_width=16)
    x = torch.rand(32, 3, 32, 32)
    calibrate_bn(model, x)
    net = build_supernet(model, x[:2], SearchSpace(weight_bits=(2,), act_bits=(8,)))
    return net.eval().harden(), x


def test_residual_chain_drift_is_round_off_not_arithmetic(tmp_path: Path) -> None:
    """Issue 19 (regnet_x_400mf, 2-bit weights): run on their own, the ONNX and the float32
    fake-quant model drift apart along the residual chain (float32 round-off flips a code
    now and then, and the chain amplifies it), yet given the same input codes every
    quantizer agrees to 1 LSB: the export is kept and the drift is reported separately.

    The round-off is made deterministic here: the reference's stem is scaled by 1 + 1e-5
    (its weight codes stay, its scale moves by 1e-5), which flips the codes that lie that
    close to a step boundary, as float32 summation does at random."""
    from mpsctl.deploy import verify_onnx

    fixed, x = _tiny_regnet()
    path = tmp_path / "regnet.onnx"
    summary = export_onnx(fixed, x, path)
    assert summary["max_error_lsb"] <= 1 and summary["forced_top1_agreement"] == 1.0
    nudged = copy.deepcopy(fixed)
    stem = next(layer for _, layer in nudged.layers())
    with torch.no_grad():
        stem.weight.mul_(1 + 1e-5)
    check = verify_onnx(path, nudged, x)
    assert check["drift_max_lsb"] > 2  # what the old check called the error
    assert check["max_error_lsb"] <= 1 and check["code_mismatch"] < 1e-3
    assert check["forced_top1_agreement"] == 1.0
    worst = max(v["drift_max_error_lsb"] for v in check["per_quantizer"].values())
    assert worst == check["drift_max_lsb"]


def test_wrong_integer_arithmetic_is_refused(mixed_mnist, tmp_path: Path, monkeypatch) -> None:
    """A requantisation multiplier 3 % off is an arithmetic bug: refused, no file left."""
    import mpsctl.deploy.onnx_integer as onnx_integer
    from mpsctl.deploy.onnx_verify import OnnxMismatchError

    real = onnx_integer.requantizer

    def skewed(scale, grid):
        return real(np.asarray(scale) * 1.03, grid)

    monkeypatch.setattr(onnx_integer, "requantizer", skewed)
    _, fixed, x = mixed_mnist
    path = tmp_path / "bad.onnx"
    with pytest.raises(OnnxMismatchError, match="off by"):
        export_onnx(fixed, x, path)
    assert not path.exists() and not list(tmp_path.iterdir())
