"""32-bit bias quantization (docs/algorithm.md#bias) and learned-step-size (LSQ) weights."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsctl.quant.bias import INT32_MAX, INT32_MIN, bias_forward, quantize_bias
from mpsctl.quant.lsq import lsq_bounds, lsq_init_step, lsq_quantize
from mpsctl.quant.modules import LSQWeightQuantizer, make_weight_quantizer

# -- bias -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    bias=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=16),
    log_scale=st.floats(-12, 0),
)
def test_bias_is_rounded_onto_its_scale(bias, log_scale):
    b = torch.tensor(bias, dtype=torch.float64)
    s = torch.full_like(b, 10.0**log_scale)
    y = bias_forward(b, s)
    assert torch.equal(y, torch.round(b / s).clamp(INT32_MIN, INT32_MAX) * s)
    codes = y / s
    assert torch.allclose(codes, codes.round())
    assert torch.all(codes.abs() <= 2**31)


def test_bias_rounds_half_to_even():
    s = torch.ones(4)
    assert bias_forward(torch.tensor([0.5, 1.5, 2.5, -2.5]), s).tolist() == [0, 2, 2, -2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bias_saturates_to_int32(dtype):
    b = torch.tensor([1e12, -1e12, 3.0e9, 7.0], dtype=dtype)
    s = torch.tensor([1.0, 1.0, 1.0, 0.5], dtype=dtype)
    q = bias_forward(b, s) / s
    assert q.max().item() <= INT32_MAX and q.min().item() >= INT32_MIN
    assert q[1].item() == INT32_MIN
    assert q[3].item() == 14
    if dtype == torch.float64:
        assert q[0].item() == INT32_MAX and q[2].item() == INT32_MAX
    else:  # float32 cannot hold 2^31 − 1: the largest float32 below it
        assert q[0].item() == 2**31 - 128 and q[2].item() == 2**31 - 128
    assert torch.equal(q.round(), q)


def test_bias_gradient_passes_straight_through():
    """Differs from the reference: ∂y/∂b = 1, not s_b."""
    b = torch.tensor([0.3, -1.2, 5.0], requires_grad=True)
    s = torch.tensor([1e-6, 0.01, 0.5])
    upstream = torch.tensor([2.0, -3.0, 0.5])
    quantize_bias(b, s).backward(upstream)
    assert torch.equal(b.grad, upstream)


def test_zero_scale_means_zero_bias_and_no_gradient():
    b = torch.tensor([0.3, -1.2, 5.0], requires_grad=True)
    s = torch.tensor([0.1, 0.0, 0.0])
    y = quantize_bias(b, s)
    assert y[1:].tolist() == [0.0, 0.0] and y[0].item() == pytest.approx(0.3)
    y.sum().backward()
    assert b.grad.tolist() == [1.0, 0.0, 0.0]


def test_bias_broadcast_over_candidate_pairs_reduces_gradient():
    b = torch.tensor([0.3, -1.2], requires_grad=True)
    scales = torch.rand(3, 2, 2) + 0.01  # (n_in, n_w, Cout)
    scales[:, 0, 1] = 0.0  # a 0-bit weight candidate for channel 1
    y = quantize_bias(b, scales)
    assert y.shape == (3, 2, 2)
    assert torch.equal(y[:, 0, 1], torch.zeros(3))
    y.sum().backward()
    assert b.grad.tolist() == [6.0, 3.0]


def test_bias_scale_is_detached():
    s = torch.tensor([0.25], requires_grad=True)
    b = torch.tensor([1.1], requires_grad=True)
    quantize_bias(b, s).sum().backward()
    assert s.grad is None and b.grad.item() == 1.0


# -- LSQ --------------------------------------------------------------------------------------


def test_lsq_bounds_and_init_step():
    assert lsq_bounds(2) == (-2, 1) and lsq_bounds(4) == (-8, 7) and lsq_bounds(8) == (-128, 127)
    w = torch.tensor([[1.0, -3.0], [0.0, 0.0]])
    step = lsq_init_step(w, 4)
    assert step[0].item() == pytest.approx(2 * 2.0 / math.sqrt(7))
    assert step[1].item() == pytest.approx(1e-8)  # floored, never 0


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), seed=st.integers(0, 2**16))
def test_lsq_codes_in_range_and_idempotent(bits, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 3, 3, 3, generator=g)
    step = lsq_init_step(w, bits) * (torch.rand(4, generator=g) + 0.5)
    y = lsq_quantize(w, step, bits)
    codes = y / step.reshape(-1, 1, 1, 1)
    qn, qp = lsq_bounds(bits)
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.min() >= qn - 1e-4 and codes.max() <= qp + 1e-4
    assert torch.allclose(lsq_quantize(y, step, bits), y)


def test_lsq_zero_bits_is_zero():
    w = torch.randn(3, 4)
    assert torch.equal(lsq_quantize(w, torch.ones(3), 0), torch.zeros_like(w))


def test_lsq_gradients():
    """∂y/∂w = 1 inside the range, 0 outside; ∂y/∂s = (round(v) − v) inside, qn/qp outside,
    times 1/sqrt(numel_per_channel · Qp)."""
    w = torch.tensor([[0.26, -0.9, 2.0, -5.0]], requires_grad=True)
    step = torch.tensor([0.5], requires_grad=True)
    lsq_quantize(w, step, 3).sum().backward()  # codes in [-4, 3]
    assert w.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]  # codes 0.52, -1.8 inside; 4, -10 not
    v = torch.tensor([0.52, -1.8, 4.0, -10.0])
    per_elem = torch.where(v > 3, 3.0, torch.where(v < -4, -4.0, torch.round(v) - v))
    expected = per_elem.sum() / math.sqrt(4 * 3)
    assert step.grad.item() == pytest.approx(expected.item(), rel=1e-5)


def test_lsq_module_fixed_mixed_scales_and_keep_channels():
    w = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    q = make_weight_quantizer("lsq", (0, 2, 8), w)
    assert isinstance(q, LSQWeightQuantizer) and q.step.shape == (3, 5)
    assert torch.equal(q.step[0], torch.zeros(5))
    assert torch.allclose(q.step[2], lsq_init_step(w, 8))
    index = torch.tensor([0, 1, 2, 2, 1])
    theta = torch.nn.functional.one_hot(index, 3).T.float()
    fixed = q.fixed(w, index)
    assert torch.allclose(q.mixed(w, theta), fixed)
    assert torch.equal(fixed[0], torch.zeros_like(fixed[0]))
    scales = q.scales(w)
    assert torch.equal(scales[0], torch.zeros(5)) and torch.all(scales[1:] > 0)
    assert torch.equal(q.fixed_scales(w, index), scales[index, torch.arange(5)])
    keep = torch.tensor([1, 3, 4])
    q.keep_channels(keep)
    assert q.step.shape == (3, 3)
    assert torch.allclose(q.fixed(w[keep], index[keep]), fixed[keep])
