"""The experiment spec: one pydantic model family shared by the CLI, the API and the worker."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from dfp_engine.deltas import validate_deltas
from dfp_engine.expression import parse_expression
from dfp_engine.normalization import NormalizationMode

Activation = Literal["tanh", "relu", "gelu", "sigmoid", "silu", "elu", "identity"]
Initialization = Literal[
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal"
]
InputScaling = Literal["none", "standardize", "minmax", "max_abs"]

# Dataset kinds whose inputs are images (c, h, w); npz may be either, decided by its array shape.
IMAGE_DATASETS = frozenset({"digits", "mnist", "fashion_mnist", "cifar10"})
REGRESSION_DATASETS = frozenset({"synthetic_1d", "synthetic_nd"})

# Upper bounds that keep every number a spec can hold meaningful (and inside int64 and the
# seeders' range); the service's configurable limits (dfp.experiments.limits) are far lower.
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (mnist1d) takes 32-bit seeds
MAX_COUNT = 1_000_000_000  # samples, steps
MAX_EPOCHS = 10_000_000
MAX_UNITS = 100_000  # units or channels of one layer
MAX_INTERVAL = 1e6  # |x| of the synthetic 1-D interval
MAX_SWEEP_VALUE_DEPTH = 8  # nesting of one sweep value (a list of widths is depth 1)
MAX_SWEEP_VALUE_NODES = 10_000  # numbers, strings, lists and mappings over all sweep values


def _plain_text(value: str) -> str:
    """Free text (names, paths) holds no control characters and no lone surrogates: they would
    be rejected by the database, corrupt logs and file names, or hide what a name says."""
    for ch in value:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            raise ValueError(f"must not contain control characters (found {ch!r})")
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError("must be valid Unicode text (found a lone surrogate)")
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]


def field_error(loc: tuple[str | int, ...], message: str, value: Any = None) -> NoReturn:
    """Raise a validation error at `loc` (relative to the model being validated)."""
    error = PydanticCustomError("spec", message)  # type: ignore[arg-type]
    raise ValidationError.from_exception_data(
        "ExperimentSpec", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


class SpecModel(BaseModel):
    """Base for every spec part: unknown fields are errors, instances are immutable."""

    # NaN and infinity are refused everywhere: no spec field means anything by them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- datasets


class DatasetCommon(SpecModel):
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share held out for testing.")
    scaling: InputScaling = Field("none", description="Input scaling, fitted on the train split.")
    max_train_samples: int | None = Field(
        None, ge=2, le=MAX_COUNT, description="Seeded subset of the train split."
    )
    max_test_samples: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="Seeded subset of the test split."
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed for generation, splitting and subsetting."
    )


class Synthetic1DDataset(DatasetCommon):
    """y = expression(x) on n points of an interval (a regression target)."""

    kind: Literal["synthetic_1d"] = "synthetic_1d"
    expression: str = Field(
        "cos(3*x) + cos(5*x)",
        max_length=500,
        description="Target y(x): numbers, x, pi, e, + - * / ** and whitelisted functions.",
    )
    n_points: int = Field(61, ge=2, le=1_000_000)
    interval: tuple[float, float] = (-math.pi, math.pi)
    sampling: Literal["grid", "uniform"] = Field(
        "grid", description="Evenly spaced points, or seeded uniform draws."
    )
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("expression")
    @classmethod
    def _parse(cls, v: str) -> str:
        parse_expression(v)
        return v

    @field_validator("interval")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError("must be two finite numbers with low < high")
        if max(abs(lo), abs(hi)) > MAX_INTERVAL:
            raise ValueError(f"must lie within [-{MAX_INTERVAL:g}, {MAX_INTERVAL:g}]")
        return v


class SyntheticNDDataset(DatasetCommon):
    """x uniform in [-1, 1]^dim with a named regression target family (see datasets.py)."""

    kind: Literal["synthetic_nd"] = "synthetic_nd"
    family: Literal["cosine_sum", "radial_cosine", "gaussian_bumps", "parity"] = "cosine_sum"
    dim: int = Field(2, ge=1, le=10_000)
    n_samples: int = Field(1000, ge=2, le=1_000_000)
    frequency: float = Field(1.0, gt=0.0, le=1_000.0)


class DigitsDataset(DatasetCommon):
    """scikit-learn's bundled 8x8 handwritten digits (1 797 images, 10 classes), in [0, 1]."""

    kind: Literal["digits"] = "digits"


