"""The coverage matrix of issue 19 as a helper (not a test file): a model through a short
search on fake data, export (exact) and both ONNX variants. The tests and the report script
share it, so the table in the issue's note is what the tests check."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1] / "search"))
from tiny_nets import calibrate_bn  # noqa: E402

from mpsctl.deploy import export_onnx  # noqa: E402
from mpsctl.models.registry import build_model  # noqa: E402
from mpsctl.search.convert import build_supernet  # noqa: E402
from mpsctl.search.space import SearchSpace  # noqa: E402
from mpsctl.stages.export import RELATIVE_TOLERANCE, output_difference  # noqa: E402

#: name → (model.name, kwargs, input shape): small inputs and width multipliers where the
#: model has them, so that each fits the CI budget.
MODELS: dict[str, tuple[str, dict, tuple[int, ...]]] = {
    "mobilenet_v2": ("torchvision:mobilenet_v2", {"width_mult": 0.35}, (3, 32, 32)),
    "mobilenet_v3_small": ("torchvision:mobilenet_v3_small", {"width_mult": 0.5}, (3, 32, 32)),
    "shufflenet_v2_x0_5": ("torchvision:shufflenet_v2_x0_5", {}, (3, 32, 32)),
    "squeezenet1_1": ("torchvision:squeezenet1_1", {}, (3, 32, 32)),
    "efficientnet_b0": ("torchvision:efficientnet_b0", {}, (3, 32, 32)),
    "mnasnet0_5": ("torchvision:mnasnet0_5", {}, (3, 32, 32)),
    "regnet_x_400mf": ("torchvision:regnet_x_400mf", {}, (3, 32, 32)),
    "resnet18": ("torchvision:resnet18", {}, (3, 32, 32)),
    "googlenet": ("torchvision:googlenet", {"aux_logits": False, "init_weights": False},
                  (3, 32, 32)),
    "resnet8": ("resnet8", {}, (3, 32, 32)),
    "mnist_cnn": ("mnist_cnn", {}, (1, 28, 28)),
    "ds_cnn": ("ds_cnn", {"width": 16, "depth": 2}, (1, 20, 10)),
}
SPACES = {
    "per_layer": SearchSpace(weight_bits=(2, 4, 8), act_bits=(4, 8)),
    "per_channel": SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(4, 8), per_channel=True),
}


def run(name: str, space: str, folder: Path, samples: int = 8, steps: int = 2,
        seed: int = 0) -> dict[str, Any]:
    """Search ``steps`` steps on fake data, pick a mixed (and, per channel, pruned)
    assignment, export, and write + verify both ONNX variants; returns the figures."""
    torch.manual_seed(seed)
    model_name, kwargs, shape = MODELS[name]
    model = build_model(model_name, {**kwargs, "num_classes": 10})
    x = torch.rand(samples, *shape)
    y = torch.randint(0, 10, (samples,))
    calibrate_bn(model, x)
    net = build_supernet(model, x[:2], SPACES[space])
    _short_search(net, x, y, steps)
    _mixed_assignment(net, seed)
    net.eval()
    fixed = net.harden()
    check = output_difference(net, fixed, x)
    result: dict[str, Any] = {
        "model": name, "space": space,
        "export_exact": check["max_abs_diff"] <= RELATIVE_TOLERANCE * max(
            check["output_scale"], 1.0),
        "pruned": sum(layer.original_out_channels - layer.weight.shape[0]
                      for _, layer in fixed.layers()),
    }
    for variant in ("integer", "qdq"):
        start = time.perf_counter()
        summary = export_onnx(fixed, x, folder / f"{name}-{space}-{variant}.onnx", variant)
        result[variant] = {k: summary[k] for k in (
            "top1_agreement", "forced_top1_agreement", "max_error_lsb", "code_mismatch",
            "drift_max_lsb")}
        result[variant]["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _short_search(net, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """A few joint steps of weights and architecture, as `mpsctl search` takes them."""
    net.train()
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=1e-3)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(net(x), y) + 1e-9 * net.cost("params_bit")
        opt_w.zero_grad()
        opt_a.zero_grad()
        loss.backward()
        opt_w.step()
        opt_a.step()


def _mixed_assignment(net, seed: int) -> None:
    """A few steps on fake data leave every choice at its initial argmax (the widest
    precision): give each random logits, and a third of the prunable channels a preference
    for 0 bits, so that export meets mixed precisions and removed channels."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, choice in net.choices():
            alpha = torch.randn(choice.alpha.shape, generator=g)
            if choice.per_channel and choice.can_prune:
                alpha[0, seed % 3::3] = alpha[:, seed % 3::3].amax(0) + 1.0
            choice.alpha.copy_(alpha)
