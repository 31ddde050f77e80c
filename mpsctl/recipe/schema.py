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
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mpsctl.recipe.errors import PROBLEMS, format_path
from mpsctl.registry import closest

Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Bool = Annotated[bool, Strict()]

MAX_BITS = 16
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

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
    "val_fraction",
    "image_size",
)


class DataConfig(Section):
    """Dataset name, loader settings and the options passed to the dataset factory."""

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
    val_fraction: Annotated[float, Strict(), Field(gt=0, lt=1)] | None = None
    image_size: PositiveInt | None = None

    def options(self) -> dict[str, Any]:
        """Dataset options that were set; ``download`` only when true (not every set has it)."""
        found = {key: getattr(self, key) for key in _DATA_OPTIONS}
        return {key: value for key, value in found.items() if value not in (None, False)}


class ScheduleConfig(Section):
    """Learning-rate schedule stepped once per epoch."""

    name: Literal["none", "cosine", "step", "onecycle"] = "none"
    step_size: PositiveInt = 10
    gamma: PositiveFloat = 0.1
    max_lr: PositiveFloat | None = None
    warmup_epochs: NonNegativeInt = 0


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
    cost: dict[str, NonNegativeFloat] = {}
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
    #: YAML file of NE16 constants (a copy of configs/targets/ne16.yaml describing a variant
    #: of the engine); None uses the shipped constants.
    ne16_target: str | None = None

    @field_validator("cost")
    @classmethod
    def _known_cost_names(cls, cost: dict[str, float]) -> dict[str, float]:
        names = known_costs()
        found: list[Problem] = []
        for name in cost:
            if name not in names:
                guess = closest(name, names)
                hint = f"did you mean '{guess}'? " if guess else ""
                found.append(((name,), f"unknown cost model ({hint}available: {', '.join(names)})"))
        if found:
            raise problems(found)
        return cost

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
        """Activation precisions a hardware target in ``cost`` cannot run."""
        found: list[Problem] = []
        for cost in self.cost:
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
