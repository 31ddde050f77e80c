"""NE16 latency model: the worked examples of docs/algorithm.md#ne16-latency, exactness,
monotonicity, gradients, constants."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsctl.cost.base import LayerGeometry
from mpsctl.cost.rounding import cdiv, fdiv, mod
from mpsctl.errors import UserError
from mpsctl.targets import build_cost_model
from mpsctl.targets.ne16 import (
    DEFAULT_CONSTANTS_PATH,
    NE16Constants,
    NE16CostModel,
    load_ne16_constants,
    ne16_job_cycles,
    ne16_layer_cycles,
    ne16_supported,
)

E1 = LayerGeometry("conv", cin=16, cout=32, kernel=(3, 3), out_hw=(32, 32))
POINTWISE = LayerGeometry("conv", cin=32, cout=64, kernel=(1, 1), out_hw=(16, 16))
NE16 = NE16CostModel()
FAST = settings(max_examples=60, deadline=None)


def _cost(geom: LayerGeometry, bits: list[float], cout, cin) -> torch.Tensor:
    p_w = torch.tensor([bits])
    p_in = torch.tensor([[8.0]])
    return NE16.group_costs(geom, p_in, p_w, torch.as_tensor(cin), torch.as_tensor(cout))


# ----------------------------------------------------------------------- worked examples


@pytest.mark.parametrize(("bits", "cycles"), [(2, 19723), (4, 27467), (8, 42955)])
def test_e1_conv_3x3(bits: int, cycles: int) -> None:
    assert ne16_layer_cycles(E1, {bits: 32}, cin=16) == cycles
    assert ne16_job_cycles("conv", (3, 3), (32, 32), 32, 16, bits) == cycles


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_pointwise_does_not_depend_on_bits(bits: int) -> None:
    assert ne16_layer_cycles(POINTWISE, {bits: 64}, cin=32) == 13248


def test_cost_function_matches_exact_model_on_integers() -> None:
    cost = _cost(E1, [0.0, 2.0, 4.0, 8.0], 32.0, 16.0)
    assert cost.shape == (1, 4)
    assert cost.tolist() == [[0.0, 19723.0, 27467.0, 42955.0]]
    per_group = _cost(E1, [2.0, 4.0, 8.0], torch.tensor([[5.0, 7.0, 20.0]]), 16.0)
    assert per_group.sum().item() == 52151 == ne16_layer_cycles(E1, {2: 5, 4: 7, 8: 20}, 16)


def test_cost_is_registered_and_ignores_input_precision() -> None:
    assert isinstance(build_cost_model("ne16"), NE16CostModel)
    p_w = torch.tensor([[2.0, 8.0]])
    cin, cout = torch.tensor(16.0), torch.tensor(32.0)
    one = NE16.group_costs(E1, torch.tensor([[8.0]]), p_w, cin, cout)
    two = NE16.group_costs(E1, torch.tensor([[2.0], [8.0]]), p_w, cin, cout)
    assert torch.broadcast_to(one, (2, 2)).tolist() == torch.broadcast_to(two, (2, 2)).tolist()


def test_linear_is_pointwise_on_one_pixel() -> None:
    linear = LayerGeometry("linear", cin=100, cout=10)
    as_conv = ne16_job_cycles("conv", (1, 1), (1, 1), 10, 100, 8)
    assert ne16_layer_cycles(linear, {8: 10}, cin=100) == as_conv
    # 7 input passes, one partial tile of 10: 7*(19+6+16+2) + 9+10 + 13
    assert as_conv == 7 * 43 + 32


def test_depthwise_formula() -> None:
    dw = LayerGeometry("depthwise", cin=20, cout=20, kernel=(3, 3), out_hw=(6, 6))

    # n_sp = 4; tiles of 16 and 4: iter(k) = 31 + (6+k) + (6+k*b) + 2 + (9+k) + 13
    def it(k: int) -> int:
        return 31 + 6 + k + 6 + k * 4 + 2 + 9 + k + 13

    assert ne16_layer_cycles(dw, {4: 20}, cin=20) == 4 * (it(16) + it(4))


def test_kernel_decomposition() -> None:
    three = ne16_job_cycles("conv", (3, 3), (8, 8), 40, 24, 4)
    one = ne16_job_cycles("conv", (1, 1), (8, 8), 40, 24, 4)
    # 5x5 -> one 3x3 job + 16 1x1 jobs; 7x7 -> four 3x3 + 13 1x1; 3x1 (Conv1d) -> three 1x1.
    assert ne16_job_cycles("conv", (5, 5), (8, 8), 40, 24, 4) == three + 16 * one
    assert ne16_job_cycles("conv", (7, 7), (8, 8), 40, 24, 4) == 4 * three + 13 * one
    assert ne16_job_cycles("conv", (3, 1), (8, 8), 40, 24, 4) == 3 * one


def test_depthwise_kernels_become_3x3_depthwise_jobs_only() -> None:
    """NE16 has no 1x1 depthwise mode: a k x k depthwise kernel is ceil(k/3)^2 zero-padded
    3x3 depthwise jobs (5x5 -> 4, 7x7 -> 9, 1x1 -> 1, 5x3 -> 2), never extra 1x1 jobs."""
    three = ne16_job_cycles("depthwise", (3, 3), (8, 8), 40, 40, 4)
    for kernel, jobs in [((5, 5), 4), ((7, 7), 9), ((1, 1), 1), ((5, 3), 2), ((2, 2), 1)]:
        assert ne16_job_cycles("depthwise", kernel, (8, 8), 40, 40, 4) == jobs * three


def test_zero_channels_and_zero_bits_are_free() -> None:
    assert ne16_job_cycles("conv", (3, 3), (32, 32), 0, 16, 8) == 0
    assert ne16_layer_cycles(E1, {0: 12, 8: 0}, cin=16) == 0
    assert _cost(E1, [0.0], 32.0, 16.0).item() == 0.0


def test_split_into_groups_is_a_sum_of_jobs() -> None:
    for c in (1, 16, 20, 32, 45):
        both = ne16_layer_cycles(E1, {4: c, 8: c}, cin=16)
        assert both == ne16_layer_cycles(E1, {4: c}, 16) + ne16_layer_cycles(E1, {8: c}, 16)


def test_supported_layers() -> None:
    assert ne16_supported(E1) and ne16_supported(POINTWISE)
    assert ne16_supported(LayerGeometry("linear", 10, 10))
    assert ne16_supported(LayerGeometry("conv", 8, 8, (5, 5), (4, 4)))
    assert ne16_supported(LayerGeometry("depthwise", 8, 8, (3, 3), (4, 4), groups=8))
    assert not ne16_supported(LayerGeometry("depthwise", 8, 8, (5, 5), (4, 4), groups=8))
    assert not ne16_supported(LayerGeometry("conv", 8, 8, (3, 3), (4, 4), groups=2))


# ----------------------------------------------------------------------- properties

kinds = st.sampled_from(["conv", "depthwise", "linear"])
kernels = st.sampled_from([(1, 1), (3, 3), (5, 5), (3, 1)])
sizes = st.integers(1, 40)


@FAST
@given(kinds, kernels, sizes, sizes, st.integers(0, 200), st.integers(1, 300), st.integers(2, 8))
def test_fewer_output_channels_never_slower(kind, kernel, ho, wo, ko, ki, bits) -> None:
    def job(k: int) -> int:
        return ne16_job_cycles(kind, kernel, (ho, wo), k, ki, bits)

    assert job(ko) <= job(ko + 1)


@FAST
@given(
    st.sampled_from(["conv", "depthwise"]),
    sizes,
    sizes,
    st.integers(0, 200),
    st.integers(1, 300),
    st.integers(2, 7),
)
def test_fewer_weight_bits_never_slower(kind, ho, wo, ko, ki, bits) -> None:
    def job(b: int) -> int:
        return ne16_job_cycles(kind, (3, 3), (ho, wo), ko, ki, b)

    assert job(bits) <= job(bits + 1)


@FAST
@given(kinds, kernels, sizes, sizes, st.integers(0, 200), st.integers(1, 300), st.integers(2, 8))
def test_tensor_path_equals_integer_path(kind, kernel, ho, wo, ko, ki, bits) -> None:
    exact = ne16_job_cycles(kind, kernel, (ho, wo), ko, ki, bits)
    as_float = ne16_job_cycles(
        kind,
        kernel,
        (ho, wo),
        torch.tensor(float(ko)),
        torch.tensor(float(ki)),
        torch.tensor(float(bits)),
    )
    assert isinstance(exact, int)
    assert as_float.item() == exact


@FAST
@given(st.integers(0, 10_000), st.integers(1, 64))
def test_integer_helpers_are_exact(a: int, b: int) -> None:
    t = torch.tensor(float(a), dtype=torch.float64)
    assert fdiv(a, b) == a // b == fdiv(t, b).item()
    assert cdiv(a, b) == -(-a // b) == cdiv(t, b).item()
    assert mod(a, b) == a % b == mod(t, b).item()


# ----------------------------------------------------------------------- gradients


def test_helpers_are_straight_through() -> None:
    a = torch.tensor([5.5, 33.0, 70.25], requires_grad=True)
    (fdiv(a, 32) + 2 * cdiv(a, 16) + 3 * mod(a, 32)).sum().backward()
    assert a.grad.tolist() == [6.0, 6.0, 6.0]


@pytest.mark.parametrize("geom", [E1, LayerGeometry("depthwise", 48, 48, (3, 3), (8, 8), 48)])
def test_gradient_reaches_the_logits(geom: LayerGeometry) -> None:
    alpha = torch.tensor([0.25, 0.5, 1.0], requires_grad=True)
    theta = torch.softmax(alpha, dim=0)
    cout = (theta * geom.cout).unsqueeze(0)
    cost = NE16.group_costs(
        geom,
        torch.tensor([[8.0]]),
        torch.tensor([[2.0, 4.0, 8.0]]),
        torch.tensor(float(geom.cin)),
        cout,
    )
    assert cost.shape == (1, 3)
    cost[0, 2].backward()
    assert torch.isfinite(alpha.grad).all() and alpha.grad.abs().sum() > 0

    alpha.grad = None
    theta = torch.softmax(alpha, dim=0)
    total = NE16.group_costs(
        geom,
        torch.tensor([[8.0]]),
        torch.tensor([[2.0, 4.0, 8.0]]),
        torch.tensor(float(geom.cin)),
        (theta * geom.cout).unsqueeze(0),
    ).sum()
    total.backward()
    assert torch.isfinite(alpha.grad).all() and alpha.grad.abs().sum() > 0


def test_gradient_reaches_input_channels() -> None:
    cin = torch.tensor(20.0, requires_grad=True)
    _cost(E1, [8.0], 32.0, cin).sum().backward()
    assert cin.grad is not None and cin.grad.item() > 0


def test_zero_bit_group_has_no_gradient() -> None:
    cout = torch.tensor([[3.0, 29.0]], requires_grad=True)
    _cost(E1, [0.0, 8.0], cout, 16.0).sum().backward()
    assert cout.grad[0, 0].item() == 0.0 and cout.grad[0, 1].item() > 0


# ----------------------------------------------------------------------- constants


def test_shipped_yaml_equals_defaults() -> None:
    assert DEFAULT_CONSTANTS_PATH.is_file()
    assert load_ne16_constants(DEFAULT_CONSTANTS_PATH) == NE16Constants()
    assert load_ne16_constants() == NE16Constants()
    keys = set(yaml.safe_load(DEFAULT_CONSTANTS_PATH.read_text()))
    assert keys == {f.name for f in dataclasses.fields(NE16Constants)}


def test_variant_changes_the_model(tmp_path: Path) -> None:
    variant = tmp_path / "ne16-fast.yaml"
    variant.write_text("stream_out: 0\nload_3x3: 30\n")
    constants = load_ne16_constants(variant)
    assert constants == NE16Constants(stream_out=0, load_3x3=30)
    # E1 at 8 bits: 121 * (355 - 13 - 1)
    assert ne16_layer_cycles(E1, {8: 32}, 16, constants) == 121 * 341


def test_unknown_key_is_a_user_error(tmp_path: Path) -> None:
    variant = tmp_path / "ne16.yaml"
    variant.write_text("k_body: 32\nstream_uot: 13\n")
    with pytest.raises(UserError, match="stream_uot") as info:
        load_ne16_constants(variant)
    assert str(variant) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("k_body: 0\n", "k_body"),
        ("load_1x1: 1.5\n", "load_1x1"),
        ("matvec_base: yes\n", "matvec"),
        ("- 1\n- 2\n", "mapping"),
        ("k_body: [\n", "cannot read"),
    ],
)
def test_malformed_file_is_a_user_error(tmp_path: Path, text: str, needle: str) -> None:
    variant = tmp_path / "bad.yaml"
    variant.write_text(text)
    with pytest.raises(UserError, match=needle) as info:
        load_ne16_constants(variant)
    assert "bad.yaml" in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere.yaml"):
        load_ne16_constants(tmp_path / "nowhere.yaml")
