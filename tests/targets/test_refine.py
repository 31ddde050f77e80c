"""Refinement (docs/algorithm.md#refine-for-ne16): the worked example, its guarantees and
optimality by brute force."""

from __future__ import annotations

import itertools
import random
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsctl.cost.base import LayerGeometry
from mpsctl.targets.ne16 import NE16Constants, ne16_layer_cycles
from mpsctl.targets.refine import (
    ENUMERATION_LIMIT,
    Additive,
    channel_counts,
    heuristic_counts,
    optimal_counts,
    promote,
    refine_channel_assignment,
)

E1 = LayerGeometry("conv", cin=16, cout=32, kernel=(3, 3), out_hw=(32, 32))
GEOMS = [
    E1,
    LayerGeometry("conv", cin=24, cout=48, kernel=(1, 1), out_hw=(8, 8)),
    LayerGeometry("depthwise", cin=40, cout=40, kernel=(3, 3), out_hw=(7, 7), groups=40),
    LayerGeometry("linear", cin=64, cout=40),
]


def _latency(geom: LayerGeometry, constants: NE16Constants | None = None):
    return lambda counts: ne16_layer_cycles(geom, counts, geom.cin, constants)


def _additive(geom: LayerGeometry, constants: NE16Constants | None = None) -> Additive:
    return Additive(lambda b, n: ne16_layer_cycles(geom, {b: n}, geom.cin, constants))


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


def test_gaining_precisions_fill_from_the_lowest_up_by_their_logit() -> None:
    # 2-bit gives two channels; 4-bit gains one, then 8-bit one. 4-bit picks first (channel 1
    # has the higher 4-bit logit), 8-bit takes what 2-bit still gives; 4-bit's own channel
    # stays put (a precision never both gives and gains).
    def latency(counts: dict[int, int]) -> int:
        return 0 if counts == {2: 0, 4: 2, 8: 2} else 10

    assign = torch.tensor([0, 0, 1, 2])
    logits = torch.tensor([[0.0] * 4, [0.0, 3.0, 9.0, 0.0], [7.0, 0.0, -1.0, 0.0]])
    refined = refine_channel_assignment(assign, [2, 4, 8], logits, latency)
    assert refined.tolist() == [2, 1, 1, 2]


def test_promote_refuses_unreachable_targets() -> None:
    assign = torch.tensor([0, 1, 2, 2])
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="not reachable"):
        promote(assign, [2, 4, 8], logits, {2: 2, 4: 0, 8: 2})  # would lower a channel
    with pytest.raises(ValueError, match="pruned"):
        promote(assign, [0, 4, 8], logits, {0: 0, 4: 2, 8: 2})


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
    refined = refine_channel_assignment(assign, bits, logits, _additive(geom))
    assert _cycles(geom, refined, bits) <= _cycles(geom, assign, bits)
    before = torch.tensor(bits)[assign]
    after = torch.tensor(bits)[refined]
    assert bool((after >= before).all())
    assert torch.equal(before == 0, after == 0)  # pruned stay pruned, none newly pruned
    again = refine_channel_assignment(refined, bits, logits, _additive(geom))
    assert torch.equal(again, refined)


@settings(max_examples=40, deadline=None)
@given(layer_cases())
def test_descending_bit_order_gives_the_same_result(case) -> None:
    geom, bits, assign, logits = case
    ascending = refine_channel_assignment(assign, bits, logits, _additive(geom))
    n = len(bits)
    descending = refine_channel_assignment(
        n - 1 - assign, bits[::-1], logits.flip(0), _additive(geom)
    )
    assert torch.equal(torch.tensor(bits)[ascending], torch.tensor(bits[::-1])[descending])


def test_does_not_modify_its_input() -> None:
    assign = _e1_assignment()
    copy = assign.clone()
    refine_channel_assignment(assign, [2, 4, 8], torch.zeros(3, 32), _latency(E1))
    assert torch.equal(assign, copy)


# ----------------------------------------------------------------------- optimality

