"""The recipe schema: typed sections that validate themselves with path-precise messages.

Only the structure and the rules a user can break live here; reading YAML, includes and
overrides are the loader's job (``mpsctl.recipe.loading``).
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mpsctl.recipe.errors import PROBLEMS, format_path
from mpsctl.registry import closest

if TYPE_CHECKING:
    from mpsctl.search.budget import Budget

Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Bool = Annotated[bool, Strict()]

MAX_BITS = 16
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TARGET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

#: A problem found by a validator: location relative to the validated value, and text.
Problem = tuple[tuple["str | int", ...], str]


def problems(found: list[Problem]) -> PydanticCustomError:
    """Several located problems as one pydantic error, so every one of them gets reported."""
    text = "; ".join(f"{format_path(at)}: {msg}" if at else msg for at, msg in found)
    return PydanticCustomError(PROBLEMS, "{text}", {"text": text, "problems": found})


def known_costs() -> tuple[str, ...]:
    """Cost model names a recipe may use (imported lazily: the registry pulls in torch code)."""
    from mpsctl.targets import available_cost_models

    return tuple(available_cost_models())


def required_act_bits(cost: str) -> tuple[int, ...] | None:
    """The activation precisions the target behind ``cost`` runs (None: any, or unknown)."""
    from mpsctl.targets import COST_MODELS, build_cost_model

    return build_cost_model(cost).act_bits if cost in COST_MODELS else None


def _yaml_target_costs(targets: dict[str, str]) -> tuple[str, ...]:
    """Cost names the recipe's YAML-only targets add (their files are already checked)."""
    from mpsctl.targets import catalog

    names: tuple[str, ...] = ()
    for name, path in targets.items():
        target = catalog.get_target(name, targets)
        if name not in catalog.BUILTIN and target is not None:
            names += catalog.custom_costs(name, target.load(path))
    return names


@functools.cache
def torch_optimizers() -> dict[str, str]:
    """Lower-case name → class name of every optimizer in ``torch.optim``."""
    import torch.optim

    return {
        name.lower(): name
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    }


def _check_bits(bits: list[int], role: Literal["weight", "act"]) -> list[int]:
    lowest = 0 if role == "weight" else 1
    found: list[Problem] = []
    if not bits:
        found.append(((), "empty list (give at least one precision, e.g. [8])"))
    seen: set[int] = set()
    for index, bit in enumerate(bits):
        if role == "act" and bit == 0:
            found.append(
                (
                    (index,),
                    "activations cannot be pruned (use 1..16 bits; prune "
                    "channels with 0 in weight_bits)",
                )
            )
        elif not lowest <= bit <= MAX_BITS:
            found.append(((index,), f"{bit} bits is out of range ({lowest}..{MAX_BITS})"))
        elif bit in seen:
            found.append(((index,), f"duplicate precision {bit} (list each precision once)"))
        seen.add(bit)
    if found:
        raise problems(found)
    return sorted(bits)


def _weight_bits(bits: list[int]) -> list[int]:
    return _check_bits(bits, "weight")


def _act_bits(bits: list[int]) -> list[int]:
    return _check_bits(bits, "act")


