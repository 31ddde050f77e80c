"""The compiled (fused) quantizer path gives the eager path's numbers."""

from __future__ import annotations

import pytest
import torch

from mpsctl.quant import fused
from mpsctl.quant.activation import mixed_pact_quantize
from mpsctl.quant.weight import mixed_minmax_quantize

pytestmark = pytest.mark.slow


def _act_grads(x, clip, theta, bits, signed, relu, compiled):
    x = x.clone().requires_grad_()
    clip = clip.clone().requires_grad_()
    theta = theta.clone().requires_grad_()
    y = mixed_pact_quantize(x, clip, theta, bits, signed, relu, compiled=compiled)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, clip.grad, theta.grad


@pytest.mark.parametrize("signed,relu", [(False, False), (True, False), (True, True)])
def test_mixed_pact_compiled_equals_eager(signed, relu):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6) * 3
    x[0, 0, 0, :3] = torch.tensor([2.5, -2.5, 0.0])  # exactly on the clip and at 0
    clip = torch.tensor(2.5)
    theta = torch.softmax(torch.randn(3), 0)
    got = _act_grads(x, clip, theta, (2, 4, 8), signed, relu, compiled=True)
    want = _act_grads(x, clip, theta, (2, 4, 8), signed, relu, compiled=False)
    assert not fused._state["broken"]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_channel", [False, True])
def test_mixed_minmax_compiled_equals_eager(per_channel):
    torch.manual_seed(1)
    w = torch.randn(16, 8, 3, 3)
    theta = torch.softmax(torch.randn(4, 16) if per_channel else torch.randn(4), 0)
    results = []
    for compiled in (True, False):
        wr = w.clone().requires_grad_()
        th = theta.clone().requires_grad_()
        y = mixed_minmax_quantize(wr, th, (0, 2, 4, 8), compiled=compiled)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), wr.grad, th.grad))
    assert not fused._state["broken"]
    for g, e in zip(*results, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