#: Engine constants with tiny tiles, so that tile effects show with few enough channels to
#: enumerate every per-channel assignment.
TINY_TILES = NE16Constants(k_body=4, k_body_depthwise=2, ki_tile=4, spatial_tile=2)
SMALL_GEOMS = [
    LayerGeometry("conv", cin=5, cout=7, kernel=(3, 3), out_hw=(3, 3)),
    LayerGeometry("conv", cin=9, cout=7, kernel=(1, 1), out_hw=(2, 2)),
    LayerGeometry("depthwise", cin=7, cout=7, kernel=(3, 3), out_hw=(4, 4), groups=7),
    LayerGeometry("linear", cin=6, cout=7),
]
#: Every order of a precision list is accepted; pruned channels appear in some.
ORDERS = [(2, 4, 8), (8, 2, 4), (0, 2, 4, 8), (8, 4, 0, 2), (4, 3, 2)]


def _per_channel_optimum(geom, bits, assign, constants) -> int:
    """Cheapest latency over every per-channel assignment that never lowers a channel."""
    options = []
    for index in assign.tolist():
        b = bits[index]
        options.append([b] if b == 0 else [p for p in bits if p >= b])
    best = None
    for choice in itertools.product(*options):
        counts = {b: 0 for b in bits}
        for b in choice:
            counts[b] += 1
        value = ne16_layer_cycles(geom, counts, geom.cin, constants)
        best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("geom", SMALL_GEOMS, ids=lambda g: g.kind + str(g.kernel))
@pytest.mark.parametrize("bits", ORDERS, ids=str)
def test_refine_equals_per_channel_brute_force(geom, bits) -> None:
    rng = random.Random(f"{geom}{bits}")
    for _ in range(6):
        cout = rng.randint(1, 7)
        g = LayerGeometry(geom.kind, geom.cin if geom.kind != "depthwise" else cout, cout,
                          geom.kernel, geom.out_hw, cout if geom.kind == "depthwise" else 1)
        assign = torch.tensor([rng.randrange(len(bits)) for _ in range(cout)])
        logits = torch.randn(len(bits), cout, generator=torch.Generator().manual_seed(cout))
        optimum = _per_channel_optimum(g, list(bits), assign, TINY_TILES)
        for latency in (_additive(g, TINY_TILES), _latency(g, TINY_TILES)):
            refined = refine_channel_assignment(assign, bits, logits, latency)
            assert ne16_layer_cycles(g, channel_counts(refined, bits), g.cin, TINY_TILES) == optimum


def _reachable_by_moves(counts: tuple[int, int, int]) -> set[tuple[int, int, int]]:
    """Final counts of every move matrix x[i][j] (i <= j) of three precisions."""
    n0, n1, n2 = counts
    out = set()
    for x01 in range(n0 + 1):
        for x02 in range(n0 - x01 + 1):
            for x12 in range(n1 + 1):
                out.add((n0 - x01 - x02, x01 + n1 - x12, x02 + x12 + n2))
    return out


@pytest.mark.parametrize("geom", [
    LayerGeometry("depthwise", cin=40, cout=40, kernel=(3, 3), out_hw=(8, 8), groups=40),
    LayerGeometry("conv", cin=24, cout=40, kernel=(3, 3), out_hw=(5, 5)),
    LayerGeometry("conv", cin=40, cout=40, kernel=(1, 1), out_hw=(4, 4)),
    LayerGeometry("linear", cin=70, cout=40),
], ids=lambda g: g.kind + str(g.kernel))
def test_optimal_counts_equal_move_matrix_brute_force(geom) -> None:
    """Real NE16 constants, up to 40 channels: the optimum over every move matrix."""
    rng = random.Random(str(geom))
    bits = (2, 4, 8)
    for _ in range(12):
        cout = rng.randint(1, 40)
        cuts = sorted(rng.randint(0, cout) for _ in range(2))
        start = (cuts[0], cuts[1] - cuts[0], cout - cuts[1])
        latency = _latency(geom)
        best = min(latency(dict(zip(bits, m, strict=True))) for m in _reachable_by_moves(start))
        found = optimal_counts(dict(zip(bits, start, strict=True)), _additive(geom))
        assert latency(found) == best
        assert tuple(found[b] for b in bits) in _reachable_by_moves(start)