#: Candidate precisions, validated and normalised to ascending order.
WeightBits = Annotated[list[Int], AfterValidator(_weight_bits)]
ActBits = Annotated[list[Int], AfterValidator(_act_bits)]
WeightQuantizer = Literal["minmax", "lsq"]
ActQuantizer = Literal["pact"]


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, never silently kept."""

    model_config = ConfigDict(extra="forbid")


class ModelConfig(BaseModel):
    """The network: a registry name, ``torchvision:NAME`` or ``module:attr``, plus its kwargs."""

    model_config = ConfigDict(extra="allow")

    name: str
    weights: str | None = None

    def kwargs(self) -> dict[str, Any]:
        """The extra keys, passed to the model factory as keyword arguments."""
        return dict(self.model_extra or {})


_DATA_OPTIONS = (
    "root",
    "download",
    "shape",
    "num_classes",
    "size",
    "val_size",
    "test_size",
    "val_fraction",
    "image_size",
)


class DataConfig(BaseModel):
    """Dataset name, loader settings and the options passed to the dataset factory.

    The built-in options are typed here; any other key is passed to the dataset factory,
    whose signature decides whether it exists (checked before any training).
    """

    model_config = ConfigDict(extra="allow")

    name: str = "mnist5k"
    batch_size: PositiveInt = 64
    global_batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt = 0
    root: str | None = None
    download: Bool = False
    shape: list[PositiveInt] | None = None
    num_classes: PositiveInt | None = None
    size: PositiveInt | None = None
    val_size: NonNegativeInt | None = None
    test_size: NonNegativeInt | None = None
    val_fraction: Annotated[float, Strict(), Field(gt=0, lt=1)] | None = None
    image_size: PositiveInt | None = None

    def options(self) -> dict[str, Any]:
        """Dataset options that were set; ``download`` only when true (not every set has it)."""
        found = {key: getattr(self, key) for key in _DATA_OPTIONS}
        found = {key: value for key, value in found.items() if value not in (None, False)}
        return {**found, **(self.model_extra or {})}


class ScheduleConfig(Section):
    """Learning-rate schedule; ``warmup_epochs`` of linear warm-up come first."""

    name: Literal["none", "cosine", "step", "onecycle"] = "none"
    step_size: PositiveInt = 10
    gamma: PositiveFloat = 0.1
    max_lr: PositiveFloat | None = None
    #: Epochs of linear warm-up (lr/W → lr over the W warm-up batches) before ``name`` runs
    #: over the remaining epochs; not with onecycle, which warms up itself.
    warmup_epochs: NonNegativeInt = 0

    @model_validator(mode="after")
    def _warmup_allowed(self) -> ScheduleConfig:
        if self.warmup_epochs and self.name == "onecycle":
            raise problems([(("warmup_epochs",), "onecycle has its own warm-up (set "
                             "warmup_epochs: 0, or use cosine, step or none)")])
        return self


class OptimizerConfig(Section):
    """Any ``torch.optim`` optimizer by (case-insensitive) name."""

    name: str = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    momentum: NonNegativeFloat | None = None
    schedule: ScheduleConfig | None = None

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        names = torch_optimizers()
        if name.lower() in names:
            return name.lower()
        guess = closest(name.lower(), names)
        hint = f"did you mean '{guess}'?" if guess else ", ".join(sorted(names))
        raise problems([((), f"'{name}' is not a torch.optim optimizer ({hint})")])

    @model_validator(mode="after")
    def _momentum_supported(self) -> OptimizerConfig:
        if self.momentum is not None and "momentum" not in self._parameters():
            raise problems(
                [(("momentum",), f"{self.name} has no momentum (use sgd or rmsprop, or remove it)")]
            )
        return self

    @property
    def torch_name(self) -> str:
        """The ``torch.optim`` class name, e.g. ``"AdamW"`` for ``adamw``."""
        return torch_optimizers()[self.name]

    def _parameters(self) -> set[str]:
        import torch.optim

        return set(inspect.signature(getattr(torch.optim, self.torch_name)).parameters)


def _optimizer(lr: float) -> Any:
    return Field(default_factory=lambda: OptimizerConfig(lr=lr))


class WarmupConfig(Section):
    """Optional full-precision training before the search (0 epochs skips it)."""

    epochs: NonNegativeInt = 0
    optimizer: OptimizerConfig = _optimizer(1e-3)


class TemperatureConfig(Section):
    """Softmax temperature of the precision choice: ``T ← max(min, T·exp(−decay))`` per epoch."""

    start: PositiveFloat = 1.0
    decay: NonNegativeFloat = 0.045
    #: Temperature at the last search epoch; when set, the decay is derived from it and the
    #: number of epochs (so changing search.epochs keeps the schedule's end point).
    end: PositiveFloat | None = None
    min: NonNegativeFloat = 0.0
    mode: Literal["softmax", "gumbel", "hard"] = "softmax"

    @model_validator(mode="after")
    def _min_below_start(self) -> TemperatureConfig:
        if self.min > self.start:
            raise problems(
                [(("min",), f"{self.min} is above start {self.start} (must be <= start)")]
            )
        if self.end is not None and self.end > self.start:
            raise problems(
                [(("end",), f"{self.end} is above start {self.start} (must be <= start)")]
            )
        return self

    def decay_for(self, epochs: int) -> float:
        """Per-epoch decay: ``decay``, or the one that reaches ``end`` at the last epoch."""
        if self.end is None:
            return self.decay
        return math.log(self.start / self.end) / max(epochs - 1, 1)


class LayerOverride(Section):
    """Per-layer settings for the modules whose names match the glob key."""

    weight_bits: WeightBits | None = None
    act_bits: ActBits | None = None
    weight_quantizer: WeightQuantizer | None = None
    act_quantizer: ActQuantizer | None = None
    options: dict[str, Any] = {}


class SearchConfig(Section):
    """The supernet search: candidate precisions, cost models and their strengths, schedule."""

    type: Literal["per_layer", "per_channel"] = "per_layer"
    weight_bits: WeightBits = [2, 4, 8]
    act_bits: ActBits = [2, 4, 8]
    #: Constants files of hardware targets by name: a copy of a shipped
    #: configs/targets/<name>.yaml (ne16, mpic, gap8, diana) describing a variant, or a new
    #: name for a target described by a file alone (configs/targets/template.yaml).
    #: Relative paths are read from the recipe's folder. (Before ``cost``: its check needs it.)
    targets: dict[str, str] = {}
    cost: dict[str, NonNegativeFloat] = {}
    #: Upper bounds on costs (``params_bit: 24KiB``, ``ne16: 60k``, ``10%``): the strength
    #: of each adapts during the search and the exported model is projected under them.
    budget: dict[str, Any] = {}
    epochs: NonNegativeInt = 1
    temperature: TemperatureConfig = Field(default_factory=TemperatureConfig)
    optimizer: OptimizerConfig = _optimizer(1e-3)
    arch_optimizer: OptimizerConfig = _optimizer(1e-2)
    exclude: list[str] = []
    layers: dict[str, LayerOverride] = {}
    weight_quantizer: WeightQuantizer = "minmax"
    act_quantizer: ActQuantizer = "pact"
    min_channels: Annotated[int, Strict(), Field(ge=1)] = 1
    compensate: Bool = False
    input_clip: PositiveFloat = 1.0
    act_clip: PositiveFloat = 6.0
    input_signed: Bool = False
    compile: Bool = True

    @model_validator(mode="before")
    @classmethod
    def _ne16_target_alias(cls, data: Any) -> Any:
        """``ne16_target: FILE`` (the old key) means ``targets: {ne16: FILE}``."""
        if not isinstance(data, dict) or "ne16_target" not in data:
            return data
        data = dict(data)
        path = data.pop("ne16_target")
        if path is None:
            return data
        targets = data.get("targets")
        if not isinstance(targets, dict):
            targets = {}
        if "ne16" in targets and targets["ne16"] != path:
            raise problems([(("ne16_target",), "give the NE16 constants file once, as "
                             "search.targets.ne16 (ne16_target is its old name)")])
        data["targets"] = {**targets, "ne16": path}
        return data

    @field_validator("targets")
    @classmethod
    def _usable_targets(cls, targets: dict[str, str]) -> dict[str, str]:
        from mpsctl.errors import UserError
        from mpsctl.targets import catalog

        found: list[Problem] = []
        builtin_costs = set(known_costs())
        for name, path in targets.items():
            if name not in catalog.BUILTIN and (
                not _TARGET_NAME.match(name) or name in builtin_costs
                or name.removesuffix("_energy") in builtin_costs
            ):
                found.append(((name,), "not a usable target name (built-in targets: "
                              f"{', '.join(catalog.BUILTIN)}; a new target needs a new name of "
                              "lower-case letters, digits and '_')"))
                continue
            target = catalog.get_target(name, targets)
            assert target is not None
            try:
                target.load(path)
            except UserError as exc:
                found.append(((name,), str(exc)))
        if found:
            raise problems(found)
        # absolute, so that later stages rebuilding from a checkpoint read the same file
        return {name: str(Path(path).expanduser().resolve()) for name, path in targets.items()}

    @field_validator("cost")
    @classmethod
    def _known_cost_names(cls, cost: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        if "targets" not in info.data:
            return cost  # the targets failed: their costs are unknown until they are fixed
        names = known_costs() + _yaml_target_costs(info.data["targets"])
        found: list[Problem] = []
        for name in cost:
            if name not in names:
                guess = closest(name, names)
                hint = f"did you mean '{guess}'? " if guess else ""
                found.append(((name,), f"unknown cost model ({hint}available: {', '.join(names)}"
                              "; a target of your own: search.targets.NAME: FILE.yaml)"))
        if found:
            raise problems(found)
        return cost

    @field_validator("budget")
    @classmethod
    def _valid_budgets(cls, budget: dict[str, Any]) -> dict[str, Any]:
        from mpsctl.recipe.budget import parse_budget

        names = known_costs()
        found: list[Problem] = []
        for name, value in budget.items():
            if name not in names:
                guess = closest(name, names)
                hint = f"did you mean '{guess}'? " if guess else ""
                found.append(((name,), f"unknown cost model ({hint}available: {', '.join(names)})"))
                continue
            try:
                parse_budget(name, value)
            except ValueError as exc:
                found.append(((name,), str(exc)))
        if found:
            raise problems(found)
        return budget

    def budgets(self) -> dict[str, Budget]:
        """The parsed budgets, ``{cost: Budget}``."""
        from mpsctl.recipe.budget import parse_budget

        return {name: parse_budget(name, value) for name, value in self.budget.items()}

    def objective_costs(self) -> list[str]:
        """Costs the search optimises: those with a strength, then those with a budget."""
        return list(self.cost) + [c for c in self.budget if c not in self.cost]

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        found = self._pruning_problems() + self._target_problems()
        if found:
            raise problems(found)
        return self

    def _pruning_problems(self) -> list[Problem]:
        if self.type != "per_layer":
            return []
        fix = "0-bit pruning needs per-channel search (set search.type: per_channel, or drop 0)"
        found: list[Problem] = []
        if 0 in self.weight_bits:
            found.append((("weight_bits", 0), fix))
        for key, layer in self.layers.items():
            if layer.weight_bits and 0 in layer.weight_bits:
                found.append((("layers", key, "weight_bits", 0), fix))
        return found

    def _target_problems(self) -> list[Problem]:
        """Activation precisions a hardware target in ``cost`` or ``budget`` cannot run."""
        found: list[Problem] = []
        for cost in self.objective_costs():
            allowed = required_act_bits(cost)
            if allowed is None:
                continue
            needs = f"{cost} needs {'/'.join(map(str, allowed))}-bit activations"
            if not set(self.act_bits) <= set(allowed):
                found.append((("act_bits",), f"{needs} (set search.act_bits: {list(allowed)})"))
            for key, layer in self.layers.items():
                if layer.act_bits is not None and not set(layer.act_bits) <= set(allowed):
                    found.append((("layers", key, "act_bits"),
                                  f"{needs} (set it to {list(allowed)} or remove it)"))
        return found


class FinetuneConfig(Section):
    """Quantization-aware fine-tuning of the exported fixed-precision model."""

    epochs: NonNegativeInt = 1
    optimizer: OptimizerConfig = _optimizer(1e-4)


class LogConfig(Section):
    """Run tracking. ``runs/<name>/metrics.jsonl`` is always written (one line per epoch);
    ``tensorboard: true`` also writes TensorBoard event files under ``runs/<name>/tb/``
    (needs the ``tensorboard`` package: ``pip install 'mpsctl[log]'``)."""

    tensorboard: Bool = False


class Recipe(Section):
    """One run, end to end: model, data, warm-up, search and fine-tuning."""

    name: str = "run"
    seed: NonNegativeInt = 0
    output_dir: str | None = None
    device: str = "auto"
    #: Train in channels-last memory layout: auto (on CPUs, if the model accepts it),
    #: true or false. Changes speed, and results only by float round-off.
    channels_last: Literal["auto"] | Bool = "auto"
    include: list[str] = []
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not _RUN_NAME.match(name):
            raise problems(
                [
                    (
                        (),
                        f"{name!r} is not a valid run name (letters, digits, '.', "
                        "'_', '-'; it names the run folder)",
                    )
                ]
            )
        return name

    @field_validator("channels_last", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        if value == "auto" or isinstance(value, bool):
            return value
        raise problems([((), f"{value!r} is not allowed (auto, true, false)")])

    @field_validator("device")
    @classmethod
    def _device_pattern(cls, device: str) -> str:
        if not _DEVICE.match(device):
            raise problems([((), f"{device!r} is not a device (auto, cpu, cuda, cuda:N)")])
        return device

    @property
    def run_dir(self) -> Path:
        """Where the run's checkpoints go: ``output_dir``, or ``runs/<name>`` by default."""
        if self.output_dir is not None:
            return Path(self.output_dir).expanduser()
        return Path("runs") / self.name