class MNIST1DDataset(DatasetCommon):
    """MNIST-1D generated locally by the mnist1d package's generator (40-sample signals)."""

    kind: Literal["mnist1d"] = "mnist1d"
    n_samples: int = Field(4000, ge=20, le=200_000)


class TorchvisionDataset(DatasetCommon):
    """MNIST / Fashion-MNIST / CIFAR-10 read from a local folder in torchvision's layout."""

    kind: Literal["mnist", "fashion_mnist", "cifar10"]
    root: PlainText = Field(
        "data", min_length=1, max_length=4096, description="Folder above MNIST/ etc."
    )
    allow_download: bool = Field(False, description="Fetch missing files (needs torchvision).")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Unused: the official split.")


class NpzDataset(DatasetCommon):
    """A user file holding `x` (n, ...) and `y` (n,) ints = classes, or floats (n,) / (n, c)."""

    kind: Literal["npz"] = "npz"
    path: PlainText = Field(..., min_length=1, max_length=4096)


def _kind_tag(default: str, aliases: dict[str, str]) -> Any:
    """Discriminator on `kind` that treats an omitted kind as `default`."""

    def tag(v: Any) -> str | None:
        kind = v.get("kind", default) if isinstance(v, dict) else getattr(v, "kind", None)
        return aliases.get(kind, kind) if isinstance(kind, str) else None

    return tag


DatasetSpec = Annotated[
    Annotated[Synthetic1DDataset, Tag("synthetic_1d")]
    | Annotated[SyntheticNDDataset, Tag("synthetic_nd")]
    | Annotated[DigitsDataset, Tag("digits")]
    | Annotated[MNIST1DDataset, Tag("mnist1d")]
    | Annotated[TorchvisionDataset, Tag("torchvision")]
    | Annotated[NpzDataset, Tag("npz")],
    Discriminator(
        _kind_tag(
            "synthetic_1d", dict.fromkeys(("mnist", "fashion_mnist", "cifar10"), "torchvision")
        ),
        custom_error_type="dataset_kind",
        custom_error_message="kind must be one of synthetic_1d, synthetic_nd, digits, mnist1d, "
        "mnist, fashion_mnist, cifar10, npz",
    ),
]


# ------------------------------------------------------------------ models


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


ModelSpec = Annotated[
    Annotated[MLPModel, Tag("mlp")]
    | Annotated[CNNModel, Tag("cnn")]
    | Annotated[ResNetModel, Tag("resnet")],
    Discriminator(
        _kind_tag("mlp", {}),
        custom_error_type="model_kind",
        custom_error_message="kind must be one of mlp, cnn, resnet",
    ),
]


# ---------------------------------------------------------------- training


class LRSchedule(SpecModel):
    """Step schedule: multiply the learning rate by `gamma` at each milestone epoch."""

    milestones: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] = Field(
        default_factory=list, max_length=100
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v) or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("must be strictly increasing positive epochs")
        return v


class TrainingSpec(SpecModel):
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule)
    batch_size: int | None = Field(None, ge=1, le=MAX_COUNT, description="null means full batch.")
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    max_steps: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="Stop after this many optimizer steps."
    )
    loss: Literal["mse", "cross_entropy"] = Field(
        "mse", description="mse on one-hot (classification) or real targets; cross_entropy."
    )
    target_loss: float | None = Field(
        None, gt=0.0, le=1e6, description="Train loss for time-to-target."
    )
    stop_at_target: bool = Field(False, description="End the run once target_loss is reached.")
    history_every: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="Log every k epochs; null keeps the history near 1000 points.",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d{1,3})?)$")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            field_error(("nesterov",), "needs optimizer 'sgd' with momentum > 0", self.nesterov)
        if self.stop_at_target and self.target_loss is None:
            field_error(("stop_at_target",), "needs target_loss", self.stop_at_target)
        return self


# ---------------------------------------------------------------- analysis