def test_audit_example_the_heuristic_missed() -> None:
    """Depthwise Cout 19 at (17, 1, 1): the two-pass heuristic stops at (0, 16, 3)."""
    geom = LayerGeometry("depthwise", cin=19, cout=19, kernel=(3, 3), out_hw=(8, 8), groups=19)
    start = {2: 17, 4: 1, 8: 1}
    old = heuristic_counts(start, _additive(geom))
    assert old == {2: 0, 4: 16, 8: 3} and _latency(geom)(old) == 2340
    new = optimal_counts(start, _additive(geom))
    assert new == {2: 16, 4: 0, 8: 3} and _latency(geom)(new) == 2052


def test_ties_keep_the_fewest_weight_bits() -> None:
    # Everything but the original costs 1; (1, 0, 2) and (0, 2, 1) cost 0: the smaller wins.
    def latency(counts: dict[int, int]) -> int:
        return 0 if counts in ({2: 1, 4: 0, 8: 2}, {2: 0, 4: 2, 8: 1}) else 1

    start = {2: 2, 4: 1, 8: 0}
    assert optimal_counts(start, latency) == {2: 0, 4: 2, 8: 1}  # 16 bits < 18 bits
    assert optimal_counts(start, Additive(lambda b, n: 0)) == start  # nothing cheaper


def test_non_additive_latency_is_enumerated() -> None:
    # The max of two engines running concurrently (2-bit on one, 8-bit on the other).
    def latency(counts: dict[int, int]) -> int:
        return max(3 * counts[2] + (5 if counts[2] else 0), 7 * counts[8])

    start = {0: 4, 2: 30, 8: 2}
    found = optimal_counts(start, latency)
    best = min(latency({0: 4, 2: 32 - m, 8: m}) for m in range(2, 33))
    assert latency(found) == best and found[0] == 4


def test_too_many_counts_for_a_non_additive_latency_is_refused() -> None:
    start = {b: 0 for b in (3, 4, 5, 6, 7)} | {2: 200}
    with pytest.raises(ValueError, match="Additive"):
        optimal_counts(start, lambda counts: 0)
    assert ENUMERATION_LIMIT < 200**4 // 24


def test_512_channels_and_4_precisions_refine_in_well_under_a_second() -> None:
    geom = LayerGeometry("conv", cin=256, cout=512, kernel=(3, 3), out_hw=(16, 16))
    bits = [2, 3, 4, 8]
    assign = torch.zeros(512, dtype=torch.long)  # all at the lowest: the largest search
    start = time.process_time()
    refined = refine_channel_assignment(assign, bits, torch.randn(4, 512), _additive(geom))
    assert time.process_time() - start < 1.0
    assert _cycles(geom, refined, bits) <= _cycles(geom, assign, bits)


def test_refine_keeps_the_search_budget() -> None:
    """Promotions add weight bits: under a params_bit budget the refined model stays within
    it, the choices whose refinement would break it are kept as searched, and without the
    budget the same refine goes over it."""
    from mpsctl.models.resnet8 import ResNet8
    from mpsctl.search.convert import build_supernet
    from mpsctl.search.space import SearchSpace
    from mpsctl.targets.refine import refine_supernet

    def net():
        torch.manual_seed(0)
        n = build_supernet(ResNet8(), torch.rand(2, 3, 32, 32),
                           SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,), per_channel=True))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _, choice in n.choices():
                if choice.alpha is not None:
                    choice.alpha.copy_(torch.randn(choice.alpha.shape, generator=g) * 1.5)
        return n.eval()

    free, held = net(), net()
    bound = float(free.cost("params_bit", hard=True)) * 1.01
    refined, _, _ = refine_supernet(free, free.cost_model("ne16"))
    assert float(free.cost("params_bit", hard=True)) > bound  # unbounded refine goes over
    kept_refined, skipped, _ = refine_supernet(held, held.cost_model("ne16"),
                                               {"params_bit": bound})
    assert float(held.cost("params_bit", hard=True)) <= bound
    per_channel = {n for n, c in held.choices() if c.per_channel}
    assert 0 < len(kept_refined) < len(refined)
    assert set(skipped) & per_channel  # held back by the budget
    assert float(held.cost("ne16", hard=True)) < float(net().cost("ne16", hard=True))
