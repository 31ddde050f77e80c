"""MPIC, GAP8, DIANA and YAML-target formulas: values by hand, exactness, gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mpsctl.cost.base import LayerGeometry
from mpsctl.errors import UserError
from mpsctl.targets.common import macs, smooth_max
from mpsctl.targets.constants import MacsPerCycle
from mpsctl.targets.custom import (
    CustomConstants,
    custom_energy,
    custom_group_cycles,
    custom_layer_cycles,
    load_custom_constants,
)
from mpsctl.targets.diana import (
    DianaConstants,
    diana_analog_cycles,
    diana_digital_cycles,
    diana_layer_cycles,
    diana_unroll,
    load_diana_constants,
)
from mpsctl.targets.gap8 import GAP8Constants, gap8_cycles, load_gap8_constants
from mpsctl.targets.mpic import (
    MPICConstants,
    load_mpic_constants,
    mpic_cycles,
    mpic_energy,
    mpic_layer_cycles,
)

CONV = LayerGeometry("conv", cin=16, cout=32, kernel=(3, 3), out_hw=(14, 14))
ODD = LayerGeometry("conv", cin=3, cout=5, kernel=(3, 3), out_hw=(7, 9))
DW = LayerGeometry("depthwise", cin=20, cout=20, kernel=(3, 3), out_hw=(6, 6), groups=20)
PW = LayerGeometry("conv", cin=32, cout=64, kernel=(1, 1), out_hw=(7, 7), bias=False)
GROUPED = LayerGeometry("conv", cin=16, cout=32, kernel=(3, 3), out_hw=(14, 14), groups=2)
FC = LayerGeometry("linear", cin=64, cout=10)
MPIC = MPICConstants()
GAP8 = GAP8Constants()
DIANA = DianaConstants()


# ------------------------------------------------------------------------------ MACs


@pytest.mark.parametrize(("geom", "cin", "cout", "expected"), [
    (CONV, 16, 32, 196 * 32 * (9 * 16 + 1)),   # 909,440: one bias MAC per output element
    (DW, 20, 20, 36 * 20 * (9 + 1)),           # depthwise: its channels are cout
    (PW, 32, 64, 49 * 64 * 32),                # no bias, no bias MAC
    (FC, 64, 10, 10 * 65),
    (GROUPED, 16, 32, 196 * 32 * (9 * 8 + 1)),
    (CONV, 13, 29, 196 * 29 * (9 * 13 + 1)),   # kept (pruned) channel counts
])
def test_macs(geom: LayerGeometry, cin: int, cout: int, expected: int) -> None:
    assert macs(geom, cin, cout) == expected


# ------------------------------------------------------------------------------ MPIC


@pytest.mark.parametrize(("act", "weight", "rate"), [(8, 8, 2.1), (8, 2, 2.5), (2, 2, 6.5),
                                                     (4, 8, 2.1), (2, 4, 4.0)])
def test_mpic_is_macs_over_the_table(act: int, weight: int, rate: float) -> None:
    assert mpic_cycles(CONV, act, weight, 16, 32, MPIC) == pytest.approx(909_440 / rate)


def test_mpic_worked_numbers() -> None:
    assert mpic_cycles(DW, 8, 4, 20, 20, MPIC) == pytest.approx(7200 / 2.3)
    assert mpic_cycles(FC, 8, 8, 64, 10, MPIC) == pytest.approx(650 / 2.1)
    # per-channel groups: 20 channels at 8 bits, 10 at 2, 2 pruned
    total = mpic_layer_cycles(CONV, {8: 20, 2: 10, 0: 2}, 16, 8, MPIC)
    assert total == pytest.approx(196 * 20 * 145 / 2.1 + 196 * 10 * 145 / 2.5)
    assert mpic_layer_cycles(CONV, {0: 32}, 16, 8, MPIC) == 0


def test_mpic_energy_is_cycles_at_250mhz_and_mean_power() -> None:
    cycles = mpic_cycles(CONV, 8, 8, 16, 32, MPIC)
    joules = mpic_energy(cycles, MPIC)
    assert joules == pytest.approx(cycles / 250e6 * (5.30 + 5.39 + 5.46 + 5.38) / 4 * 1e-3)
    assert joules == pytest.approx(9.3239e-6, rel=1e-4)


def test_mpic_refuses_pairs_outside_the_table() -> None:
    with pytest.raises(ValueError, match="3-bit weights"):
        mpic_cycles(CONV, 8, 3, 16, 32, MPIC)
    with pytest.raises(ValueError, match="16-bit activations"):
        mpic_cycles(CONV, 16, 8, 16, 32, MPIC)
    p_w = torch.tensor([[0.0, 3.0, 8.0]])
    out = mpic_cycles(CONV, torch.tensor([[8.0]]), p_w, torch.tensor(16.0),
                      torch.tensor([[4.0, 4.0, 4.0]]), MPIC)
    assert out[0, 0] == 0 and torch.isnan(out[0, 1]) and out[0, 2] > 0


def test_mpic_tensor_path_matches_exact_values_and_broadcasts() -> None:
    p_in = torch.tensor([[2.0], [4.0], [8.0]])
    p_w = torch.tensor([[2.0, 4.0, 8.0]])
    cout = torch.tensor([[5.0, 7.0, 20.0]])
    out = mpic_cycles(CONV, p_in, p_w, torch.tensor(16.0), cout, MPIC)
    assert out.shape == (3, 3)
    for i, a in enumerate((2, 4, 8)):
        for j, (w, n) in enumerate(((2, 5), (4, 7), (8, 20))):
            assert out[i, j].item() == pytest.approx(mpic_cycles(CONV, a, w, 16, n, MPIC),
                                                     rel=1e-6)


def test_mpic_is_monotone_in_bits_and_channels() -> None:
    for act in (2, 4, 8):
        rates = [mpic_cycles(CONV, act, w, 16, 32, MPIC) for w in (2, 4, 8)]
        assert rates == sorted(rates)
    assert mpic_cycles(CONV, 8, 8, 16, 31, MPIC) < mpic_cycles(CONV, 8, 8, 16, 32, MPIC)
    assert mpic_cycles(CONV, 8, 8, 15, 32, MPIC) < mpic_cycles(CONV, 8, 8, 16, 32, MPIC)


# ------------------------------------------------------------------------------ GAP8


@pytest.mark.parametrize(("geom", "cin", "cout", "expected"), [
    # ceil(14/2)*ceil(14/8) = 14 tiles; im2col 9*16*2 = 288; matmul 8*(5 + 36*14 + 10)
    (CONV, 16, 32, 14 * (288 + 8 * 519)),
    # 4*2 tiles; im2col 54; matmul ceil(5/4)=2 * (5 + ceil(27/4)=7 * 14 + 10)
    (ODD, 3, 5, 8 * (54 + 2 * 113)),
    (CONV, 16, 29, 62160),                    # 29 channels still take 8 groups of 4
    (CONV, 16, 28, 14 * (288 + 7 * 519)),     # 28 take 7
    (CONV, 16, 0, 0),                         # nothing kept: the layer does not run
    (DW, 20, 20, 4 * 5 * 36 * 9),
    (FC, 64, 10, 32 * 3),
    (FC, 65, 9, 33 * 3),
    # two convs of 8 -> 16 channels: 14 * (9*8*2 + 4*(5 + 18*14 + 10))
    (GROUPED, 16, 32, 2 * 14 * (144 + 4 * 267)),
])
def test_gap8_by_hand(geom: LayerGeometry, cin: int, cout: int, expected: int) -> None:
    assert gap8_cycles(geom, cin, cout, GAP8) == expected


def test_gap8_straight_through_matches_and_has_gradients() -> None:
    cin = torch.tensor(16.0, requires_grad=True)
    cout = torch.tensor(29.0, requires_grad=True)
    out = gap8_cycles(CONV, cin, cout, GAP8)
    assert out.item() == 62160
    out.backward()
    assert cin.grad.item() > 0 and cout.grad.item() > 0


def test_gap8_is_monotone_in_channels() -> None:
    values = [gap8_cycles(CONV, 16, n, GAP8) for n in range(33)]
    assert values == sorted(values)
    values = [gap8_cycles(CONV, n, 32, GAP8) for n in range(1, 17)]
    assert values == sorted(values)


# ------------------------------------------------------------------------------ DIANA

ANALOG_OP = 70 / (1e9 / 260e6)  # 18.2 cycles


def test_diana_analog_op_cycles() -> None:
    assert DIANA.analog_op_cycles == pytest.approx(18.2)


@pytest.mark.parametrize(("geom", "cin", "cout", "expected"), [
    # ceil(32/16)*16*ceil(14/16)*14*9 + 196*(32+16)/8
    (CONV, 16, 32, 2 * 16 * 1 * 14 * 9 + 1176),
    (CONV, 16, 20, 2 * 16 * 14 * 9 + 196 * 36 / 8),
    (CONV, 16, 16, 16 * 14 * 9 + 196 * 32 / 8),
    (CONV, 16, 4, 16 * 14 * 9 + 196 * 20 / 8),
    (CONV, 16, 0, 0),                          # no channel: no load/store either
    (DW, 20, 20, 20 * 1 * 6 * 9 + 36 * 40 / 8),
    (GROUPED, 16, 32, 1 * 16 * 14 * 9 + 1176),
    (FC, 64, 10, 64 + 74 / 8),
])
def test_diana_digital_by_hand(geom: LayerGeometry, cin: int, cout: int,
                               expected: float) -> None:
    assert diana_digital_cycles(geom, cin, cout, DIANA) == pytest.approx(expected)


@pytest.mark.parametrize(("geom", "cin", "cout", "unroll"), [
    (CONV, 16, 32, 4),     # (u+2)*64*3 <= 1152 -> u <= 4
    (CONV, 16, 200, 2),    # u*200 <= 512
    (CONV, 512, 32, 1),    # (1+2)*512*3 > 1152: none fits, u = 1
    (CONV, 16, 600, 1),
    (FC, 64, 10, 8),
    (PW, 32, 64, 8),       # 8*64 <= 512 and 8*64*1 <= 1152
    (PW, 200, 64, 4),      # 8*200 > 1152, 4*200 <= 1152
])
def test_diana_unroll(geom: LayerGeometry, cin: int, cout: int, unroll: int) -> None:
    assert diana_unroll(geom, cin, cout, DIANA) == unroll
    as_tensor = diana_unroll(geom, torch.tensor(float(cin)), torch.tensor(float(cout)), DIANA)
    assert as_tensor.item() == unroll


@pytest.mark.parametrize(("geom", "cin", "cout", "expected"), [
    (CONV, 16, 32, 8 * 16 * 9 + 1 * 1 * 196 / 4 * ANALOG_OP),    # 1152 + 891.8
    (CONV, 16, 12, 8 * 16 * 9 + 196 / 4 * ANALOG_OP),
    (CONV, 200, 600, 8 * 200 * 9 + 2 * 2 * 196 / 1 * ANALOG_OP),
    (FC, 64, 10, 8 * 64 + 1 / 8 * ANALOG_OP),
    (CONV, 16, 0, 0),
])
def test_diana_analog_by_hand(geom: LayerGeometry, cin: int, cout: int,
                              expected: float) -> None:
    assert diana_analog_cycles(geom, cin, cout, DIANA) == pytest.approx(expected)


def test_diana_worked_numbers() -> None:
    # 16 -> 32 3x3 on 14x14: analog 1152 + 49 * 18.2; digital 4032 + 1176
    assert diana_analog_cycles(CONV, 16, 32, DIANA) == pytest.approx(2043.8)
    assert diana_digital_cycles(CONV, 16, 32, DIANA) == 5208


def test_diana_analog_refuses_depthwise_and_groups() -> None:
    with pytest.raises(ValueError, match="depthwise"):
        diana_analog_cycles(DW, 20, 20, DIANA)
    with pytest.raises(ValueError, match="2 groups"):
        diana_analog_cycles(GROUPED, 16, 32, DIANA)


@pytest.mark.parametrize(("counts", "expected"), [
    ({8: 32}, 5208.0),
    ({2: 32}, 2043.8),
    ({8: 20, 2: 12}, 4914.0),      # digital is the slower side
    ({8: 16, 2: 16}, 2800.0),
    ({8: 4, 2: 28}, 2506.0),
    ({8: 1, 2: 31}, 2016 + 196 * 17 / 8),
    ({0: 32}, 0.0),
    ({0: 4, 8: 0, 2: 28}, 2043.8),  # analog only: u = 4 as 28*4 <= 512
])
def test_diana_layer_is_the_max_of_its_sides(counts: dict[int, int], expected: float) -> None:
    assert diana_layer_cycles(CONV, counts, 16, DIANA) == pytest.approx(expected)


def test_diana_refuses_other_weight_bits() -> None:
    with pytest.raises(ValueError, match="not 4"):
        diana_layer_cycles(CONV, {4: 32}, 16, DIANA)


def test_diana_gradients_reach_channel_counts() -> None:
    cout = torch.tensor(20.0, requires_grad=True)
    cin = torch.tensor(16.0, requires_grad=True)
    digital = diana_digital_cycles(CONV, cin, cout, DIANA)
    analog = diana_analog_cycles(CONV, cin, cout, DIANA)
    (digital + analog).backward()
    assert cout.grad.item() > 0 and cin.grad.item() > 0


def test_smooth_max_bounds_and_gradients() -> None:
    x = torch.tensor([100.0, 40.0], requires_grad=True)
    soft = smooth_max(x, 0.05)
    assert 100.0 <= soft.item() <= 100.0 + 0.05 * 100 * torch.log(torch.tensor(2.0)).item()
    soft.backward()
    assert x.grad[0] > 0.99 and x.grad[1] < 0.01
    close = torch.tensor([100.0, 99.0], requires_grad=True)
    smooth_max(close, 0.05).backward()
    assert close.grad[1] > 0.3  # near a tie both sides feel the gradient
    assert smooth_max(torch.tensor([3.0, 7.0]), 0.0).item() == 7.0


# ------------------------------------------------------------------------------ YAML target

TABLE = MacsPerCycle.from_mapping({8: {8: 2.0, 2: 4.0}}, "test")
ROUNDED = CustomConstants(TABLE, overhead_per_layer=100, cout_multiple=8, cin_multiple=4)


def test_custom_rounds_channels_and_adds_the_overhead_once() -> None:
    # 8-bit: 20 -> 24 channels, 2-bit: 10 -> 16; cin 16 stays 16
    expected = 100 + 196 * 24 * 145 / 2.0 + 196 * 16 * 145 / 4.0
    assert custom_layer_cycles(CONV, {8: 20, 2: 10, 0: 2}, 16, 8, ROUNDED) == expected
    # 15 kept inputs read as 16
    assert custom_layer_cycles(CONV, {8: 20, 2: 10}, 15, 8, ROUNDED) == expected
    assert custom_layer_cycles(CONV, {0: 32}, 16, 8, ROUNDED) == 0
    # promoting 2 channels fills the 8-bit chunk for free and halves the 2-bit one
    assert custom_layer_cycles(CONV, {8: 22, 2: 8}, 16, 8, ROUNDED) < expected


def test_custom_tensor_path_matches_exact_values() -> None:
    p_w = torch.tensor([[0.0, 2.0, 8.0]])
    cout = torch.tensor([[2.0, 10.0, 20.0]], requires_grad=True)
    out = custom_group_cycles(CONV, torch.tensor([[8.0]]), p_w, torch.tensor(15.0), cout,
                              ROUNDED)
    assert out.tolist() == [[0.0, 196 * 16 * 145 / 4.0, 196 * 24 * 145 / 2.0]]
    out[:, 1:].sum().backward()
    assert (cout.grad[0, 1:] > 0).all()


def test_custom_energy() -> None:
    with_energy = CustomConstants(TABLE, energy_per_cycle=2e-11)
    assert custom_energy(1000, with_energy) == pytest.approx(2e-8)
    with pytest.raises(ValueError, match="energy_per_cycle"):
        custom_energy(1000, ROUNDED)


# ------------------------------------------------------------------------------ files


def test_shipped_files_hold_the_built_in_constants() -> None:
    assert load_mpic_constants() == MPICConstants()
    assert load_gap8_constants() == GAP8Constants()
    assert load_diana_constants() == DianaConstants()
    template = load_custom_constants(Path("configs/targets/template.yaml"))
    assert template.macs_per_cycle.rate(8, 8) == 2.0 and not template.rounds


def test_a_copy_may_change_some_constants(tmp_path: Path) -> None:
    path = tmp_path / "fast.yaml"
    path.write_text("frequency_hz: 500.0e+6\nmacs_per_cycle: {8: {8: 4.2}}\n")
    fast = load_mpic_constants(path)
    assert fast.frequency_hz == 5e8 and fast.power_w == MPIC.power_w
    assert fast.macs_per_cycle.rate(8, 8) == 4.2 and fast.macs_per_cycle.rate(8, 2) is None


@pytest.mark.parametrize(("text", "message"), [
    ("cout_tile: 0\n", "'cout_tile' must be an integer >= 1"),
    ("cout_tiel: 4\n", "unknown GAP8 constant"),
    ("- 1\n", "expected a mapping"),
])
def test_bad_gap8_files_are_user_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gap8.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_gap8_constants(path)


@pytest.mark.parametrize(("text", "message"), [
    ("overhead_per_layer: 3\n", "needs 'macs_per_cycle'"),
    ("macs_per_cycle: {8: {3: 0}}\n", "MACs per cycle must be a positive number"),
    ("macs_per_cycle: {eight: {8: 1}}\n", "activation bits 'eight'"),
    ("macs_per_cycle: {8: {8: 1}}\ncout_multiple: 2.5\n", "'cout_multiple' must be an integer"),
    ("macs_per_cycle: {8: {8: 1}}\nenergy_per_cycle: -1\n", "'energy_per_cycle' must be a pos"),
])
def test_bad_custom_files_are_user_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mcu.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_custom_constants(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_diana_constants(tmp_path / "nope.yaml")


@pytest.mark.parametrize("geom", [CONV, PW, FC])
def test_diana_sides_and_yaml_targets_are_monotone_in_channels(geom: LayerGeometry) -> None:
    for cycles in (
        lambda n: diana_digital_cycles(geom, geom.cin, n, DIANA),
        lambda n: diana_analog_cycles(geom, geom.cin, n, DIANA),
        lambda n: custom_layer_cycles(geom, {8: n}, geom.cin, 8, ROUNDED),
        lambda n: custom_layer_cycles(geom, {2: n}, geom.cin, 8, ROUNDED),
    ):
        values = [cycles(n) for n in range(0, 70)]
        assert values == sorted(values)
    digital = [diana_digital_cycles(geom, n, 16, DIANA) for n in range(1, 70)]
    assert digital == sorted(digital)
