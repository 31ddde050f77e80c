"""PACT activation fake-quantization (docs/algorithm.md#activations-pact): ranges,
idempotence, STE gradients, and the memory-saving mixture whose custom backward must equal
autograd on the naive sum."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsctl.quant.activation import mixed_pact_quantize, pact_forward, pact_quantize
from mpsctl.quant.grid import act_levels, act_scale, floor_margin
from mpsctl.quant.modules import (
    ACTIVATION_QUANTIZERS,
    PACTActivationQuantizer,
    make_activation_quantizer,
)

VALUES = st.lists(
    st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, width=32), min_size=1, max_size=64
)
CLIPS = st.floats(min_value=0.0625, max_value=12.0, width=32)
BITS = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
SIGNED_BITS = st.sampled_from([2, 3, 4, 5, 6, 7, 8, 12, 16])
BIT_SETS = st.lists(st.sampled_from([2, 3, 4, 5, 6, 8]), min_size=1, max_size=4, unique=True).map(
    sorted
)


def _t(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def _codes(y: torch.Tensor, clip: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    return y / act_scale(clip, bits, signed)


# -- forward: range, grid, idempotence ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(values=VALUES, clip=CLIPS, bits=BITS)
def test_unsigned_codes_are_integers_in_range(values, clip, bits):
    x, c = _t(values), torch.tensor(clip)
    y = pact_quantize(x, c, bits)
    codes = _codes(y, c, bits, signed=False)
    tol = 1e-3 * max(1, 2**bits / 256)  # float32 round-off in k/s grows with the code k
    assert torch.all(codes >= 0)
    assert torch.all(codes <= 2**bits - 1 + tol)
    assert torch.allclose(codes, codes.round(), atol=tol)
    assert torch.all(y[x <= 0] == 0), "negative inputs map to 0 (a following ReLU is a no-op)"


@settings(max_examples=60, deadline=None)
@given(values=VALUES, clip=CLIPS, bits=SIGNED_BITS)
def test_signed_codes_are_symmetric_integers_in_range(values, clip, bits):
    x, c = _t(values), torch.tensor(clip)
    y = pact_quantize(x, c, bits, signed=True)
    codes = _codes(y, c, bits, signed=True)
    top = 2 ** (bits - 1) - 1
    tol = 1e-3 * max(1, 2**bits / 256)
    assert torch.all(codes.abs() <= top + tol)
    assert torch.allclose(codes, codes.round(), atol=tol)
    # Sign is kept: the signed variant exists so that negative values survive.
    assert torch.all(torch.sign(y) * torch.sign(x) >= 0)


@settings(max_examples=60, deadline=None)
@given(values=VALUES, clip=CLIPS, bits=BITS, signed=st.booleans())
def test_pact_is_idempotent(values, clip, bits, signed):
    if signed and bits == 1:
        bits = 2
    x, c = _t(values), torch.tensor(clip)
    once = pact_quantize(x, c, bits, signed)
    assert torch.equal(pact_quantize(once, c, bits, signed), once)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
def test_idempotent_on_dense_inputs_at_high_precision(bits, dtype):
    """Float round-off in s·(k/s) grows with the code; re-quantizing must still be exact."""
    for clip in (0.37, 1.0, 6.0, 123.4):
        c = torch.tensor(clip, dtype=dtype)
        x = torch.linspace(-0.1 * clip, 1.2 * clip, 20001, dtype=dtype)
        for signed in (False, True):
            once = pact_forward(x, c, bits, signed)
            assert torch.equal(pact_forward(once, c, bits, signed), once)


@settings(max_examples=60, deadline=None)
@given(values=VALUES, clip=CLIPS, bits=st.sampled_from([2, 3, 4, 8]))
def test_unsigned_forward_is_floor_of_clamped_input(values, clip, bits):
    """y = ⌊s·clamp(x, 0, clip)⌋ / s up to the tiny margin that keeps grid values on the grid."""
    x, c = _t(values, torch.float64), torch.tensor(clip, dtype=torch.float64)
    y = pact_forward(x, c, bits, signed=False)
    clamped = x.clamp(0, clip)
    step = clip / (2**bits - 1)
    assert torch.all(y <= clamped + 1e-3 * step)
    assert torch.all(y > clamped - step)


@settings(max_examples=60, deadline=None)
@given(values=VALUES, clip=CLIPS, bits=st.sampled_from([2, 3, 4, 8]))
def test_signed_forward_rounds_half_to_even(values, clip, bits):
    x, c = _t(values, torch.float64), torch.tensor(clip, dtype=torch.float64)
    s = (2 ** (bits - 1) - 1) / clip
    expected = torch.round(x.clamp(-clip, clip) * s) / s
    assert torch.allclose(pact_forward(x, c, bits, signed=True), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_full_range_top_code_is_used(bits):
    """Differs from the reference: x ≥ clip gives exactly clip (code 2^p − 1), no 0.001 offset."""
    c = torch.tensor(2.5)
    y = pact_quantize(torch.tensor([2.5, 3.0, 100.0]), c, bits)
    assert torch.allclose(y, torch.full((3,), 2.5))
    assert act_levels(bits, signed=False) == 2**bits - 1
    assert act_levels(bits, signed=True) == 2 ** (bits - 1) - 1
    assert torch.isclose(act_scale(c, bits, False), c / (2**bits - 1))


def test_signed_values_example():
    c = torch.tensor(1.0)
    x = torch.tensor([-2.0, -1.0, -0.5, -1 / 6, 0.0, 1 / 6, 0.5, 1.0, 2.0])
    y = pact_quantize(x, c, 3, signed=True)  # s = 3
    assert torch.allclose(y, torch.tensor([-1, -1, -2 / 3, 0, 0, 0, 2 / 3, 1, 1]))


# -- backward: straight-through rules --------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(values=VALUES, clip=CLIPS, bits=st.sampled_from([2, 4, 8]), signed=st.booleans(),
       seed=st.integers(0, 2**16))
def test_pact_ste_gradients(values, clip, bits, signed, seed):
    x = _t(values).requires_grad_()
    c = torch.tensor(clip, requires_grad=True)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    pact_quantize(x, c, bits, signed).backward(upstream)
    xd = x.detach()
    low = -clip if signed else 0.0
    inside = (xd > low) & (xd < clip)
    assert torch.equal(x.grad, upstream * inside)
    expected_clip = upstream[xd >= clip].sum()
    if signed:
        expected_clip = expected_clip - upstream[xd <= -clip].sum()
    assert torch.allclose(c.grad, expected_clip, atol=1e-5)


def test_pact_ste_counts_with_unit_gradient():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 7.0], requires_grad=True)
    c = torch.tensor(2.0, requires_grad=True)
    pact_quantize(x, c, 4).sum().backward()
    assert x.grad.tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert c.grad.item() == 2.0  # x ≥ clip: 2.0 and 7.0

    x.grad, c.grad = None, None
    pact_quantize(x, c, 4, signed=True).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 0, 0]
    assert c.grad.item() == 2.0 - 1.0  # two at or above clip, one at or below −clip


# -- the mixture over candidate precisions -------------------------------------------------------


def _naive_mixture(x, clip, theta, bits, signed):
    """Σ_i θ_i · Q_{p_i}(x) built from the fixed-precision function (n copies for autograd)."""
    return sum(theta[i] * pact_quantize(x, clip, p, signed) for i, p in enumerate(bits))


@settings(max_examples=50, deadline=None)
@given(values=VALUES, clip=CLIPS, bits=BIT_SETS, signed=st.booleans(),
       seed=st.integers(0, 2**16), normalised=st.booleans())
def test_mixed_pact_matches_naive_forward_and_backward(values, clip, bits, signed, seed,
                                                      normalised):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(bits), generator=g)
    # θ need not sum to 1 for the function (Gumbel / hard θ do, but check the general case).
    theta0 = torch.softmax(logits, 0) if normalised else torch.rand(len(bits), generator=g)
    upstream = torch.randn(len(values), generator=g)

    def run(fn):
        x = _t(values).requires_grad_()
        c = torch.tensor(clip, requires_grad=True)
        theta = theta0.clone().requires_grad_()
        y = fn(x, c, theta, bits, signed)
        y.backward(upstream)
        return y.detach(), x.grad, c.grad, theta.grad

    fast, naive = run(mixed_pact_quantize), run(_naive_mixture)
    for a, b in zip(fast, naive, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("signed", [False, True])
def test_mixed_pact_one_hot_equals_fixed(signed):
    """The search path at a one-hot θ is the export path, at every precision."""
    bits = (2, 4, 8, 12, 16)
    x = torch.linspace(-8, 8, 4001)
    x = torch.cat([x, pact_quantize(x, torch.tensor(6.0), 16, signed)])  # on-grid values too
    c = torch.tensor(6.0)
    for i, p in enumerate(bits):
        theta = torch.nn.functional.one_hot(torch.tensor(i), len(bits)).float()
        mixed = mixed_pact_quantize(x, c, theta, bits, signed)
        assert torch.equal(mixed, pact_quantize(x, c, p, signed)), p


@pytest.mark.parametrize("mode", ["softmax", "hard", "unnormalised"])
def test_mixed_pact_with_folded_relu_equals_relu_after(mode):
    """``relu=True`` (the converter folds a ReLU after a signed quantizer into the call) gives
    the values and every gradient of a separate ReLU after the mixture."""
    g = torch.Generator().manual_seed(3)
    values = torch.cat([torch.randn(3000, generator=g) * 4,
                        torch.tensor([0.0, 3.0, -3.0, 1e-3, -1e-3, 3.5, -3.5])])
    logits = torch.randn(3, generator=g)
    if mode == "softmax":
        theta0 = torch.softmax(logits, 0)
    elif mode == "hard":  # straight-through one-hot: exact 0/1 only up to round-off
        soft = torch.softmax(logits, 0)
        theta0 = torch.nn.functional.one_hot(soft.argmax(), 3).float() - soft + soft
    else:
        theta0 = torch.rand(3, generator=g)
    upstream = torch.randn(values.numel(), generator=g)

    def run(fold: bool):
        x = values.clone().requires_grad_()
        c = torch.tensor(3.0, requires_grad=True)
        theta = theta0.clone().requires_grad_()
        if fold:
            y = mixed_pact_quantize(x, c, theta, (2, 4, 8), True, relu=True)
        else:
            y = torch.relu(mixed_pact_quantize(x, c, theta, (2, 4, 8), True))
        y.backward(upstream)
        return y.detach(), x.grad, c.grad, theta.grad

    folded, separate = run(True), run(False)
    assert bool((folded[0] >= 0).all()) and bool((separate[1] == 0).any())
    for a, b in zip(folded, separate, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_mixed_pact_keeps_channels_last_without_copying():
    """A channels-last activation is quantized in memory order: same values as the
    contiguous tensor, the output stays channels-last, and the input is not copied."""
    x = torch.randn(2, 5, 4, 3) * 2
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    c = torch.tensor(3.0)
    theta = torch.softmax(torch.randn(3), 0)
    seen: list[int] = []

    def pack(t):
        seen.append(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = mixed_pact_quantize(x_cl, c, theta, (2, 4, 8), True)
    assert x_cl.untyped_storage().data_ptr() in seen
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, mixed_pact_quantize(x, c, theta, (2, 4, 8), True))
    y.backward(torch.ones_like(y))
    assert x_cl.grad is not None and x_cl.grad.shape == x.shape


def test_mixed_pact_saves_one_input_not_n_copies():
    """Unlike the reference, the mixture keeps x (and θ, clip) alive for backward, not n tensors."""
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    c = torch.tensor(6.0, requires_grad=True)
    theta = torch.softmax(torch.randn(5), 0).requires_grad_()
    saved: list[torch.Size] = []

    def pack(t):
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mixed_pact_quantize(x, c, theta, (2, 3, 4, 6, 8))
    big = [s for s in saved if s.numel() == x.numel()]  # saved as a flat view
    assert len(big) == 1, saved


# -- module and registry ---------------------------------------------------------------------


def test_pact_module_defaults_scales_and_registry():
    q = make_activation_quantizer("pact", (8, 2, 4))
    assert isinstance(q, PACTActivationQuantizer) and "pact" in ACTIVATION_QUANTIZERS
    assert q.bits == (8, 2, 4) and q.clip.item() == 6.0 and not q.signed
    assert torch.allclose(q.scales(), torch.tensor([6 / 255, 6 / 3, 6 / 15]))
    signed = PACTActivationQuantizer((4,), clip=1.0, signed=True)
    assert torch.allclose(signed.scales(), torch.tensor([1 / 7]))
    with pytest.raises(ValueError, match="unknown activation quantizer 'nope'"):
        make_activation_quantizer("nope", (8,))


def test_pact_module_fixed_and_mixed_agree_with_functions():
    q = PACTActivationQuantizer((2, 4, 8), clip=3.0)
    x = torch.linspace(-1, 4, 57)
    theta = torch.tensor([0.2, 0.3, 0.5])
    assert torch.equal(q.fixed(x, 1), pact_quantize(x, torch.tensor(3.0), 4))
    assert torch.allclose(q.mixed(x, theta), _naive_mixture(x, torch.tensor(3.0), theta,
                                                            (2, 4, 8), False))
    assert q.fixed(x.double(), 2).dtype == torch.float64


def test_clip_floor_prevents_division_by_zero_but_keeps_gradient():
    q = PACTActivationQuantizer((4,), clip=1.0, floor=1e-3)
    with torch.no_grad():
        q.clip.fill_(-0.5)  # as if a large learning-rate step overshot
    x = torch.linspace(-1, 1, 11)
    y = q.fixed(x, 0)
    assert torch.isfinite(y).all()
    assert y.max().item() == pytest.approx(1e-3, rel=1e-4)
    y.sum().backward()
    assert q.clip.grad is not None and q.clip.grad.item() > 0



def test_eager_relu_backward_recomputes_an_output_it_was_not_given():
    """If compilation breaks between a forward and its backward, the eager backward gets no
    saved output (the compiled path saves none) and recomputes it: same gradients."""
    from mpsctl.quant import fused

    forward, backward = fused._eager("pact", ((2, 4, 8), True, True))
    x, g = torch.randn(500) * 3, torch.randn(500)
    clip, theta = torch.tensor(2.0), torch.softmax(torch.randn(3), 0)
    given = backward(g, x, clip, theta, forward(x, clip, theta))
    recomputed = backward(g, x, clip, theta, None)
    assert bool((given[0] == 0).any())
    for a, b in zip(given, recomputed, strict=True):
        assert torch.equal(a, b)


def test_one_flooring_margin_for_every_path():
    """The margin grows above 8 bits; the fake-quant forward, the eager mixture and the
    ONNX grid all take it from mpsctl.quant.grid."""
    from mpsctl.deploy.integer import ActGrid

    assert floor_margin(255) == floor_margin(3) == 1e-4
    assert floor_margin(65535) == pytest.approx(1e-4 * 65535 / 255)
    assert ActGrid(16, False, 1.0, 65535.0).floor_eps == floor_margin(65535)
    x = torch.tensor([k / 65535 for k in (0, 1, 777, 65534, 65535)])
    codes = pact_forward(x, torch.tensor(1.0), 16, False) * 65535
    assert codes.round().tolist() == [0, 1, 777, 65534, 65535]