MAX_BANDWIDTH = 1e12  # δ and 1/δ: far beyond any squared distance of normalised features


def _check_bandwidths(values: list[float], *, name: str) -> None:
    validate_deltas(values, name=name)
    if any(not 1 / MAX_BANDWIDTH <= v <= MAX_BANDWIDTH for v in values):
        raise ValueError(f"{name} must lie within [{1 / MAX_BANDWIDTH:g}, {MAX_BANDWIDTH:g}]")


class EveryEpochs(SpecModel):
    every: int = Field(..., ge=1, le=MAX_EPOCHS)


class InverseDeltas(SpecModel):
    inverse: list[float] = Field(..., min_length=2, max_length=1000)

    @field_validator("inverse")
    @classmethod
    def _valid(cls, v: list[float]) -> list[float]:
        _check_bandwidths(v, name="inverse deltas")
        return v


class AutoDeltas(SpecModel):
    auto: int = Field(..., ge=2, le=1000, description="Number of automatic δ values.")


def _deltas_tag(v: Any) -> str | None:
    if isinstance(v, str):
        return "auto"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict | InverseDeltas | AutoDeltas):
        keys = set(v) if isinstance(v, dict) else set(type(v).model_fields)
        return "inverse" if "inverse" in keys else "grid" if "auto" in keys else None
    return None


def _checkpoints_tag(v: Any) -> str | None:
    if isinstance(v, list):
        return "list"
    return "every" if isinstance(v, dict | EveryEpochs) else None


DeltasSpec = Annotated[
    Annotated[Literal["auto"], Tag("auto")]
    | Annotated[list[float], Tag("list"), Field(max_length=1000)]
    | Annotated[InverseDeltas, Tag("inverse")]
    | Annotated[AutoDeltas, Tag("grid")],
    Discriminator(
        _deltas_tag,
        custom_error_type="deltas",
        custom_error_message="must be 'auto', a list of δ, {inverse: [1/δ, …]} or {auto: m}",
    ),
]
CheckpointsSpec = Annotated[
    Annotated[EveryEpochs, Tag("every")]
    | Annotated[
        list[Annotated[int, Field(ge=0, le=MAX_EPOCHS)]], Tag("list"), Field(max_length=10_000)
    ],
    Discriminator(
        _checkpoints_tag,
        custom_error_type="checkpoints",
        custom_error_message="must be a list of epochs or {every: k}",
    ),
]
LayerName = Annotated[PlainText, Field(min_length=1, max_length=50)]
LayersSpec = Annotated[
    Annotated[Literal["all"], Tag("all")]
    | Annotated[list[LayerName], Tag("list"), Field(max_length=1100)],
    Discriminator(
        lambda v: "list" if isinstance(v, list) else "all",
        custom_error_type="layers",
        custom_error_message="must be 'all' or a list of layer names",
    ),
]


class AnalysisSpec(SpecModel):
    layers: LayersSpec = Field(
        "all",
        description="'all' (input plus every hidden layer) or names: 'input', 'hidden.2', "
        "'stage.1', 'head.1', 'output', or counted from the output: -1 output, -2 last hidden.",
    )
    checkpoints: CheckpointsSpec = Field(
        default_factory=lambda: EveryEpochs(every=10),
        description="Epochs to analyse; 0 and the last epoch are always included.",
    )
    deltas: DeltasSpec = Field(
        "auto", description="'auto', a list of δ, {inverse: [1/δ…]} or {auto: m}."
    )
    normalize: NormalizationMode = "max_abs_per_dim"
    filtering_test: bool = Field(
        False, description="Also compute e_low/e_high of the outputs in input space (METHOD §4)."
    )
    n_samples: int = Field(2000, ge=2, le=1_000_000, description="Seeded analysis subset size.")
    summary_layer: LayerName | None = Field(
        None, description="Layer for the sweep summary; default the deepest analysed layer."
    )
    block_size: int | None = Field(None, ge=1, le=1_000_000)
    ci: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Estimate LFR from sampled rows until its 95 % half-width is at most this "
        "at every δ (exact when that needs half the rows); not with filtering_test.",
    )

    @field_validator("layers", "summary_layer", mode="before")
    @classmethod
    def _integers_as_names(cls, v: Any) -> Any:
        # YAML reads `layers: [-3]` as integers; layer names are strings.
        if isinstance(v, list):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("name at least one layer, or use 'all'")
        return v

    @field_validator("deltas")
    @classmethod
    def _valid_deltas(cls, v: Any) -> Any:
        if isinstance(v, list):
            _check_bandwidths(v, name="deltas")
        return v

    @model_validator(mode="after")
    def _ci_without_filtering_test(self) -> AnalysisSpec:
        if self.ci is not None and self.filtering_test:
            field_error(("ci",), "the row-sampled estimator does not run the filtering test", 1)
        return self

    @field_validator("checkpoints")
    @classmethod
    def _valid_checkpoints(cls, v: Any) -> Any:
        if isinstance(v, list) and any(e < 0 for e in v):
            raise ValueError("checkpoint epochs must be non-negative integers")
        return v


