"""What a cost model sees of a layer, and the interface every cost model implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mpsctl.enums import StrEnum

#: A cost function evaluates ``f(p_in, p_w, cin, cout)`` for every pair of candidate input
#: precision ``p_in`` (shape ``(n_in, 1)``) and weight precision ``p_w`` (shape ``(1, n_w)``),
#: with ``cin`` the (possibly fractional) effective input channel count (a scalar, or shape
#: ``(1, n_w)`` where it differs per group: see ``cost.expected``) and ``cout`` the output
#: channels of each weight-precision group (a scalar or shape ``(1, n_w)``).
#: It returns a tensor broadcastable to ``(n_in, n_w)``.
LayerCostFn = Callable[["LayerGeometry", Tensor, Tensor, Tensor, Tensor], Tensor]


class LayerKind(StrEnum):
    """What a cost model needs to know of a layer's structure."""

    CONV = "conv"  #: a convolution; ``groups`` may be > 1
    DEPTHWISE = "depthwise"  #: ``groups == cin == cout``
    LINEAR = "linear"


@dataclass(frozen=True)
class LayerGeometry:
    """Static shape of one convolution or linear layer.

    ``kind`` is a :class:`LayerKind` (a plain string such as ``"conv"`` is converted).
    Conv1d layers use ``kernel = (k, 1)`` and ``out_hw = (length, 1)``; linear layers use
    ``kernel = (1, 1)`` and ``out_hw = (1, 1)``. ``bias`` says whether the layer adds a bias
    (after BatchNorm folding every conv does); MAC-based hardware models count one extra MAC
    per output element for it.
    """

    kind: LayerKind
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", LayerKind(self.kind))

    @property
    def k(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def out_pixels(self) -> int:
        return self.out_hw[0] * self.out_hw[1]


class CostModel:
    """A differentiable cost of a layer under candidate precisions, plus its exact value.

    An instance carries everything it needs (a hardware target's constants, say), so two
    supernets with different targets can live in one process. Subclasses implement
    :meth:`group_costs`; the others have defaults derived from it.
    """

    #: The name recipes use (``search.cost``) and reports show.
    name: str = ""
    #: Activation precisions the target runs (None: any); a recipe that searches other
    #: activation precisions under this cost is refused.
    act_bits: tuple[int, ...] | None = None
    #: Whether :meth:`exact_layer_cost` of a per-channel layer is the sum of what each
    #: precision group costs alone; refine then finds its optimum by dynamic programming
    #: (otherwise by enumerating every reachable set of channel counts).
    groups_add_up: bool = False

    def group_costs(
        self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor, cout: Tensor
    ) -> Tensor:
        """Cost of each (input precision, weight-precision group): see :data:`LayerCostFn`."""
        raise NotImplementedError

    def combine_groups(self, per_group: Tensor) -> Tensor:
        """How the weight-precision groups of one per-channel layer add up (last axis):
        a sum here; a target whose groups run concurrently takes the max instead."""
        return per_group.sum(-1)

    def layer_term(self, geom: LayerGeometry, cin: Tensor, kept_cout: Tensor) -> Tensor | float:
        """A cost the layer pays once whatever its precisions, from its kept input and output
        channels (a per-layer overhead; a latency that ignores bits): 0 here."""
        return 0.0

    def exact_layer_cost(
        self, geom: LayerGeometry, counts: dict[int, int], cin: int, act_bits: int
    ) -> float | int:
        """Exact cost of a layer whose output channels form precision groups
        ``{bits: count}`` reading ``cin`` input channels at ``act_bits`` (refine, reports)."""
        live = [(int(b), int(n)) for b, n in counts.items() if int(b) != 0 and int(n) != 0]
        if not live:
            return 0
        p_w = torch.tensor([[float(b) for b, _ in live]])
        cout = torch.tensor([[float(n) for _, n in live]])
        p_in = torch.tensor([[float(act_bits)]])
        f = self.group_costs(geom, p_in, p_w, torch.tensor(float(cin)), cout)
        groups = float(self.combine_groups(torch.broadcast_to(f, (1, len(live)))).sum())
        kept = torch.tensor(float(sum(n for _, n in live)))
        return groups + float(self.layer_term(geom, torch.tensor(float(cin)), kept))

    def precision_problems(
        self, geom: LayerGeometry, act_bits: int, weight_bits: list[int]
    ) -> list[str]:
        """Why the target cannot run the layer reading ``act_bits`` inputs with these weight
        precisions (empty when it can; 0 bits is pruning). Checked before a search starts
        and before a report lists the cost. Here: the ``act_bits`` rule only."""
        if self.act_bits is None or act_bits in self.act_bits:
            return []
        runs = "/".join(map(str, self.act_bits))
        return [f"{self.name} runs {runs}-bit activations only, not {act_bits}"]

    def supports(self, geom: LayerGeometry) -> bool:
        """Whether the target runs this layer natively (else the cost is an estimate)."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionCostModel(CostModel):
    """A cost model made of one :data:`LayerCostFn` (hardware-agnostic metrics, plugins)."""

    def __init__(self, name: str, fn: LayerCostFn) -> None:
        self.name = name
        self.fn = fn

    def group_costs(
        self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor, cout: Tensor
    ) -> Tensor:
        return self.fn(geom, p_in, p_w, cin, cout)
