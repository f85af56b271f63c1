"""Model sections of a spec, and the stable layer names each model's captures go by.

Names, in forward order: `input`, then the hidden layers (`hidden.1` … for the MLP; `stage.1` …
then `head.1` … for conv nets; the ResNet adds `stem` first), then `output`. Analysis may also
count from the output (docs/method.md §1): `-1` is the output, `-2` the last hidden layer, and
so on; a non-negative integer k is the k-th name (`0` is the input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dfp_engine.plugins import PLUGIN_NAME_PATTERN, capture_names_of, load_plugin
from dfp_engine.spec.base import MAX_UNITS, SpecModel, field_error, kind_tag

Activation = Literal["tanh", "relu", "gelu", "sigmoid", "silu", "elu", "identity"]
Initialization = Literal[
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal"
]


def _positive(values: list[int], what: str, maximum: int = MAX_UNITS) -> list[int]:
    if any(v < 1 for v in values):
        raise ValueError(f"{what} must be positive integers")
    if any(v > maximum for v in values):
        raise ValueError(f"{what} must be at most {maximum}")
    return values


class MLPModel(SpecModel):
    """Fully connected: `depth` hidden layers (`hidden.1` … `hidden.depth`), then the output."""

    kind: Literal["mlp"] = "mlp"
    depth: int = Field(3, ge=1, le=1000, description="Number of hidden layers.")
    width: int | list[int] = Field(50, description="One width for all, or one per hidden layer.")
    activation: Activation = "tanh"
    init: Initialization = "default"
    init_std: float | None = Field(None, gt=0.0, le=100.0, description="Std for init='normal'.")
    bias: bool = True

    @field_validator("width")
    @classmethod
    def _positive_widths(cls, v: int | list[int]) -> int | list[int]:
        widths = [v] if isinstance(v, int) else v
        if not widths:
            raise ValueError("give at least one width")
        _positive(widths, "widths")
        return v

    @model_validator(mode="after")
    def _width_list_matches_depth(self) -> MLPModel:
        if isinstance(self.width, list) and len(self.width) != self.depth:
            field_error(("width",), f"lists {len(self.width)} widths but depth is {self.depth}")
        return self

    def widths(self) -> list[int]:
        return [self.width] * self.depth if isinstance(self.width, int) else list(self.width)


class CNNModel(SpecModel):
    """A small VGG-style stack: per stage `convs_per_stage` 3x3 convs, then 2x2 max-pool."""

    kind: Literal["cnn"] = "cnn"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1, max_length=8)
    convs_per_stage: int = Field(2, ge=1, le=16)
    head_widths: list[int] = Field(default_factory=lambda: [256, 128], max_length=16)
    activation: Activation = "relu"
    batch_norm: bool = False
    init: Initialization = "default"

    @field_validator("channels", "head_widths")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        return _positive(v, "widths")


class ResNetModel(SpecModel):
    """CIFAR ResNet18; `variant` k drops the k deepest residual stages, the head stays the same."""

    kind: Literal["resnet"] = "resnet"
    variant: int = Field(0, ge=0, le=3, description="Residual stages removed from the deep end.")
    base_width: int = Field(64, ge=1, le=512, description="Channels of the first stage.")
    blocks_per_stage: list[int] = Field(
        default_factory=lambda: [2, 2, 2, 2], min_length=4, max_length=4
    )
    head_widths: list[int] = Field(
        default_factory=lambda: [1024, 1024], min_length=1, max_length=16
    )
    activation: Activation = "relu"

    @field_validator("blocks_per_stage", "head_widths")
    @classmethod
    def _positive_values(cls, v: list[int], info: ValidationInfo) -> list[int]:
        return _positive(v, "values", 64 if info.field_name == "blocks_per_stage" else MAX_UNITS)


MAX_PLUGIN_PARAMS = 100


class PluginModel(SpecModel):
    """A model registered by an installed package (entry-point group `dfp.models`); `params`
    are validated by the plugin's own pydantic model. Layer names are its capture points."""

    kind: Literal["plugin"] = "plugin"
    name: str = Field(..., pattern=PLUGIN_NAME_PATTERN, description="The entry point's name.")
    params: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PLUGIN_PARAMS)

    @model_validator(mode="after")
    def _plugin_params(self) -> PluginModel:
        try:
            plugin = load_plugin(self.name)
        except ValueError as exc:
            field_error(("name",), str(exc), self.name)
        try:
            checked = plugin.params.model_validate(self.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ("params", *(str(part) for part in first["loc"]))
            field_error(loc, str(first["msg"]), first.get("input"))
        try:
            capture_names_of(plugin, checked, self.name)
        except ValueError as exc:
            field_error(("name",), str(exc), self.name)
        return self

    def checked_params(self) -> BaseModel:
        """The params as the plugin's model."""
        return load_plugin(self.name).params.model_validate(self.params)


ModelSpec = Annotated[
    Annotated[MLPModel, Tag("mlp")]
    | Annotated[CNNModel, Tag("cnn")]
    | Annotated[ResNetModel, Tag("resnet")]
    | Annotated[PluginModel, Tag("plugin")],
    Discriminator(
        kind_tag("mlp", {}),
        custom_error_type="model_kind",
        custom_error_message="kind must be one of mlp, cnn, resnet, plugin",
    ),
]


# ResNet18 for CIFAR has four residual stages; a variant removes some from the deep end.
RESNET_STAGES = 4


def hidden_names(spec: ModelSpec) -> list[str]:
    """Names of the hidden layers of a model spec, in forward order (no dataset needed)."""
    if isinstance(spec, MLPModel):
        return [f"hidden.{i}" for i in range(1, spec.depth + 1)]
    if isinstance(spec, PluginModel):
        return capture_names_of(load_plugin(spec.name), spec.checked_params(), spec.name)
    heads = [f"head.{i}" for i in range(1, len(spec.head_widths) + 1)]
    if isinstance(spec, CNNModel):
        return [f"stage.{i}" for i in range(1, len(spec.channels) + 1)] + heads
    stages = [f"stage.{i}" for i in range(1, RESNET_STAGES - spec.variant + 1)]
    return ["stem", *stages, *heads]


def capture_names(spec: ModelSpec) -> list[str]:
    """`input`, every hidden layer, `output`."""
    return ["input", *hidden_names(spec), "output"]


def resolve_layer(name: str, names: Sequence[str]) -> str:
    """A layer name or index (`-2`, `3`) as its canonical name; ValueError lists the options."""
    if name in names:
        return name
    try:
        index = int(name)
    except ValueError:
        index = None
    if index is not None and -len(names) <= index < len(names):
        return names[index]
    options = ", ".join(names)
    raise ValueError(f"unknown layer '{name}'; this model has {options} (or -1 … -{len(names)})")


def resolve_layers(requested: str | Sequence[str], names: Sequence[str]) -> list[str]:
    """'all' → input plus every hidden layer; otherwise each name resolved, in forward order."""
    if requested == "all":
        return [n for n in names if n != "output"]
    out = {resolve_layer(name, names) for name in requested}
    return sorted(out, key=list(names).index)
