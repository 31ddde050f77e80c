"""NE16 (GAP9 neural engine): latency model, its constants, and which layers it runs.

One closed form serves two masters: the search needs it differentiable in the (fractional)
channel counts, so the integer helpers are straight-through (:mod:`mpsctl.cost.rounding`);
``refine`` and the reports need it exact, so integer inputs go through plain integer
arithmetic. The engine's constants live in ``configs/targets/ne16.yaml``; the same values are
the dataclass defaults so that an installed package without that file still works. A
:class:`NE16CostModel` carries its constants: a recipe's ``search.ne16_target`` builds one
from that file, and nothing is shared between instances. The formulas:
docs/algorithm.md#ne16-latency.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpsctl.cost.base import CostModel, LayerGeometry, LayerKind
from mpsctl.cost.rounding import Quantity, cdiv, fdiv, if_nonzero, mod
from mpsctl.errors import UserError
from mpsctl.resources import bundled_dir
from mpsctl.targets.constants import read_constants_file

KINDS = tuple(kind.value for kind in LayerKind)

DEFAULT_CONSTANTS_PATH = bundled_dir("configs") / "targets" / "ne16.yaml"


@dataclass(frozen=True)
class NE16Constants:
    """Cycle counts and tile sizes of the engine; see ``configs/targets/ne16.yaml``."""

    k_body: int = 32
    k_body_depthwise: int = 16
    ki_tile: int = 16
    spatial_tile: int = 3
    load_1x1: int = 19
    load_3x3: int = 31
    weight_offset_base: int = 6
    weight_offset_per_channel_depthwise: int = 1
    matvec_base: int = 6
    index_update: int = 2
    norm_quant_base: int = 9
    norm_quant_mult: int = 4
    norm_quant_div: int = 4
    stream_out: int = 13


#: Constants that divide something: zero would make the model meaningless.
_POSITIVE = frozenset({"k_body", "k_body_depthwise", "ki_tile", "spatial_tile", "norm_quant_div"})


def load_ne16_constants(path: str | Path | None = None) -> NE16Constants:
    """Read engine constants from ``path`` (default: the shipped YAML, else built-in defaults).

    Keys left out keep their defaults; unknown keys and non-integer values are a UserError,
    so a typo in a user's engine variant cannot silently fall back to the default.
    """
    if path is None:
        if not DEFAULT_CONSTANTS_PATH.is_file():
            return NE16Constants()
        return _read_constants(DEFAULT_CONSTANTS_PATH)
    return _read_constants(Path(path))


def _read_constants(path: Path) -> NE16Constants:
    data = read_constants_file(path, "NE16")
    known = {f.name for f in dataclasses.fields(NE16Constants)}
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise UserError(
            f"{path}: unknown NE16 constant(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    for key, value in data.items():
        _check_constant(path, key, value)
    return dataclasses.replace(NE16Constants(), **data)


def _check_constant(path: Path, key: str, value: Any) -> None:
    lowest = 1 if key in _POSITIVE else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        kind = "a positive" if lowest else "a non-negative"
        raise UserError(f"{path}: NE16 constant {key!r} must be {kind} integer, got {value!r}")


@functools.cache
def _shipped_constants() -> NE16Constants:
    return load_ne16_constants(os.environ.get("MPSCTL_NE16_TARGET") or None)


def default_constants() -> NE16Constants:
    """The constants used when none are given: ``MPSCTL_NE16_TARGET``, else
    ``configs/targets/ne16.yaml`` (read once on first use), else the built-in defaults."""
    return _shipped_constants()


# --------------------------------------------------------------------------- the model


def _decompose(kh: int, kw: int) -> tuple[int, int]:
    """How many 3x3 and 1x1 jobs a ``kh x kw`` kernel becomes (docs/algorithm.md#ne16-latency)."""
    rh, rw = kh % 3, kw % 3
    return (kh // 3) * (kw // 3), rh * kw + rw * kh - rh * rw


def _iteration(
    mode: str, k: Quantity, n_in: Quantity, bits: Quantity, c: NE16Constants
) -> Quantity:
    """Cycles of one output-channel tile of ``k`` channels, all input passes included."""
    depthwise = mode == "depthwise"
    load = c.load_1x1 if mode == "1x1" else c.load_3x3
    offset = c.weight_offset_base
    if depthwise:
        offset = offset + c.weight_offset_per_channel_depthwise * k
    matvec = c.matvec_base + (k if mode == "1x1" else k * bits)
    norm_quant = c.norm_quant_base + cdiv(c.norm_quant_mult * k, c.norm_quant_div)
    per_pass = load + offset + matvec + c.index_update
    if not depthwise:
        per_pass = n_in * per_pass
    return per_pass + norm_quant + c.stream_out


def _tiles(mode: str, ko: Quantity, ki: Quantity, bits: Quantity, c: NE16Constants) -> Quantity:
    """Cycles of one spatial tile: the full channel tiles plus the partial one, if any."""
    k_body = c.k_body_depthwise if mode == "depthwise" else c.k_body
    n_body = fdiv(ko, k_body)
    k_rem = mod(ko, k_body)
    n_in = cdiv(ki, c.ki_tile)
    body = n_body * _iteration(mode, k_body, n_in, bits, c)
    return body + if_nonzero(k_rem, _iteration(mode, k_rem, n_in, bits, c))


def _check_numbers(**values: Quantity) -> None:
    for name, value in values.items():
        if not isinstance(value, Tensor) and value < 0:
            raise ValueError(f"NE16 latency: {name} must be >= 0, got {value!r}")


def ne16_job_cycles(
    kind: str,
    kernel: tuple[int, int],
    out_hw: tuple[int, int],
    ko: Quantity,
    ki: Quantity,
    bits: Quantity,
    constants: NE16Constants | None = None,
) -> Quantity:
    """Cycles of one NE16 job computing ``ko`` output channels from ``ki`` at ``bits`` weights.

    Tensors in ``ko``/``ki``/``bits`` give a differentiable tensor (straight-through integer
    helpers); plain integers give an exact integer. Linear layers are 1x1 convs on a 1x1 map,
    whatever ``kernel``/``out_hw`` say. Kernels other than 3x3/1x1 become ``n3`` 3x3 jobs plus
    ``n1`` 1x1 jobs on the same output. NE16's only depthwise mode is 3x3, so a depthwise
    ``kh x kw`` kernel is estimated as ``ceil(kh/3) * ceil(kw/3)`` depthwise 3x3 jobs (the
    kernel zero-padded to 3x3 pieces) and no 1x1 jobs.
    """
    if kind not in KINDS:
        raise ValueError(f"NE16 latency: unknown layer kind {kind!r}; expected one of {KINDS}")
    c = constants if constants is not None else default_constants()
    if kind == LayerKind.LINEAR:
        kernel, out_hw = (1, 1), (1, 1)
    kh, kw = kernel
    ho, wo = out_hw
    if min(kh, kw) < 1 or min(ho, wo) < 0:
        raise ValueError(f"NE16 latency: bad kernel {kernel} or output size {out_hw}")
    _check_numbers(ko=ko, ki=ki, bits=bits)
    depthwise = kind == LayerKind.DEPTHWISE
    n3, n1 = ((kh + 2) // 3 * ((kw + 2) // 3), 0) if depthwise else _decompose(kh, kw)
    n_sp = cdiv(ho, c.spatial_tile) * cdiv(wo, c.spatial_tile)
    total: Quantity = 0
    if n3:
        total = total + n3 * _tiles("depthwise" if depthwise else "3x3", ko, ki, bits, c)
    if n1:
        total = total + n1 * _tiles("depthwise" if depthwise else "1x1", ko, ki, bits, c)
    return n_sp * total


def _conv_groups(geom: LayerGeometry) -> int:
    return geom.groups if geom.kind == LayerKind.CONV and geom.groups > 1 else 1


def ne16_layer_cycles(
    geom: LayerGeometry,
    counts: dict[int, int],
    cin: int,
    constants: NE16Constants | None = None,
) -> int:
    """Exact cycles of a layer whose output channels form precision groups ``{bits: count}``.

    Each non-empty, non-zero-bit group is a separate job reading ``cin`` input channels.
    A grouped (non-depthwise) conv is estimated as ``groups`` convs of ``ceil(count/groups)``
    from ``ceil(cin/groups)`` channels (NE16 does not run it as such; see ``ne16_supported``).
    """
    g = _conv_groups(geom)
    total = 0
    for bits, count in counts.items():
        bits, count = int(bits), int(count)
        if count < 0:
            raise ValueError(f"NE16 latency: negative channel count {count} at {bits} bits")
        if bits == 0 or count == 0:
            continue
        ko, ki = (cdiv(count, g), cdiv(int(cin), g)) if g > 1 else (count, int(cin))
        total += g * ne16_job_cycles(geom.kind, geom.kernel, geom.out_hw, ko, ki, bits, constants)
    return int(total)


def ne16_supported(geom: LayerGeometry) -> bool:
    """Whether NE16 runs this layer natively, so its latency is the model's, not an estimate.

    Supported: linear layers, ungrouped convs of any kernel (3x3 and 1x1 directly, others via
    the §4 decomposition into 3x3 and 1x1 jobs) and depthwise 3x3 convs. Not supported:
    grouped convs that are not depthwise, and depthwise convs with another kernel (the engine
    has only a 3x3 depthwise mode; the model still returns a decomposition estimate for them).
    """
    if geom.kind == LayerKind.LINEAR:
        return True
    if geom.kind == LayerKind.DEPTHWISE:
        return tuple(geom.kernel) == (3, 3)
    return geom.kind == LayerKind.CONV and geom.groups == 1


class NE16CostModel(CostModel):
    """NE16 cycles, with the engine constants this instance was built with."""

    name = "ne16"
    act_bits = (8,)
    groups_add_up = True  # one NE16 job per precision group

    def __init__(self, constants: NE16Constants | None = None) -> None:
        self.constants = constants if constants is not None else default_constants()

    def group_costs(
        self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor, cout: Tensor
    ) -> Tensor:
        """NE16 cycles of each weight-precision group (shape broadcastable to ``(n_in, n_w)``).

        ``p_in`` is ignored: the engine's inputs are 8-bit, which the recipe check enforces.
        Each group is its own job with ``Ko = cout`` (possibly fractional); 0-bit groups are
        free. A grouped (non-depthwise) conv counts as ``groups`` convs of ``cin/groups ->
        cout/groups``.
        """
        g = _conv_groups(geom)
        ko = cout / g if g > 1 else cout
        ki = cin / g if g > 1 else cin
        cycles = g * ne16_job_cycles(geom.kind, geom.kernel, geom.out_hw, ko, ki, p_w,
                                     self.constants)
        cycles = torch.as_tensor(cycles, device=p_w.device)
        if not cycles.is_floating_point():
            cycles = cycles.to(p_w.dtype if p_w.is_floating_point() else torch.get_default_dtype())
        return torch.where(p_w == 0, torch.zeros_like(cycles), cycles)

    def exact_layer_cost(
        self, geom: LayerGeometry, counts: dict[int, int], cin: int, act_bits: int = 8
    ) -> int:
        return ne16_layer_cycles(geom, counts, cin, self.constants)

    def supports(self, geom: LayerGeometry) -> bool:
        return ne16_supported(geom)


def build_ne16(constants_path: str | Path | None = None) -> NE16CostModel:
    """The NE16 model with the constants in ``constants_path`` (None: the shipped ones)."""
    if constants_path is None:
        return NE16CostModel()
    return NE16CostModel(load_ne16_constants(constants_path))
