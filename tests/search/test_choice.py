"""PrecisionChoice (docs/algorithm.md#precision-choices): logits init, θ modes, eval argmax,
min_keep, freeze."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from mpsctl.search.choice import PrecisionChoice

THETA_248 = (0.227220, 0.291756, 0.481024)


def test_alpha_init_and_theta_at_unit_temperature():
    c = PrecisionChoice((2, 4, 8))
    assert torch.allclose(c.alpha, torch.tensor([0.25, 0.5, 1.0]))
    assert torch.allclose(c.soft_theta(), torch.tensor(THETA_248), atol=1e-6)
    c.train()
    assert torch.allclose(c.sample(), torch.tensor(THETA_248), atol=1e-6)


def test_per_channel_init_and_pruning_candidates():
    c = PrecisionChoice((0, 2, 4, 8), channels=5)
    assert c.alpha.shape == (4, 5) and c.per_channel and c.can_prune
    assert torch.allclose(c.alpha, torch.tensor([0.0, 0.25, 0.5, 1.0]).unsqueeze(1).expand(4, 5))
    theta = c.soft_theta()
    assert torch.allclose(theta.sum(0), torch.ones(5))
    # Weight compensation factor (docs/algorithm.md#pruning-with-0-bits):
    # 1 / Σ_{p≠0} θ_p = 1.17696 for (0, 2, 4, 8).
    assert (1 / theta[1:].sum(0)).tolist() == pytest.approx([1.17696] * 5, abs=1e-5)


@pytest.mark.parametrize("bits", [(4, 2, 8), (2, 2, 4), (8, 4)])
def test_precisions_must_be_distinct_and_ascending(bits):
    with pytest.raises(ValueError, match="distinct and ascending"):
        PrecisionChoice(bits)


def test_zero_bits_need_a_per_channel_choice():
    with pytest.raises(ValueError, match="per-channel"):
        PrecisionChoice((0, 2, 8))


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0, 10.0])
def test_temperature_divides_the_logits(temperature):
    c = PrecisionChoice((2, 4, 8), channels=3)
    with torch.no_grad():
        c.alpha.normal_()
    c.temperature = temperature
    assert torch.allclose(c.soft_theta(), F.softmax(c.alpha / temperature, dim=0))


def test_low_temperature_approaches_one_hot():
    c = PrecisionChoice((2, 4, 8))
    c.temperature = 0.01
    assert torch.allclose(c.soft_theta(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    c.temperature = 1e4
    assert torch.allclose(c.soft_theta(), torch.full((3,), 1 / 3), atol=1e-4)


@pytest.mark.parametrize("channels", [None, 7])
def test_gumbel_rows_sum_to_one_and_are_random(channels):
    torch.manual_seed(0)
    c = PrecisionChoice((2, 4, 8), channels=channels).train()
    c.mode = "gumbel"
    a, b = c.sample(), c.sample()
    assert a.shape == c.alpha.shape
    assert torch.allclose(a.sum(0), torch.ones_like(a.sum(0)))
    assert torch.all(a >= 0) and not torch.equal(a, b)
    a.sum().backward()  # differentiable w.r.t. α
    assert c.alpha.grad is not None


def test_gumbel_mean_follows_the_logits():
    torch.manual_seed(1)
    c = PrecisionChoice((2, 4, 8)).train()
    c.mode = "gumbel"
    with torch.no_grad():
        c.alpha.copy_(torch.tensor([0.0, 0.0, 3.0]))
    mean = torch.stack([c.sample().detach() for _ in range(400)]).mean(0)
    assert mean.argmax().item() == 2 and mean[2] > 0.6


@pytest.mark.parametrize("channels", [None, 6])
def test_hard_mode_is_one_hot_forward_with_soft_gradient(channels):
    torch.manual_seed(0)
    hard = PrecisionChoice((2, 4, 8), channels=channels).train()
    with torch.no_grad():
        hard.alpha.normal_()
    soft = copy.deepcopy(hard)
    hard.mode = "hard"
    theta_hard, theta_soft = hard.sample(), soft.sample()
    expected = F.one_hot(hard.alpha.argmax(0), 3).movedim(-1, 0).float()
    assert torch.equal(theta_hard, expected)
    weights = torch.randn(theta_hard.shape)
    (theta_hard * weights).sum().backward()
    (theta_soft * weights).sum().backward()
    assert torch.allclose(hard.alpha.grad, soft.alpha.grad)
    assert hard.alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["softmax", "gumbel", "hard"])
def test_eval_mode_is_always_the_argmax(mode):
    c = PrecisionChoice((2, 4, 8), channels=4)
    with torch.no_grad():
        c.alpha.copy_(torch.tensor([[3.0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 3], ]))
    c.mode = mode
    c.eval()
    theta = c.sample()
    assert c.assignment().tolist() == [0, 1, 2, 2]
    assert torch.equal(theta, F.one_hot(torch.tensor([0, 1, 2, 2]), 3).T.float())
    assert not theta.requires_grad


def test_theta_is_cached_per_step():
    c = PrecisionChoice((2, 4, 8), channels=3).train()
    c.mode = "gumbel"
    first = c.sample()
    assert c.theta() is first and c.theta() is first  # every user of a shared choice sees one θ
    assert c.sample() is not first
    assert torch.allclose(c.channel_mass(), c.theta().sum(1))
    layer = PrecisionChoice((2, 8)).train()
    assert torch.equal(layer.channel_mass(), layer.theta())


def test_min_keep_revives_channel_with_most_non_zero_mass():
    c = PrecisionChoice((0, 2, 4, 8), channels=5)
    with torch.no_grad():
        c.alpha.copy_(torch.tensor([
            [5.0, 5.0, 5.0, 5.0, 5.0],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 2.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
        ]))
    assert c.alpha.argmax(0).tolist() == [0] * 5  # every channel prefers 0 bits
    index = c.assignment()
    assert index.tolist() == [0, 0, 0, 2, 0]  # channel 3 (largest non-zero mass) at 4 bits
    c.min_keep = 3
    index = c.assignment()
    assert (index != 0).sum().item() == 3
    assert index.tolist() == [0, 3, 1, 2, 0]  # each revived channel at its best non-zero bits
    c.min_keep = 99
    assert (c.assignment() != 0).all()


def test_min_keep_does_not_touch_layers_with_enough_channels():
    c = PrecisionChoice((0, 2, 4, 8), channels=4, min_keep=2)
    with torch.no_grad():
        c.alpha.copy_(torch.tensor([[9.0, 9, 0, 0], [0, 0, 9, 0], [0, 0, 0, 9], [0, 0, 0, 0]]))
    assert c.assignment().tolist() == [0, 0, 1, 2]


def test_min_keep_applies_to_hard_and_eval_theta():
    c = PrecisionChoice((0, 2, 8), channels=3, min_keep=1).train()
    with torch.no_grad():
        c.alpha.copy_(torch.tensor([[4.0, 4.0, 4.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.0]]))
    c.mode = "hard"
    assert c.sample()[0].tolist() == [1.0, 0.0, 1.0]
    c.eval()
    assert c.sample()[0].tolist() == [1.0, 0.0, 1.0]


def test_freeze_fixes_the_choice_and_drops_logits():
    c = PrecisionChoice((0, 2, 4, 8), channels=4).train()
    with torch.no_grad():
        c.alpha.copy_(torch.tensor([[3.0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 3]]))
    c.freeze()
    assert c.is_fixed and c.alpha is None
    assert not any(True for _ in c.parameters())
    assert c.assignment().tolist() == [0, 1, 2, 3]
    assert torch.equal(c.sample(), torch.eye(4))  # one-hot even in training mode
    c.keep_channels(torch.tensor([1, 3]))
    assert c.channels == 2 and c.assignment().tolist() == [1, 3]
    assert "fixed_index" in c.state_dict()

    explicit = PrecisionChoice((2, 4, 8)).train()
    explicit.freeze(torch.tensor(0))
    assert explicit.assignment().item() == 0
    assert torch.equal(explicit.sample(), torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(RuntimeError):
        explicit.keep_channels(torch.tensor([0]))


def test_copy_and_pickle_after_a_training_step():
    """The cached θ of a step is a non-leaf tensor: copying the choice must still work."""
    c = PrecisionChoice((0, 2, 8), channels=3).train()
    theta = c.sample()
    assert theta.grad_fn is not None
    clone = copy.deepcopy(c)
    assert clone._theta is None and torch.equal(clone.alpha, c.alpha)
    assert c.theta() is theta  # the original keeps its step's θ
    restored = pickle.loads(pickle.dumps(c))
    assert torch.allclose(restored.theta(), theta)


def test_revived_channel_does_not_depend_on_the_dtype():
    """Every channel prefers 0 bits by far (softmax underflows to exact zeros in float32):
    min_keep must revive the same channel in a float32 and a float64 copy, the lowest index
    among exact ties (issue 19: the export check ran in float64 and kept another channel)."""
    c = PrecisionChoice((0, 2, 4, 8), channels=300, min_keep=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        c.alpha.copy_(torch.randn(4, 300, generator=g))
        c.alpha[0] = c.alpha[1:].amax(0) + 120.0
    c.temperature = 1.0
    assert float(c.soft_theta().detach()[1:].sum(0).max()) == 0.0  # the float32 mass is all ties
    kept32 = torch.nonzero(c.assignment()).flatten()
    kept64 = torch.nonzero(copy.deepcopy(c).double().assignment()).flatten()
    assert kept32.tolist() == kept64.tolist() and len(kept32) == 1
    logits = c.alpha.double()
    expected = (torch.logsumexp(logits[1:], 0) - logits[0]).argmax()
    assert kept32.item() == expected.item()
    with torch.no_grad():
        c.alpha.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]).unsqueeze(1).expand(4, 300))
    assert torch.nonzero(c.assignment()).flatten().tolist() == [0]  # exact tie: lowest index
