"""The analysis section of a spec: layers, checkpoints, δ grid, normalisation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from dfp_engine.deltas import validate_deltas
from dfp_engine.normalization import NormalizationMode
from dfp_engine.spec.base import MAX_EPOCHS, PlainText, SpecModel, field_error

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
        False,
        description="Also compute e_low/e_high of the outputs in input space (docs/method.md §4).",
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
    fourier: bool = Field(
        False,
        description="Compare the spectra of the output and the target at every checkpoint "
        "(1-D regression on a uniform grid: the DFT; otherwise along fourier_direction).",
    )
    # Components are bounded so that normalising the vector never overflows.
    fourier_direction: list[Annotated[float, Field(ge=-1e6, le=1e6)]] | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="Unit-normalised direction of the non-uniform transform (default: the "
        "first input axis).",
    )
    fourier_peak_floor: float = Field(
        0.1, gt=0.0, lt=1.0, description="Target peaks count above this share of the largest."
    )

    @field_validator("fourier_direction")
    @classmethod
    def _nonzero_direction(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not any(abs(c) > 0 for c in v):
            raise ValueError("must not be the zero vector")
        return v

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
