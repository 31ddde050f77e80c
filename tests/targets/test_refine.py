"""NE16 refinement (docs/algorithm.md#refine-for-ne16): the worked example and its guarantees."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsctl.cost.base import LayerGeometry
from mpsctl.targets.ne16 import ne16_layer_cycles
from mpsctl.targets.refine import channel_counts, refine_channel_assignment

E1 = LayerGeometry("conv", cin=16, cout=32, kernel=(3, 3), out_hw=(32, 32))
GEOMS = [
    E1,
    LayerGeometry("conv", cin=24, cout=48, kernel=(1, 1), out_hw=(8, 8)),
    LayerGeometry("depthwise", cin=40, cout=40, kernel=(3, 3), out_hw=(7, 7), groups=40),
    LayerGeometry("linear", cin=64, cout=40),
]


def _latency(geom: LayerGeometry):
    return lambda counts: ne16_layer_cycles(geom, counts, cin=geom.cin)


def _e1_assignment() -> torch.Tensor:
    return torch.tensor([0] * 5 + [1] * 7 + [2] * 20)


def test_e1_example_refines_to_all_8_bit() -> None:
    bits = [2, 4, 8]
    assign = _e1_assignment()
    assert ne16_layer_cycles(E1, channel_counts(assign, bits), 16) == 52151
    refined = refine_channel_assignment(assign, bits, torch.randn(3, 32), _latency(E1))
    assert refined.dtype == torch.long
    assert refined.tolist() == [2] * 32
    assert ne16_layer_cycles(E1, channel_counts(refined, bits), 16) == 42955


def test_channel_counts_lists_every_precision() -> None:
    assert channel_counts(torch.tensor([1, 1, 3]), [0, 2, 4, 8]) == {0: 0, 2: 2, 4: 0, 8: 1}


def test_original_kept_when_nothing_is_cheaper() -> None:
    assign = torch.tensor([0] * 32 + [1] * 32)
    refined = refine_channel_assignment(assign, [4, 8], torch.zeros(2, 64), _latency(E1))
    assert torch.equal(refined, assign)


def test_moved_channels_follow_the_destination_logit() -> None:
    def latency(counts: dict[int, int]) -> int:  # exactly one 2 -> 8 promotion pays off
        return 0 if counts[8] == 2 else 10

    assign = torch.tensor([0, 0, 1, 0])
    bits = [2, 8]
    tied = refine_channel_assignment(assign, bits, torch.zeros(2, 4), latency)
    assert tied.tolist() == [1, 0, 1, 0]  # tie: lowest channel index
    logits = torch.tensor([[9.0, 0.0, 0.0, -9.0], [0.0, 1.0, 5.0, 2.0]])
    chosen = refine_channel_assignment(assign, bits, logits, latency)
    assert chosen.tolist() == [0, 0, 1, 1]  # highest 8-bit logit among the 2-bit channels


def test_cascade_moves_use_current_precision() -> None:
    # {2: 0, 4: 2, 8: 2} is reachable only by pass B: both 2-bit channels go to 4-bit, then
    # one 4-bit channel (old or newly promoted: the best 8-bit logit wins) goes on to 8-bit.
    def latency(counts: dict[int, int]) -> int:
        return 0 if counts == {2: 0, 4: 2, 8: 2} else 10

    assign = torch.tensor([0, 0, 1, 2])
    logits = torch.tensor([[0.0] * 4, [0.0] * 4, [7.0, 0.0, -1.0, 0.0]])
    refined = refine_channel_assignment(assign, [2, 4, 8], logits, latency)
    assert refined.tolist() == [2, 1, 1, 2]


def test_input_validation() -> None:
    lat = _latency(E1)
    with pytest.raises(ValueError, match="duplicate"):
        refine_channel_assignment(torch.tensor([0, 1]), [4, 4], torch.zeros(2, 2), lat)
    with pytest.raises(ValueError, match="shape"):
        refine_channel_assignment(torch.tensor([0, 1]), [4, 8], torch.zeros(3, 2), lat)
    with pytest.raises(ValueError, match="indices"):
        refine_channel_assignment(torch.tensor([0, 2]), [4, 8], torch.zeros(2, 2), lat)


# ----------------------------------------------------------------------- guarantees

BIT_SETS = [(0, 2, 4, 8), (2, 4, 8), (0, 4, 8), (0, 2, 3, 4, 5, 6, 7, 8)]


@st.composite
def layer_cases(draw):
    geom = draw(st.sampled_from(GEOMS))
    bits = list(draw(st.sampled_from(BIT_SETS)))
    cout = draw(st.integers(1, 70))
    assign = draw(st.lists(st.integers(0, len(bits) - 1), min_size=cout, max_size=cout))
    if 0 in bits and draw(st.booleans()):  # make sure pruned channels are present
        assign[draw(st.integers(0, cout - 1))] = bits.index(0)
    seed = draw(st.integers(0, 2**16))
    logits = torch.randn(len(bits), cout, generator=torch.Generator().manual_seed(seed))
    return geom, bits, torch.tensor(assign), logits


def _cycles(geom: LayerGeometry, assign: torch.Tensor, bits: list[int]) -> int:
    return ne16_layer_cycles(geom, channel_counts(assign, bits), geom.cin)


@settings(max_examples=80, deadline=None)
@given(layer_cases())
def test_latency_never_increases_and_precision_never_decreases(case) -> None:
    geom, bits, assign, logits = case
    refined = refine_channel_assignment(assign, bits, logits, _latency(geom))
    assert _cycles(geom, refined, bits) <= _cycles(geom, assign, bits)
    before = torch.tensor(bits)[assign]
    after = torch.tensor(bits)[refined]
    assert bool((after >= before).all())
    assert torch.equal(before == 0, after == 0)  # pruned stay pruned, none newly pruned
    again = refine_channel_assignment(refined, bits, logits, _latency(geom))
    assert torch.equal(again, refined)


@settings(max_examples=40, deadline=None)
@given(layer_cases())
def test_descending_bit_order_gives_the_same_result(case) -> None:
    geom, bits, assign, logits = case
    ascending = refine_channel_assignment(assign, bits, logits, _latency(geom))
    n = len(bits)
    descending = refine_channel_assignment(
        n - 1 - assign, bits[::-1], logits.flip(0), _latency(geom)
    )
    assert torch.equal(torch.tensor(bits)[ascending], torch.tensor(bits[::-1])[descending])


def test_does_not_modify_its_input() -> None:
    assign = _e1_assignment()
    copy = assign.clone()
    refine_channel_assignment(assign, [2, 4, 8], torch.zeros(3, 32), _latency(E1))
    assert torch.equal(assign, copy)
