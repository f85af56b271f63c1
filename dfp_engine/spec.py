"""The experiment spec: one pydantic model family shared by the CLI, the API and the worker."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dfp_engine.deltas import validate_deltas
from dfp_engine.normalization import NormalizationMode

Activation = Literal["tanh", "relu", "gelu", "sigmoid", "silu", "elu", "identity"]
Initialization = Literal[
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal"
]
InputScaling = Literal["none", "standardize", "minmax", "max_abs"]


class SpecModel(BaseModel):
    """Base for every spec part: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- datasets


class DatasetCommon(SpecModel):
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share held out for testing.")
    scaling: InputScaling = Field("none", description="Input scaling, fitted on the train split.")
    max_train_samples: int | None = Field(
        None, ge=2, description="Seeded subset of the train split."
    )
    seed: int = Field(0, ge=0, description="Seed for generation, splitting and subsetting.")


class Synthetic1DDataset(DatasetCommon):
    kind: Literal["synthetic_1d"] = "synthetic_1d"
    expression: str = Field(
        "cos(3*x) + cos(5*x)",
        max_length=500,
        description="Target y(x): numbers, x, pi, e, + - * / ** and whitelisted functions.",
    )
    n_points: int = Field(61, ge=2, le=1_000_000)
    interval: tuple[float, float] = (-math.pi, math.pi)
    sampling: Literal["grid", "uniform"] = "grid"
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_interval(self) -> Synthetic1DDataset:
        lo, hi = self.interval
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError("interval must be two finite numbers with low < high")
        return self


class SyntheticNDDataset(DatasetCommon):
    kind: Literal["synthetic_nd"] = "synthetic_nd"
    family: Literal["cosine_sum", "radial_cosine", "gaussian_bumps", "parity"] = "cosine_sum"
    dim: int = Field(2, ge=1, le=10_000)
    n_samples: int = Field(1000, ge=2, le=1_000_000)
    frequency: float = Field(1.0, gt=0.0, le=1_000.0)


class DigitsDataset(DatasetCommon):
    """scikit-learn's bundled 8x8 handwritten digits (1 797 images, 10 classes)."""

    kind: Literal["digits"] = "digits"


class MNIST1DDataset(DatasetCommon):
    """MNIST-1D generated locally by the mnist1d package's generator."""

    kind: Literal["mnist1d"] = "mnist1d"
    n_samples: int = Field(4000, ge=20, le=200_000)


class TorchvisionDataset(DatasetCommon):
    """MNIST / Fashion-MNIST / CIFAR-10 read from a local folder in torchvision's layout."""

    kind: Literal["mnist", "fashion_mnist", "cifar10"]
    root: str = Field(..., min_length=1, max_length=4096)
    allow_download: bool = False
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Unused: the official split.")


class NpzDataset(DatasetCommon):
    """A user file holding arrays `x` (n, ...) and `y` (n,) or (n, c)."""

    kind: Literal["npz"] = "npz"
    path: str = Field(..., min_length=1, max_length=4096)


DatasetSpec = Annotated[
    Synthetic1DDataset
    | SyntheticNDDataset
    | DigitsDataset
    | MNIST1DDataset
    | TorchvisionDataset
    | NpzDataset,
    Field(discriminator="kind"),
]


# ------------------------------------------------------------------ models


class MLPModel(SpecModel):
    kind: Literal["mlp"] = "mlp"
    depth: int = Field(3, ge=1, le=1000, description="Number of hidden layers.")
    width: int | list[int] = Field(50, description="One width for all, or one per hidden layer.")
    activation: Activation = "tanh"
    init: Initialization = "default"
    init_std: float | None = Field(None, gt=0.0, description="Std for init='normal'.")
    bias: bool = True

    @field_validator("width")
    @classmethod
    def _positive_widths(cls, v: int | list[int]) -> int | list[int]:
        widths = [v] if isinstance(v, int) else v
        if not widths or any(w < 1 for w in widths):
            raise ValueError("widths must be positive integers")
        return v

    @model_validator(mode="after")
    def _width_list_matches_depth(self) -> MLPModel:
        if isinstance(self.width, list) and len(self.width) != self.depth:
            raise ValueError(f"width lists {len(self.width)} layers but depth is {self.depth}")
        return self

    def widths(self) -> list[int]:
        return [self.width] * self.depth if isinstance(self.width, int) else list(self.width)


class CNNModel(SpecModel):
    """A small VGG-style stack: per stage `convs_per_stage` 3x3 convs, then 2x2 max-pool."""

    kind: Literal["cnn"] = "cnn"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    convs_per_stage: int = Field(2, ge=1, le=16)
    head_widths: list[int] = Field(default_factory=lambda: [256, 128])
    activation: Activation = "relu"
    batch_norm: bool = False
    init: Initialization = "default"


