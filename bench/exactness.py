"""What mpsctl's exact arithmetic buys over the approximations it replaced; prints JSON.

- ``refine_layers``: random NE16 layers (conv 3×3 and 1×1, depthwise 3×3, Linear; up to
  64 output channels) at random channel counts over (2, 4, 8) bits: how often the earlier
  two-pass promotion heuristic misses the optimum that the exact search finds, and by how
  much.
- ``refine``: NE16 cycles of ResNet-8 (CIFAR-10 shape) at random per-channel assignments
  (weights {0, 2, 4, 8}), refined by the heuristic and by the exact search, per seed.
- ``expected_cost``: the expected cost of a depthwise-separable residual probe whose
  pointwise conv reads and writes channels of one shared choice, computed three ways: the
  product of expectations (what mpsctl did before), the exact expectation (now) and Monte
  Carlo sampling of the assignment (the reference), for ``params_bit`` and ``bitops``
  (costs linear in the channel counts, whose expectation is well defined; NE16's tile
  rounding is relaxed at the expected counts by design).

    python bench/exactness.py [--seeds 5] [--layers 1500] [--samples 20000]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from mpsctl.cost.base import LayerGeometry
from mpsctl.models.resnet8 import ResNet8
from mpsctl.search.convert import build_supernet
from mpsctl.search.expected import layer_cost
from mpsctl.search.space import SearchSpace
from mpsctl.targets.ne16 import ne16_layer_cycles
from mpsctl.targets.refine import (
    Additive,
    exact_layer_costs,
    heuristic_counts,
    optimal_counts,
    refine_supernet,
)

SPACE = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,), per_channel=True)


class SeparableProbe(nn.Module):
    """stem → depthwise → pointwise → add stem → head: the three convs share one choice."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pw = nn.Conv2d(width, width, 1)
        self.head = nn.Conv2d(width, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        return self.head(F.relu(x + self.pw(F.relu(self.dw(x)))))


def _randomize(net, seed: int, scale: float = 1.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, choice in net.choices():
            if choice.alpha is not None:
                choice.alpha.copy_(torch.randn(choice.alpha.shape, generator=g) * scale)


def _random_layer(rng: random.Random) -> LayerGeometry:
    cout = rng.randint(1, 64)
    hw = (rng.randint(1, 16), rng.randint(1, 16))
    kind = rng.choice(["conv3", "conv1", "depthwise", "linear"])
    if kind == "depthwise":
        return LayerGeometry("depthwise", cout, cout, (3, 3), hw, cout)
    if kind == "linear":
        return LayerGeometry("linear", rng.randint(1, 256), cout)
    k = 3 if kind == "conv3" else 1
    return LayerGeometry("conv", rng.randint(1, 64), cout, (k, k), hw)


def refine_layers(layers: int, seed: int = 0) -> dict:
    """Heuristic vs exact refine on ``layers`` random NE16 layers and channel counts."""
    rng = random.Random(seed)
    gaps = []
    worst = None
    for _ in range(layers):
        geom = _random_layer(rng)
        cuts = sorted(rng.randint(0, geom.cout) for _ in range(2))
        start = {2: cuts[0], 4: cuts[1] - cuts[0], 8: geom.cout - cuts[1]}

        def cycles(counts: dict[int, int], geom=geom) -> int:
            return ne16_layer_cycles(geom, counts, geom.cin)

        additive = Additive(lambda bits, count, cycles=cycles: cycles({bits: count}))
        old, new = cycles(heuristic_counts(start, additive)), cycles(
            optimal_counts(start, additive))
        assert new <= old
        if new < old:
            gap = 100 * (old - new) / old
            gaps.append(gap)
            if worst is None or gap > worst["gap_percent"]:
                worst = {"geometry": str(geom), "start": start, "heuristic_cycles": old,
                         "exact_cycles": new, "gap_percent": gap}
    return {"layers": layers, "heuristic_suboptimal": len(gaps),
            "median_gap_percent": statistics.median(gaps) if gaps else 0.0,
            "max_gap_percent": max(gaps) if gaps else 0.0, "worst": worst}


def refine_gap(seeds: int) -> dict:
    """Heuristic vs exact refine on ResNet-8 at ``seeds`` random assignments."""
    rows = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = build_supernet(ResNet8(), torch.rand(2, 3, 32, 32), SPACE)
        _randomize(net, seed)
        net.eval()
        model = net.cost_model("ne16")
        before = sum(exact_layer_costs(net, model).values())
        start = time.perf_counter()
        _, _, heuristic = refine_supernet(net, model)
        seconds = time.perf_counter() - start
        after = sum(exact_layer_costs(net, model).values())
        old = sum(heuristic.values())
        rows.append({"seed": seed, "argmax_cycles": before, "heuristic_cycles": old,
                     "exact_cycles": after, "gain_percent": 100 * (old - after) / old,
                     "refine_seconds": round(seconds, 3)})
    total_old = sum(r["heuristic_cycles"] for r in rows)
    total_new = sum(r["exact_cycles"] for r in rows)
    return {"model": "resnet8", "target": "ne16", "per_seed": rows,
            "total_gain_percent": 100 * (total_old - total_new) / total_old,
            "max_gain_percent": max(r["gain_percent"] for r in rows)}


def _shared_layers(net) -> list[str]:
    """Layers whose input and output channels come from one choice."""
    return [n for n, layer in net.layers()
            if layer.cin_source is not None and layer.cin_source[0] is layer.choice]


def _layer_cost(layer, model, independent: bool) -> float:
    """Expected cost of one layer; ``independent`` hides that its input and output channels
    come from one choice (the product of expectations mpsctl computed before)."""
    source = layer.cin_source
    if independent:
        layer.__dict__["cin_source"] = (copy.copy(source[0]), source[1])
    try:
        return float(layer_cost(layer, model).detach())
    finally:
        layer.__dict__["cin_source"] = source


def _monte_carlo(net, names: list[str], layers: list[str], samples: int,
                 seed: int) -> dict[tuple[str, str], tuple[float, float]]:
    """Mean and standard error of each layer's exact cost over assignments drawn from θ."""
    g = torch.Generator().manual_seed(seed)
    choices = [c for _, c in net.choices() if c.alpha is not None]
    saved = [c.alpha.detach().clone() for c in choices]
    probs = [c.soft_theta().detach() for c in choices]
    by_name = dict(net.layers())
    models = {n: net.cost_model(n) for n in names}
    values: dict[tuple[str, str], list[float]] = {(n, m): [] for n in names for m in layers}
    with torch.no_grad():
        for _ in range(samples):
            for choice, p in zip(choices, probs, strict=True):
                flat = p.reshape(p.shape[0], -1).T  # (channels, n) or (1, n)
                draw = torch.multinomial(flat, 1, generator=g).flatten()
                hot = F.one_hot(draw, p.shape[0]).T.reshape(p.shape).to(choice.alpha.dtype)
                choice.alpha.copy_(hot * 100.0)
            for n, m in values:
                values[(n, m)].append(float(layer_cost(by_name[m], models[n], _hard)))
        for choice, alpha in zip(choices, saved, strict=True):
            choice.alpha.copy_(alpha)
    out = {}
    for key, v in values.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[key] = (float(t.mean()), float(t.std()) / math.sqrt(len(v)))
    return out


def _hard(choice):
    return choice.one_hot()


def expected_bias(samples: int, seed: int = 0) -> dict:
    """Per shared layer of the probe: product of expectations, exact, Monte Carlo."""
    torch.manual_seed(seed)
    net = build_supernet(SeparableProbe(), torch.rand(2, 3, 8, 8), SPACE)
    _randomize(net, seed, scale=1.0)
    names = ["params_bit", "bitops"]
    layers = _shared_layers(net)
    sampled = _monte_carlo(net, names, layers, samples, seed)
    by_name = dict(net.layers())
    out = {}
    for n in names:
        model = net.cost_model(n)
        for m in layers:
            mean, error = sampled[(n, m)]
            old = _layer_cost(by_name[m], model, independent=True)
            exact = _layer_cost(by_name[m], model, independent=False)
            out[f"{n} {m}"] = {
                "product_of_expectations": old, "exact": exact, "monte_carlo": mean,
                "monte_carlo_stderr": error, "old_bias_percent": 100 * (old - mean) / mean,
                "exact_bias_percent": 100 * (exact - mean) / mean}
    return {"graph": "separable residual probe, 4 channels, 8x8", "samples": samples,
            "layers": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    print(json.dumps({"refine_layers": refine_layers(args.layers),
                      "refine": refine_gap(args.seeds),
                      "expected_cost": expected_bias(args.samples)}, indent=2))


if __name__ == "__main__":
    main()
