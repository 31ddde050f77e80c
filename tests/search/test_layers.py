"""The soft forward of a searchable layer is continuous in α across an argmax flip of the
producer's pruning choice, while the hardened model still equals the eval supernet exactly."""

from __future__ import annotations

import pytest
import torch
from tiny_nets import PlainCNN, randomize_alpha, randomize_bn

from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace

PRUNE = SearchSpace(weight_bits=(0, 2, 4, 8), per_channel=True, act_clip=2.0)


def _net(seed: int):
    torch.manual_seed(seed)
    x = torch.rand(2, 3, 16, 16)
    net = build_supernet(randomize_bn(PlainCNN(), seed), x, PRUNE)
    randomize_alpha(net, seed, scale=1.5)
    layer = dict(net.layers())["conv2"]
    producer = layer.cin_source[0]
    with torch.no_grad():  # input channel 0 holds every output channel's largest weight
        layer.weight[:, 0] = 3 * layer.weight.abs().amax()
    return net, x, layer, producer


def _set_tie(producer, delta: float) -> None:
    """Channel 0 of the producer: pruned (θ_0) vs 8-bit within ``delta`` of a tie."""
    with torch.no_grad():
        producer.alpha[:, 0] = torch.tensor([0.5 + delta, -2.0, -2.0, 0.5])


def _soft_state(net, layer, producer, delta: float):
    _set_tie(producer, delta)
    net.train()
    net.sample_choices()
    return layer._weight_absmax(soft=True), layer.quantized_parameters()[0].detach()


@pytest.mark.parametrize("seed", range(3))
def test_soft_weights_are_continuous_across_an_argmax_flip(seed) -> None:
    net, x, layer, producer = _net(seed)
    eps = 1e-3
    m_pruned, w_pruned = _soft_state(net, layer, producer, +eps)
    assert int(producer.assignment()[0]) == 0
    m_kept, w_kept = _soft_state(net, layer, producer, -eps)
    assert int(producer.assignment()[0]) == 3
    # The statistic moves by O(Δα): the keep probability changed by about eps/2.
    assert float(((m_kept - m_pruned) / m_kept).abs().max()) < 2 * eps
    # The effective weights barely move (a few rounding steps at most, not a new grid).
    change = (w_kept - w_pruned).abs().sum() / w_kept.abs().sum()
    assert float(change) < 0.02
    # The hard statistic, by design, does jump: it is what the exported layer computes with.
    net.eval()
    _set_tie(producer, +eps)
    hard_pruned = layer._weight_absmax()
    _set_tie(producer, -eps)
    hard_kept = layer._weight_absmax()
    assert float(hard_pruned.max()) < float(hard_kept.min()) / 2


@pytest.mark.parametrize("delta", [+1e-3, -1e-3])
def test_hardened_model_still_equals_the_eval_supernet(delta) -> None:
    net, x, _, producer = _net(0)
    _set_tie(producer, delta)
    net.eval()
    fixed = net.harden()
    with torch.no_grad():
        expected, got = net(x), fixed(x)
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
