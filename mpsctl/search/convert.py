"""Turn a float model into a searchable supernet with torch.fx (docs/algorithm.md#graph-conversion).

Steps: trace a deep copy; record shapes on an example input; refuse layers that cannot be
searched; fold BatchNorm into the conv/linear before it; replace Conv1d/Conv2d/Linear with
searchable layers; put an activation quantizer after the input, after every layer (but the
ones feeding the output) and after every add and channel concatenation, sharing one quantizer
between add or concatenation partners (and one weight choice between add partners) and
between a depthwise conv and its producer; decide which weight
choices may prune channels and where each layer's input channels come from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, fx, nn

from mpsctl.cost.base import CostModel, LayerGeometry, LayerKind
from mpsctl.errors import ConversionError
from mpsctl.quant.fused import use_compiled
from mpsctl.quant.modules import make_activation_quantizer, make_weight_quantizer
from mpsctl.registry import did_you_mean
from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.graph import (
    NodeKind,
    ShapeRecorder,
    classify,
    flatten_factor,
    is_relu,
    module_path,
    relu_bound,
    shape_of,
)
from mpsctl.search.layers import ActivationSlot, SearchableLayer
from mpsctl.search.space import SearchSpace
from mpsctl.search.supernet import Supernet

SEARCHABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class _UnionFind:
    """Groups of graph nodes, each led by its member that comes first in graph order."""

    def __init__(self, order: dict[fx.Node, int]) -> None:
        self.order = order
        self.parent: dict[fx.Node, fx.Node] = {}

    def find(self, node: fx.Node) -> fx.Node:
        self.parent.setdefault(node, node)
        while self.parent[node] is not node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a: fx.Node, b: fx.Node) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra is rb:
            return
        first, second = (ra, rb) if self.order[ra] < self.order[rb] else (rb, ra)
        self.parent[second] = first

    def groups(self, members: Iterable[fx.Node]) -> dict[fx.Node, list[fx.Node]]:
        out: dict[fx.Node, list[fx.Node]] = {}
        for node in sorted(members, key=self.order.__getitem__):
            out.setdefault(self.find(node), []).append(node)
        return out


class _ModuleTracer(fx.Tracer):
    """An fx tracer that remembers which module it was in when tracing failed."""

    def __init__(self) -> None:
        super().__init__()
        self.path: list[str] = []

    def call_module(self, m, forward, args, kwargs):
        # Pushed on entry and popped only on success: after a failure the innermost module
        # being traced is the last entry.
        self.path.append(self.path_of_module(m))
        out = super().call_module(m, forward, args, kwargs)
        self.path.pop()
        return out


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; failure is one ConversionError naming the module."""
    tracer = _ModuleTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; the user needs the place and the reason
        where = tracer.path[-1] if tracer.path else "<top level>"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"cannot trace the model with torch.fx in module '{where}': {reason} "
            "(remove data-dependent control flow there, or wrap it with torch.fx.wrap)"
        ) from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _fold_batchnorm(layer: nn.Module, bn: nn.Module) -> None:
    """``W' = W·γ/σ``, ``b' = (b − μ)·γ/σ + β`` with the BN's running statistics."""
    with torch.no_grad():
        sigma = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(sigma)
        beta = bn.bias if bn.affine else torch.zeros_like(sigma)
        factor = gamma / sigma
        view = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(factor.reshape(view))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(sigma)
        new_bias = (bias - bn.running_mean) * factor + beta
        layer.bias = nn.Parameter(new_bias.detach().clone())