class ResNetModel(SpecModel):
    """CIFAR ResNet18; `variant` k drops the k deepest residual stages, the head stays the same."""

    kind: Literal["resnet"] = "resnet"
    variant: int = Field(0, ge=0, le=3)
    base_width: int = Field(64, ge=1, le=512, description="Channels of the first stage.")
    blocks_per_stage: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=4)
    head_widths: list[int] = Field(default_factory=lambda: [1024, 1024], min_length=1)
    activation: Activation = "relu"


ModelSpec = Annotated[MLPModel | CNNModel | ResNetModel, Field(discriminator="kind")]


# ---------------------------------------------------------------- training


class LRSchedule(SpecModel):
    """Step schedule: multiply the learning rate by `gamma` at each milestone epoch."""

    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0.0, le=1.0)


class TrainingSpec(SpecModel):
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule)
    batch_size: int | None = Field(None, ge=1, description="null means full batch.")
    epochs: int = Field(100, ge=1, le=10_000_000)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    loss: Literal["mse", "cross_entropy"] = "mse"
    target_loss: float | None = Field(None, gt=0.0, description="Train loss for time-to-target.")
    stop_at_target: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainingSpec:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs optimizer 'sgd' with momentum > 0")
        return self


# ---------------------------------------------------------------- analysis


class EveryEpochs(SpecModel):
    every: int = Field(..., ge=1)


class InverseDeltas(SpecModel):
    inverse: list[float] = Field(..., min_length=2, max_length=1000)

    @field_validator("inverse")
    @classmethod
    def _valid(cls, v: list[float]) -> list[float]:
        validate_deltas(v, name="inverse deltas")
        return v


class AutoDeltas(SpecModel):
    auto: int = Field(..., ge=2, le=1000, description="Number of automatic δ values.")


class AnalysisSpec(SpecModel):
    layers: Literal["all"] | list[str] = Field(
        "all", description="'all' (input plus every hidden layer) or names like 'hidden.2', '-3'."
    )
    checkpoints: EveryEpochs | list[int] = Field(
        default_factory=lambda: EveryEpochs(every=10),
        description="Epochs to analyse; 0 and the last epoch are always included.",
    )
    deltas: Literal["auto"] | list[float] | InverseDeltas | AutoDeltas = Field(
        "auto", description="'auto', a list of δ, {inverse: [1/δ…]} or {auto: m}."
    )
    normalize: NormalizationMode = "max_abs_per_dim"
    filtering_test: bool = Field(False, description="Also compute e_low/e_high (METHOD §4).")
    n_samples: int = Field(2000, ge=2, le=1_000_000, description="Seeded analysis subset size.")
    summary_layer: str | None = Field(None, description="Layer for the sweep summary.")
    block_size: int | None = Field(None, ge=1)

    @field_validator("deltas")
    @classmethod
    def _valid_deltas(cls, v: Any) -> Any:
        if isinstance(v, list):
            validate_deltas(v, name="deltas")
        return v

    @field_validator("checkpoints")
    @classmethod
    def _valid_checkpoints(cls, v: Any) -> Any:
        if isinstance(v, list) and any((not isinstance(e, int)) or e < 0 for e in v):
            raise ValueError("checkpoint epochs must be non-negative integers")
        return v


# ------------------------------------------------------------------- sweep


class SweepSpec(SpecModel):
    field: str = Field(
        ..., min_length=1, max_length=200, description="Dotted path, e.g. model.depth."
    )
    values: list[Any] = Field(..., min_length=1, max_length=1000)


class ExperimentSpec(SpecModel):
    """A whole experiment: data, network, training, analysis and an optional one-field sweep."""

    name: str = Field("experiment", min_length=1, max_length=200)
    dataset: DatasetSpec = Field(default_factory=Synthetic1DDataset)
    model: ModelSpec = Field(default_factory=MLPModel)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    sweep: SweepSpec | None = None

    @model_validator(mode="after")
    def _sweep_values_valid(self) -> ExperimentSpec:
        if self.sweep is not None:
            if self.sweep.field.split(".")[0] in {"sweep", "name"}:
                raise ValueError(f"sweep.field '{self.sweep.field}' cannot be swept")
            for value in self.sweep.values:
                self.run_spec(value)
        return self

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
                raise ValueError(f"sweep.field '{self.sweep.field}' names no spec field")
            node = node[key]
        if leaf not in node:
            raise ValueError(f"sweep.field '{self.sweep.field}' names no spec field")
        node[leaf] = value
        return ExperimentSpec.model_validate(data)

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal specs hash equal."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read a spec from a YAML or JSON file."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
    return ExperimentSpec.model_validate(data if data is not None else {})


def spec_json_schema() -> dict[str, Any]:
    """The JSON schema of ExperimentSpec."""
    return ExperimentSpec.model_json_schema()
