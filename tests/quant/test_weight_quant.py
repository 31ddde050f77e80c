"""Symmetric per-output-channel min-max weight fake-quantization
(docs/algorithm.md#weights-symmetric-min-max)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsctl.quant.modules import (
    WEIGHT_QUANTIZERS,
    MinMaxWeightQuantizer,
    make_weight_quantizer,
)
from mpsctl.quant.weight import (
    channel_absmax,
    minmax_forward,
    minmax_quantize,
    minmax_scale,
    mixed_minmax_quantize,
)

SHAPES = st.sampled_from([(3, 5), (4, 2, 3), (6, 3, 3, 3), (1, 1, 1, 1), (5, 1, 3, 3)])
BITS = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 16])
BIT_SETS = (
    st.lists(st.sampled_from([0, 2, 3, 4, 6, 8]), min_size=1, max_size=4, unique=True)
    .map(sorted)
    .filter(lambda bits: bits != [0])  # a choice always holds a non-zero precision
)


def _weights(shape, seed, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    # Channels of very different magnitudes, so per-channel scales matter.
    magnitudes = torch.logspace(-3, 1, shape[0], dtype=torch.float64)
    w = w * magnitudes.reshape((-1,) + (1,) * (w.dim() - 1))
    return w.to(dtype)


def _view(w):
    return (-1,) + (1,) * (w.dim() - 1)


# -- fixed precision ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, bits=BITS, seed=st.integers(0, 2**16))
def test_codes_in_range_on_per_channel_grid(shape, bits, seed):
    w = _weights(shape, seed)
    y = minmax_quantize(w, bits)
    m = w.abs().flatten(1).amax(1)
    scale = (2 * m / (2**bits - 1)).reshape(_view(w))
    codes = y / scale
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.min() >= -(2 ** (bits - 1)) - 1e-3
    assert codes.max() <= 2 ** (bits - 1) - 1 + 1e-3
    expected = torch.clamp(torch.round(w / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert torch.allclose(codes, expected, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, bits=BITS, seed=st.integers(0, 2**16))
def test_idempotent_with_the_layer_statistic(shape, bits, seed):
    """Q(Q(W)) == Q(W) when the channel statistic is the layer's (as the supernet uses it).

    Min-max recomputes m = max|W[c]| from its input; max|Q(W)| can differ from max|W|
    (the top code is clipped), so re-deriving the statistic from Q(W) moves the grid.
    """
    w = _weights(shape, seed)
    m = channel_absmax(w)
    once = minmax_quantize(w, bits, m)
    assert torch.equal(minmax_quantize(once, bits, m), once)


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, bits=BITS, seed=st.integers(0, 2**16))
def test_identity_ste(shape, bits, seed):
    w = _weights(shape, seed).requires_grad_()
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    minmax_quantize(w, bits).backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_zero_bits_is_exactly_zero():
    w = _weights((4, 3, 3, 3), 0)
    assert torch.equal(minmax_quantize(w, 0), torch.zeros_like(w))
    assert torch.equal(minmax_scale(channel_absmax(w), torch.tensor(0)), torch.zeros(4))
    per_channel = minmax_quantize(w, torch.tensor([0, 8, 0, 2]))
    assert torch.equal(per_channel[[0, 2]], torch.zeros_like(w[[0, 2]]))
    assert torch.equal(per_channel[1], minmax_quantize(w, 8)[1])
    assert torch.equal(per_channel[3], minmax_quantize(w, 2)[3])


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, bits=BITS, seed=st.integers(0, 2**16))
def test_bit_vector_equals_per_layer_when_channels_agree(shape, bits, seed):
    w = _weights(shape, seed)
    vector = torch.full((shape[0],), bits)
    assert torch.equal(minmax_quantize(w, vector), minmax_quantize(w, bits))


def test_bit_vector_rows_are_independent():
    w = _weights((5, 4, 3), 3)
    bits = torch.tensor([2, 8, 4, 0, 3])
    y = minmax_quantize(w, bits)
    for c, b in enumerate(bits.tolist()):
        assert torch.equal(y[c], minmax_quantize(w, b)[c])


def test_symmetric_scale_and_known_values():
    w = torch.tensor([[1.0, -0.5, 0.2, -1.0], [0.3, 0.0, -0.1, 0.15]])
    y = minmax_quantize(w, 2)  # scale = 2m/3, codes in [-2, 1]
    s = torch.tensor([2 / 3, 0.2])
    assert torch.allclose(y[0], torch.tensor([1, -1, 0, -2]) * s[0])
    assert torch.allclose(y[1], torch.tensor([1, 0, 0, 1]) * s[1])  # 0.75 → 1, -0.5 → -0 (rne)


def test_all_zero_channel_uses_unit_statistic():
    w = torch.zeros(2, 3)
    w[1] = torch.tensor([0.5, -0.25, 0.1])
    assert torch.equal(channel_absmax(w), torch.tensor([1.0, 0.5]))
    y = minmax_quantize(w, 4)
    assert torch.isfinite(y).all() and torch.equal(y[0], torch.zeros(3))


def test_absmax_input_mask_ignores_pruned_inputs():
    w = torch.tensor([[1.0, 5.0, -2.0], [-7.0, 0.5, 0.25]]).reshape(2, 3, 1, 1)
    mask = torch.tensor([True, False, True])
    assert torch.equal(channel_absmax(w, mask), torch.tensor([2.0, 7.0]))
    assert channel_absmax(w).requires_grad is False


# -- mixture over candidate precisions ----------------------------------------------------------


def _naive_mixture(w, theta, bits):
    """Σ_j θ_j · Q_{p_j}(W) with autograd through the fixed-precision function. A 0-bit term is
    the constant 0 (it does not depend on W)."""
    out = torch.zeros_like(w)
    for j, p in enumerate(bits):
        t = theta[j].reshape(_view(w)) if theta.dim() == 2 else theta[j]
        term = torch.zeros_like(w) if p == 0 else minmax_quantize(w, p)
        out = out + t * term
    return out


@settings(max_examples=50, deadline=None)
@given(shape=SHAPES, bits=BIT_SETS, seed=st.integers(0, 2**16), per_channel=st.booleans())
def test_mixed_matches_naive_forward_and_backward(shape, bits, seed, per_channel):
    g = torch.Generator().manual_seed(seed)
    theta_shape = (len(bits), shape[0]) if per_channel else (len(bits),)
    theta0 = torch.softmax(torch.randn(theta_shape, generator=g), 0)
    w0 = _weights(shape, seed)
    upstream = torch.randn(shape, generator=g)

    def run(fn):
        w = w0.clone().requires_grad_()
        theta = theta0.clone().requires_grad_()
        y = fn(w, theta, bits)
        y.backward(upstream)
        return y.detach(), w.grad, theta.grad

    fast, naive = run(mixed_minmax_quantize), run(_naive_mixture)
    for a, b in zip(fast, naive, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_mixed_weight_gradient_excludes_pruned_mass():
    w = _weights((3, 4), 1).requires_grad_()
    theta = torch.tensor([[1.0, 0.0, 0.25], [0.0, 1.0, 0.75]])  # (0, 8) per channel
    mixed_minmax_quantize(w, theta, (0, 8)).sum().backward()
    assert torch.allclose(w.grad, torch.tensor([0.0, 1.0, 0.75]).reshape(3, 1).expand(3, 4))


def test_mixed_one_hot_equals_fixed_and_uses_given_statistic():
    w = _weights((4, 2, 3, 3), 5)
    m = channel_absmax(w) * 1.5
    theta = torch.zeros(3, 4)
    index = torch.tensor([0, 2, 1, 2])
    theta[index, torch.arange(4)] = 1.0
    bits = torch.tensor([2, 4, 8])
    expected = minmax_forward(w, m, bits[index])
    assert torch.equal(mixed_minmax_quantize(w, theta, (2, 4, 8), m), expected)


# -- module and registry -----------------------------------------------------------------------


def test_minmax_module_scales_fixed_and_registry():
    w = _weights((4, 3, 3, 3), 2)
    q = make_weight_quantizer("minmax", (0, 2, 8), w)
    assert isinstance(q, MinMaxWeightQuantizer) and set(WEIGHT_QUANTIZERS) >= {"minmax", "lsq"}
    scales = q.scales(w)
    m = channel_absmax(w)
    assert scales.shape == (3, 4)
    assert torch.equal(scales[0], torch.zeros(4))
    assert torch.allclose(scales[1], 2 * m / 3) and torch.allclose(scales[2], 2 * m / 255)
    index = torch.tensor([0, 1, 2, 1])
    assert torch.equal(q.fixed_scales(w, index), scales[index, torch.arange(4)])
    assert torch.equal(q.fixed(w, index), minmax_quantize(w, torch.tensor([0, 2, 8, 2])))
    assert torch.equal(q.fixed(w, torch.tensor(2)), minmax_quantize(w, 8))
    with pytest.raises(ValueError, match="unknown weight quantizer 'nope'"):
        make_weight_quantizer("nope", (8,), w)