class _Converter:
    def __init__(self, model: nn.Module, example: Tensor, space: SearchSpace) -> None:
        self.space = space
        #: The quantizer path every quantizer of this supernet takes (fused or eager).
        self.compiled = use_compiled(space.compile)
        self.gm = trace(copy.deepcopy(model).eval())
        try:
            with torch.no_grad():
                ShapeRecorder(self.gm).run(example)
        except Exception as exc:
            raise ConversionError(
                f"the model fails on an input of shape {tuple(example.shape)}: "
                f"{str(exc).strip().splitlines()[0]} (check data shape and model)"
            ) from None
        self.modules = dict(self.gm.named_modules())
        self.layers: set[str] = set()

    # -- checks and folding ---------------------------------------------------------------
    def select_layers(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "__name__", "") in {
                "conv1d", "conv2d", "linear"
            } and any(a.op == "get_attr" for a in node.all_input_nodes):
                raise ConversionError(
                    f"op '{node.target.__name__}' in module '{module_path(node)}' uses its own "
                    "weight tensor and cannot be searched (use nn.Conv2d / nn.Linear modules)"
                )
            if node.op != "call_module":
                continue
            module = self.modules[node.target]
            if self.space.excludes(node.target, module):
                continue
            if isinstance(module, SEARCHABLE):
                self._check_padding(node, module)
                self.layers.add(node.target)
            elif any(True for _ in module.parameters(recurse=False)) and not isinstance(
                module, BATCHNORMS
            ):
                raise ConversionError(
                    f"layer '{node.target}' ({type(module).__name__}) is not supported by the "
                    "search (add it to search.exclude to keep it in float)"
                )
        self._check_exclude_patterns()

    def _check_exclude_patterns(self) -> None:
        """Every ``exclude`` entry must name a module or a layer type of this model."""
        modules = [(str(n.target), self.modules[n.target]) for n in self.gm.graph.nodes
                   if n.op == "call_module"]
        layers = [name for name, m in modules if isinstance(m, SEARCHABLE)]
        for index, pattern in enumerate(self.space.exclude):
            if not any(SearchSpace(exclude=(pattern,)).excludes(n, m) for n, m in modules):
                raise ConversionError(
                    f"search.exclude[{index}]: {pattern!r} matches no layer of the model"
                    f"{did_you_mean(pattern, layers)}; remove it or use one of: {_listing(layers)}"
                )

    def _check_override_patterns(self, layer_nodes, add_nodes, pre_quantized) -> None:
        """Every ``layers`` pattern must match a name the search looks up: a layer, an add,
        the network ``input`` or a layer's ``<name>.input`` quantizer."""
        names = [str(n.target) for n in layer_nodes] + [n.name for n in add_nodes]
        names += ["input"] + [f"{n.target}.input" for n in pre_quantized]
        for override in self.space.overrides:
            if not any(override.matches(name) for name in names):
                raise ConversionError(
                    f"search.layers[{override.pattern}]: matches no layer of the model"
                    f"{did_you_mean(override.pattern, names)}; remove it or use one of: "
                    f"{_listing(names)}"
                )

    @staticmethod
    def _check_padding(node: fx.Node, module: nn.Module) -> None:
        """Only zero padding; ``'same'`` / ``'valid'`` become the explicit padding they
        stand for (on the traced copy), which is symmetric unless a kernel is even."""
        if isinstance(module, nn.Linear):
            return
        if module.padding_mode != "zeros":
            raise ConversionError(
                f"layer '{node.target}' ({type(module).__name__}) uses padding mode "
                f"{module.padding_mode!r}; only zero padding is supported (or add it to "
                "search.exclude)"
            )
        if module.padding == "valid":
            module.padding = (0,) * len(module.kernel_size)
        elif module.padding == "same":
            totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size,
                                                   strict=True)]
            if any(t % 2 for t in totals):
                raise ConversionError(
                    f"layer '{node.target}' ({type(module).__name__}) uses padding='same' "
                    f"with kernel {tuple(module.kernel_size)}: that pads one side more than "
                    "the other; use an odd kernel or explicit padding (or add it to "
                    "search.exclude)"
                )
            module.padding = tuple(t // 2 for t in totals)

    def fold_batchnorms(self) -> None:
        graph = self.gm.graph
        for node in list(graph.nodes):
            if node.op != "call_module" or not isinstance(self.modules.get(node.target),
                                                          BATCHNORMS):
                continue
            producer = node.args[0]
            if (
                isinstance(producer, fx.Node)
                and producer.op == "call_module"
                and producer.target in self.layers
                and len(producer.users) == 1
            ):
                _fold_batchnorm(self.modules[producer.target], self.modules[node.target])
                node.replace_all_uses_with(producer)
                graph.erase_node(node)

    # -- graph walks ----------------------------------------------------------------------
    def kind(self, node: fx.Node) -> NodeKind:
        return classify(node, self.modules, self.layers)

    def value_source(self, node: fx.Node) -> fx.Node | None:
        """The quantizer-owning node whose output reaches ``node`` through value ops only."""
        while True:
            k = self.kind(node)
            if k in (NodeKind.INPUT, NodeKind.LAYER, NodeKind.ADD, NodeKind.CONCAT):
                return node
            if k in (NodeKind.VALUE, NodeKind.FLATTEN):
                node = node.all_input_nodes[0]
                continue
            return None

    def channel_sources(self, node: fx.Node) -> tuple[fx.Node, int]:
        """The node whose output channels reach ``node``, and features per channel."""
        factor = 1
        while True:
            k = self.kind(node)
            if k in (NodeKind.VALUE, NodeKind.CHANNEL, NodeKind.QUANT):
                node = node.all_input_nodes[0]
            elif k == NodeKind.FLATTEN:
                factor *= flatten_factor(node)
                node = node.all_input_nodes[0]
            else:
                return node, factor

    def follows_relu_only(self, node: fx.Node) -> bool:
        return bool(node.users) and all(is_relu(u, self.modules) for u in node.users)

    def reaches_output(self, node: fx.Node) -> bool:
        """Whether ``node``'s value reaches the graph output through value/channel ops only."""
        stack, seen = [node], set()
        while stack:
            n = stack.pop()
            for user in n.users:
                k = self.kind(user)
                if k == NodeKind.OUTPUT:
                    return True
                if k in (NodeKind.VALUE, NodeKind.CHANNEL, NodeKind.FLATTEN) and user not in seen:
                    seen.add(user)
                    stack.append(user)
        return False

    # -- building ------------------------------------------------------------------------
    def build(self) -> Supernet:
        self.select_layers()
        self.fold_batchnorms()
        graph = self.gm.graph
        nodes = list(graph.nodes)
        order = {n: i for i, n in enumerate(nodes)}
        layer_nodes = [n for n in nodes if self.kind(n) == NodeKind.LAYER]
        add_nodes = [n for n in nodes if self.kind(n) == NodeKind.ADD]
        cat_nodes = [n for n in nodes if self.kind(n) == NodeKind.CONCAT]
        inputs = [n for n in nodes if n.op == "placeholder" and shape_of(n) is not None]
        final = {n for n in layer_nodes if self.reaches_output(n)}

        # Activation quantizer slots and their sharing.
        slots = _UnionFind(order)
        owners = [n for n in inputs + layer_nodes + add_nodes + cat_nodes if n not in final]
        for n in owners:
            slots.find(n)
        pre_quantized: list[fx.Node] = []
        for n in layer_nodes:
            src = self.value_source(n.args[0])
            if src is None or src in final:
                pre_quantized.append(n)
            elif self._is_depthwise(n) and n not in final:
                slots.union(n, src)
        # A concatenation shares its quantizer with its inputs like an add, so that its
        # parts are codes on one grid (an input computed in float is quantized to it).
        for n in add_nodes + cat_nodes:
            for arg in n.all_input_nodes:
                src = self.value_source(arg)
                if src is not None and src not in final:
                    slots.union(n, src)
        self._check_override_patterns(layer_nodes, add_nodes, pre_quantized)

        # Weight choices and their sharing; which groups may prune.
        weights = _UnionFind(order)
        for n in layer_nodes + add_nodes:
            weights.find(n)
        no_prune: set[fx.Node] = set()
        for n in add_nodes:
            for arg in n.all_input_nodes:
                src, _ = self.channel_sources(arg)
                if self.kind(src) in (NodeKind.LAYER, NodeKind.ADD):
                    weights.union(n, src)
                else:
                    no_prune.add(n)
        for n in layer_nodes:
            if self._is_depthwise(n):
                src, _ = self.channel_sources(n.args[0])
                if self.kind(src) in (NodeKind.LAYER, NodeKind.ADD):
                    weights.union(n, src)
                else:
                    no_prune.add(n)
            elif self._groups(n) > 1:
                no_prune.add(n)
                src, _ = self.channel_sources(n.args[0])
                no_prune.add(src)
        for n in nodes:
            if self.kind(n) in (NodeKind.BARRIER, NodeKind.OUTPUT, NodeKind.CONCAT):
                for arg in n.all_input_nodes:
                    if shape_of(arg) is not None:
                        no_prune.add(self.channel_sources(arg)[0])
        blocked = {weights.find(n) for n in no_prune if n in weights.parent}

        choices = self._make_weight_choices(weights, layer_nodes, add_nodes, blocked)
        slot_modules, pre_slots = self._make_slots(slots, owners, pre_quantized)
        self._replace_layers(layer_nodes, weights, choices)
        self._insert_slots(slots, owners, pre_quantized, slot_modules, pre_slots)
        self._attach(layer_nodes, weights, choices)
        self._drop_redundant_relus()
        graph.lint()
        self.gm.delete_all_unused_submodules()  # folded BatchNorms must not linger as params
        self.gm.recompile()
        net = Supernet(self.gm, nn.ModuleDict(
            {self._key(leader): choice for leader, choice in choices.items()}
        ))
        if self.space.compensate:
            net.compensate_pruning()
        return net

    def _is_depthwise(self, node: fx.Node) -> bool:
        module = self.modules[node.target]
        return (
            isinstance(module, (nn.Conv1d, nn.Conv2d))
            and module.groups > 1
            and module.groups == module.in_channels == module.out_channels
        )

    def _groups(self, node: fx.Node) -> int:
        return getattr(self.modules[node.target], "groups", 1)

    @staticmethod
    def _key(node: fx.Node) -> str:
        return str(node.target if node.op == "call_module" else node.name).replace(".", "_")

    def _make_weight_choices(self, weights, layer_nodes, add_nodes, blocked):
        choices: dict[fx.Node, PrecisionChoice] = {}
        for leader, members in weights.groups(layer_nodes + add_nodes).items():
            layers = [m for m in members if self.kind(m) == NodeKind.LAYER]
            if not layers:
                continue
            bits = self._agreed_bits(layers, self.space.weight_bits_for, "weight_bits")
            if weights.find(leader) in blocked or not self.space.per_channel:
                bits = tuple(b for b in bits if b != 0)
            if not bits:
                raise ConversionError(
                    f"layer '{layers[0].target}' cannot be pruned here (it feeds the output, an "
                    "unsupported op or a grouped conv) and has only 0 in its weight_bits"
                )
            if 0 in bits and not self.space.per_channel:
                raise ConversionError("0-bit weights need search.type: per_channel")
            cout = {self.modules[m.target].weight.shape[0] for m in layers}
            channels = cout.pop() if self.space.per_channel else None
            choices[weights.find(leader)] = PrecisionChoice(
                bits, channels, min_keep=self.space.min_channels
            )
        return choices

    def _agreed_bits(self, layers, bits_for, field: str) -> tuple[int, ...]:
        """Precisions of a group: the members' explicit overrides must agree."""
        explicit = {}
        default = None
        for node in layers:
            name = node.target if node.op == "call_module" else node.name
            bits, is_explicit = bits_for(name)
            default = default or bits
            if is_explicit:
                explicit[name] = bits
        if len(set(explicit.values())) > 1:
            names = ", ".join(f"{k}={list(v)}" for k, v in explicit.items())
            raise ConversionError(
                f"layers sharing one {field.split('_')[0]} choice (residual add or depthwise) "
                f"have different search.layers {field}: {names} (give them the same list)"
            )
        return next(iter(explicit.values())) if explicit else default

    def _make_slots(self, slots, owners, pre_quantized):
        modules: dict[fx.Node, ActivationSlot] = {}
        pre: dict[fx.Node, ActivationSlot] = {}
        for leader, members in slots.groups(owners).items():
            bits = self._agreed_bits(
                [_NameOnly("input") if m.op == "placeholder" else m for m in members],
                self.space.act_bits_for, "act_bits",
            )
            signed = any(self._needs_signed(m) for m in members)
            # The tightest bounded ReLU that reads this quantizer's output (through any of
            # its members): a clip above it would make that ReLU cut the grid, which no
            # integer graph can express; the other members' values are clipped there too.
            bounds = [b for m in members for b in self._bounds_after(m)]
            clip_max = min(bounds) if bounds else None
            modules[leader] = self._slot(leader, bits, signed, clip_max=clip_max)
        for n in pre_quantized:
            bits, _ = self.space.act_bits_for(f"{n.target}.input")
            signed = not self._relu_upstream(n.args[0])
            # Separate from ``modules``: a layer can lead its output slot and also need one
            # before its input (e.g. after an average pool); the two must not collide.
            pre[n] = self._slot(n, bits, signed, pre=True)
        return modules, pre

    def _slot(
        self, node: fx.Node, bits, signed: bool, pre: bool = False, clip_max: float | None = None
    ) -> ActivationSlot:
        is_input = node.op == "placeholder"
        name = "input" if is_input else str(node.target if node.op == "call_module" else node)
        if pre:
            name = f"{name}.input"
        kind, options = self.space.act_quantizer_for(name)
        clip = self.space.input_clip if is_input else self.space.act_clip
        options = {"clip": clip, **options}
        if clip_max is not None:
            options["clip_max"] = clip_max
        try:
            quantizer = make_activation_quantizer(kind, bits, signed=signed,
                                                  compiled=self.compiled, **options)
        except (TypeError, ValueError) as exc:
            raise ConversionError(f"search.layers[{name}]: {exc}") from None
        return ActivationSlot(quantizer, PrecisionChoice(bits))

    def _bounds_after(self, node: fx.Node) -> list[float]:
        """The upper ends of the bounded ReLUs (ReLU6, Hardtanh(0, m)) among the consumers
        of ``node``."""
        if node.op == "placeholder":
            return []
        bounds = [relu_bound(u, self.modules) for u in node.users]
        return [b for b in bounds if b is not None and b != float("inf")]

    def _needs_signed(self, node: fx.Node) -> bool:
        if node.op == "placeholder":
            return self.space.input_signed
        if self.kind(node) == NodeKind.CONCAT:  # non-negative when every part is
            return not (self.follows_relu_only(node) or all(
                self._relu_upstream(p) for p in node.all_input_nodes))
        return not self.follows_relu_only(node)

    def _relu_upstream(self, node: fx.Node) -> bool:
        while True:
            if is_relu(node, self.modules):
                return True
            if self.kind(node) in (NodeKind.VALUE, NodeKind.CHANNEL, NodeKind.FLATTEN):
                node = node.all_input_nodes[0]
                continue
            return False

    def _replace_layers(self, layer_nodes, weights, choices) -> None:
        for n in layer_nodes:
            module = self.modules[n.target]
            choice = choices[weights.find(n)]
            name = str(n.target)
            try:
                quantizer = make_weight_quantizer(
                    self.space.weight_quantizer_for(name), choice.bits, module.weight,
                    self.compiled,
                )
            except ValueError as exc:
                raise ConversionError(f"search.layers[{name}]: {exc}") from None
            layer = SearchableLayer(module, quantizer, self._geometry(n, module))
            parent, _, attr = name.rpartition(".")
            setattr(self.gm.get_submodule(parent) if parent else self.gm, attr, layer)
            self.modules[name] = layer

    def _geometry(self, node: fx.Node, module: nn.Module) -> LayerGeometry:
        if isinstance(module, nn.Linear):
            return LayerGeometry(LayerKind.LINEAR, module.in_features, module.out_features,
                                 bias=module.bias is not None)
        out = shape_of(node)
        if isinstance(module, nn.Conv1d):
            kernel, out_hw = (module.kernel_size[0], 1), (out[2], 1)
        else:
            kernel, out_hw = tuple(module.kernel_size), (out[2], out[3])
        kind = LayerKind.DEPTHWISE if self._is_depthwise(node) else LayerKind.CONV
        return LayerGeometry(
            kind, module.in_channels, module.out_channels, kernel, out_hw, module.groups,
            bias=module.bias is not None,
        )

    def _slot_key(self, leader: fx.Node) -> str:
        if leader.op == "placeholder":
            single = sum(1 for n in self.gm.graph.nodes if n.op == "placeholder") == 1
            return "input" if single else f"input_{leader.name}"
        return self._key(leader)

    def _insert_slots(self, slots, owners, pre_quantized, slot_modules, pre_slots) -> None:
        graph = self.gm.graph
        self.gm.act_quants = nn.ModuleDict()
        for n in owners:
            leader = slots.find(n)
            key = self._slot_key(leader)
            if key not in self.gm.act_quants:
                self.gm.act_quants[key] = slot_modules[leader]
            with graph.inserting_after(n):
                q = graph.call_module(f"act_quants.{key}", (n,))
            n.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
        for n in pre_quantized:
            key = self._key(n) + "_input"
            self.gm.act_quants[key] = pre_slots[n]
            with graph.inserting_before(n):
                q = graph.call_module(f"act_quants.{key}", (n.args[0],))
            n.args = (q,) + tuple(n.args[1:])
        self.modules = dict(self.gm.named_modules())

    def _attach(self, layer_nodes, weights, choices) -> None:
        for n in layer_nodes:
            layer: SearchableLayer = self.modules[str(n.target)]
            cin_source = None
            if layer.geometry.kind != LayerKind.DEPTHWISE:
                src, factor = self.channel_sources(n.args[0])
                if src in weights.parent and weights.find(src) in choices:
                    cin_source = (choices[weights.find(src)], factor)
            layer.attach(choices[weights.find(n)], self._input_slot(n), cin_source)

    def _drop_redundant_relus(self) -> None:
        """A ReLU right after an unsigned quantizer changes nothing (its input is ≥ 0 by
        construction), so it is removed; one right after a signed quantizer that feeds only
        it is folded into the quantizer call (``relu=True``). Either way one pass forward and
        one backward are saved per ReLU. A bounded ReLU (ReLU6, Hardtanh(0, m)) goes too after
        an unsigned quantizer whose clip is bounded by ``m``: it could cut nothing."""
        graph = self.gm.graph
        for node in list(graph.nodes):
            if not (node.op == "call_module" and self.kind(node) == NodeKind.QUANT):
                continue
            signed = self.modules[str(node.target)].quantizer.signed
            users = list(node.users)
            for user in users:
                bound = relu_bound(user, self.modules)
                if bound is None or user.all_input_nodes != [node] or not (
                        set(user.kwargs) <= {"inplace", "min_val", "max_val"}):
                    continue
                if bound != float("inf"):
                    # A bounded ReLU is a no-op only after an unsigned quantizer whose clip
                    # cannot exceed its bound (then it goes; else it stays).
                    limit = getattr(self.modules[str(node.target)].quantizer, "clip_max", None)
                    if signed or limit is None or limit > bound:
                        continue
                elif signed:
                    if len(users) != 1:
                        continue
                    node.kwargs = {**node.kwargs, "relu": True}
                user.replace_all_uses_with(node)
                graph.erase_node(user)

    def _input_slot(self, node: fx.Node) -> ActivationSlot:
        """The quantizer whose output reaches ``node`` (walking back over value ops)."""
        src = node.args[0]
        while self.kind(src) != NodeKind.QUANT:
            src = src.all_input_nodes[0]
        return self.modules[str(src.target)]


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class _NameOnly:
    """Stands for the network input when looking up per-layer overrides by name."""

    op = "call_module"

    def __init__(self, target: str) -> None:
        self.target = target


def build_supernet(
    model: nn.Module,
    example_input: Tensor,
    space: SearchSpace,
    cost_models: Mapping[str, CostModel] | None = None,
) -> Supernet:
    """Convert ``model`` (never modified) into a :class:`Supernet` over ``space``, measured
    with ``cost_models`` (by name; names not given get the registry's defaults)."""
    net = _Converter(model, example_input, space).build()
    net.cost_models.update(cost_models or {})
    return net