# ------------------------------------------------------------------- sweep


class SweepSpec(SpecModel):
    field: str = Field(
        ...,
        min_length=1,
        max_length=200,
        pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$",
        description="Dotted path of the swept field, e.g. model.depth or dataset.expression.",
    )
    values: list[Any] = Field(..., min_length=1, max_length=1000)

    @field_validator("values")
    @classmethod
    def _small_values(cls, v: list[Any]) -> list[Any]:
        # Each value is validated as a whole spec; a huge or deeply nested one (a YAML alias
        # bomb, say) would make that validation, and the error message, explode.
        budget = [MAX_SWEEP_VALUE_NODES]
        for value in v:
            _check_value_size(value, budget, depth=0)
        return v


def _check_value_size(value: Any, budget: list[int], depth: int) -> None:
    """Count the nodes of one sweep value against the shared budget; stop at the first excess."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"the values hold more than {MAX_SWEEP_VALUE_NODES} items in all")
    if isinstance(value, list | tuple | dict):
        if depth >= MAX_SWEEP_VALUE_DEPTH:
            raise ValueError(f"a value is nested deeper than {MAX_SWEEP_VALUE_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            _check_value_size(child, budget, depth + 1)


_UNSWEEPABLE = {"name", "sweep"}
# Locations whose next segment may be a union tag rather than a field: tags are dropped from
# user-facing paths.
_TAGGED_UNIONS: dict[tuple[str | int, ...], set[str]] = {
    ("dataset",): {"synthetic_1d", "synthetic_nd", "digits", "mnist1d", "torchvision", "npz"},
    ("model",): {"mlp", "cnn", "resnet"},
    ("analysis", "deltas"): {"auto", "list", "inverse", "grid"},
    ("analysis", "layers"): {"all", "list"},
    ("analysis", "checkpoints"): {"every", "list"},
}


class ExperimentSpec(SpecModel):
    """A whole experiment: data, network, training, analysis and an optional one-field sweep."""

    name: PlainText = Field("experiment", min_length=1, max_length=200)
    dataset: DatasetSpec = Field(default_factory=Synthetic1DDataset)
    model: ModelSpec = Field(default_factory=MLPModel)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    sweep: SweepSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.sweep is not None:
            self._check_sweep(self.sweep)
            return self  # every run spec gets the checks below
        kind = self.dataset.kind
        if self.training.loss == "cross_entropy" and kind in REGRESSION_DATASETS:
            field_error(
                ("training", "loss"),
                f"cross_entropy needs class labels; dataset '{kind}' is a regression target",
                self.training.loss,
            )
        if self.model.kind != "mlp" and kind not in IMAGE_DATASETS | {"npz"}:
            field_error(
                ("model", "kind"),
                f"'{self.model.kind}' needs an image dataset (digits, mnist, fashion_mnist, "
                f"cifar10 or npz with x of shape (n, c, h, w)); '{kind}' is not",
                self.model.kind,
            )
        if isinstance(self.analysis.checkpoints, list):
            late = [e for e in self.analysis.checkpoints if e > self.training.epochs]
            if late:
                field_error(
                    ("analysis", "checkpoints"),
                    f"epochs {late} are after the last epoch ({self.training.epochs})",
                    late,
                )
        from dfp_engine.layers import capture_names, resolve_layer

        names = capture_names(self.model)
        requested = self.analysis.layers if isinstance(self.analysis.layers, list) else []
        for i, layer in enumerate(requested):
            try:
                resolve_layer(layer, names)
            except ValueError as exc:
                field_error(("analysis", "layers", i), str(exc), layer)
        if self.analysis.summary_layer is not None:
            try:
                resolve_layer(self.analysis.summary_layer, names)
            except ValueError as exc:
                field_error(("analysis", "summary_layer"), str(exc), self.analysis.summary_layer)
        return self

    def _check_sweep(self, sweep: SweepSpec) -> None:
        if sweep.field.split(".")[0] in _UNSWEEPABLE:
            field_error(("sweep", "field"), f"'{sweep.field}' cannot be swept", sweep.field)
        for i, value in enumerate(sweep.values):
            try:
                self.run_spec(value)
            except ValidationError as exc:
                field_error(
                    ("sweep", "values", i),
                    f"{sweep.field} = {value!r} is invalid: {describe_validation_error(exc)}",
                    value,
                )
            except ValueError as exc:
                field_error(("sweep", "field"), str(exc), sweep.field)

    def run_values(self) -> list[Any]:
        """The sweep values, or [None] for a single run."""
        return list(self.sweep.values) if self.sweep is not None else [None]

    def run_spec(self, value: Any) -> ExperimentSpec:
        """The single-run spec for one sweep value (the spec itself when not sweeping)."""
        if self.sweep is None:
            return self
        data = self.model_dump(mode="json")
        data["sweep"] = None
        node = data
        *parents, leaf = self.sweep.field.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ValueError(f"'{self.sweep.field}' names no spec field")
            node = node[key]
        if leaf not in node:
            raise ValueError(f"'{self.sweep.field}' names no spec field")
        node[leaf] = value
        return ExperimentSpec.model_validate(data)

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal specs hash equal."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def user_location(loc: tuple[int | str, ...]) -> list[int | str]:
    """The field names and indexes of a pydantic error location, union tags and type markers
    dropped: what a user wrote in the spec."""
    fields: list[int | str] = []
    tag_seen = False  # at most one tag follows each union location
    for segment in loc:
        if isinstance(segment, str) and ("[" in segment or "(" in segment):
            continue  # validator or type markers such as 'function-after[...]' or 'list[int]'
        if not tag_seen and segment in _TAGGED_UNIONS.get(tuple(fields), set()):
            tag_seen = True
            continue
        tag_seen = False
        fields.append(segment)
    return fields


def error_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the user wrote it: `analysis.layers[0]`, union tags dropped."""
    parts: list[str] = []
    for segment in user_location(loc):
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append(("." if parts else "") + segment)
    return "".join(parts)


def describe_validation_error(exc: ValidationError) -> str:
    """One line for a person: `field.path: reason` (plus how many further problems there are)."""
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    path = error_path(tuple(first["loc"]))
    line = f"{path}: {message}" if path else message
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


def parse_override(text: str) -> tuple[str, Any]:
    """'training.epochs=50' -> ('training.epochs', 50); the value is read as YAML."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override '{text}' must look like field.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"override '{text}': the value is not valid YAML ({exc})") from None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the raw spec mapping with `field.path=value` overrides set (parents created)."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for text in overrides:
        key, value = parse_override(text)
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override '{text}': '{part}' is not a section")
            node = child
        node[leaf] = value
    return out


def read_spec_data(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML or JSON spec file; ValueError with a one-line reason."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"spec file '{p}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read spec file '{p}': {exc}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first = str(exc).replace("\n", " ")
        raise ValueError(
            f"spec file '{p}' is not valid {p.suffix[1:] or 'YAML'}: {first}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"spec file '{p}' must hold a mapping of spec fields")
    return data


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read a spec from a YAML or JSON file (pydantic's ValidationError for invalid fields)."""
    data = read_spec_data(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return ExperimentSpec.model_validate(data)


def spec_json_schema() -> dict[str, Any]:
    """The JSON schema of ExperimentSpec."""
    schema: dict[str, Any] = ExperimentSpec.model_json_schema()
    return schema
