"""The whole experiment spec, its optional one-field sweep and the run specs it expands to."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from dfp_engine.spec.analysis import AnalysisSpec
from dfp_engine.spec.base import MAX_SEED, PlainText, SpecModel, field_error
from dfp_engine.spec.datasets import (
    IMAGE_DATASETS,
    REGRESSION_DATASETS,
    DatasetSpec,
    Synthetic1DDataset,
)
from dfp_engine.spec.errors import describe_validation_error
from dfp_engine.spec.models import (
    MLPModel,
    ModelSpec,
    capture_names,
    resolve_layer,
    resolve_layers,
)
from dfp_engine.spec.training import TrainingSpec

MAX_SWEEP_VALUE_DEPTH = 8  # nesting of one sweep value (a list of widths is depth 1)
MAX_SWEEP_VALUE_NODES = 10_000  # numbers, strings, lists and mappings over all sweep values


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


class ExperimentSpec(SpecModel):
    """A whole experiment: data, network, training, analysis and an optional one-field sweep."""

    name: PlainText = Field("experiment", min_length=1, max_length=200)
    dataset: DatasetSpec = Field(default_factory=Synthetic1DDataset)
    model: ModelSpec = Field(default_factory=MLPModel)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    sweep: SweepSpec | None = None
    repeats: int = Field(
        1,
        ge=1,
        le=1000,
        description="Runs per sweep value, with training.seed, seed + 1, … (verdicts across "
        "seeds).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.training.seed + self.repeats - 1 > MAX_SEED:
            field_error(
                ("repeats",),
                f"training.seed + repeats - 1 must be at most {MAX_SEED}",
                self.repeats,
            )
        if self.sweep is not None:
            self._check_sweep(self.sweep)
            return self  # every run spec gets the checks below
        kind = self.dataset.kind
        if self.analysis.fourier:
            self._check_fourier()
        if self.training.loss == "cross_entropy" and kind in REGRESSION_DATASETS:
            field_error(
                ("training", "loss"),
                f"cross_entropy needs class labels; dataset '{kind}' is a regression target",
                self.training.loss,
            )
        # A plugin checks its own inputs when it builds (it may take vectors or images).
        if self.model.kind not in ("mlp", "plugin") and kind not in IMAGE_DATASETS | {
            "npz",
            "uploaded",
        }:
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

    def _check_fourier(self) -> None:
        data = self.dataset
        if data.kind not in REGRESSION_DATASETS | {"npz"}:
            field_error(
                ("analysis", "fourier"),
                f"needs a regression target on vector inputs (synthetic_1d, synthetic_nd or "
                f"npz); '{data.kind}' has class labels",
                True,
            )
        direction = self.analysis.fourier_direction
        dim = 1 if data.kind == "synthetic_1d" else getattr(data, "dim", None)
        if direction is not None and dim is not None and len(direction) != dim:
            field_error(
                ("analysis", "fourier_direction"),
                f"has {len(direction)} components but the inputs have {dim}",
                direction,
            )

    def _check_sweep(self, sweep: SweepSpec) -> None:
        if sweep.field.split(".")[0] in _UNSWEEPABLE:
            field_error(("sweep", "field"), f"'{sweep.field}' cannot be swept", sweep.field)
        _ = self.run_specs  # validates every run spec; they stay for everyone who runs them

    @cached_property
    def run_specs(self) -> tuple[ExperimentSpec, ...]:
        """The single-run spec of every run (each sweep value `repeats` times, with its seed),
        in order, built once per spec."""
        if self.sweep is None:
            values: tuple[ExperimentSpec, ...] = (self,)
        else:
            values = tuple(self._sweep_run(i, value) for i, value in enumerate(self.sweep.values))
        if self.repeats == 1:
            return values
        return tuple(_seeded(run, repeat) for run in values for repeat in range(self.repeats))

    def _sweep_run(self, i: int, value: Any) -> ExperimentSpec:
        """Run spec `i`; a bad value or field is a validation error at its place in the spec."""
        assert self.sweep is not None
        try:
            return self.run_spec(value)
        except ValidationError as exc:
            field_error(
                ("sweep", "values", i),
                f"{self.sweep.field} = {value!r} is invalid: {describe_validation_error(exc)}",
                value,
            )
        except ValueError as exc:
            field_error(("sweep", "field"), str(exc), self.sweep.field)

    def run_values(self) -> list[Any]:
        """The sweep value of every run ([None] for a single run), each `repeats` times."""
        values = list(self.sweep.values) if self.sweep is not None else [None]
        return [value for value in values for _ in range(self.repeats)]

    def run_spec(self, value: Any) -> ExperimentSpec:
        """The single-run spec for one sweep value (the spec itself when not sweeping).

        Builds and validates a new spec: `run_specs` holds them all, built once."""
        if self.sweep is None:
            return self
        # Only the spec's own fields: a subclass (the API's request body) adds others.
        data = self.model_dump(mode="json", include=set(ExperimentSpec.model_fields))
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

    def analysis_layers(self) -> list[str]:
        """Canonical names of the layers a run analyses (the input too when filtering-testing)."""
        layers = resolve_layers(self.analysis.layers, capture_names(self.model))
        if self.analysis.filtering_test and "input" not in layers:
            layers.insert(0, "input")
        return layers

    def summary_layer(self) -> str:
        """The layer summarised across sweep runs: the spec's choice, else the deepest analysed."""
        if self.analysis.summary_layer is not None:
            return resolve_layer(self.analysis.summary_layer, capture_names(self.model))
        return self.analysis_layers()[-1]

    def summary_layers(self) -> list[str]:
        """The summary layer of each run, in run order."""
        return [run.summary_layer() for run in self.run_specs]

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal specs hash equal."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _seeded(run: ExperimentSpec, repeat: int) -> ExperimentSpec:
    """Repeat `repeat` of a run spec: training.seed + repeat, a single run."""
    data = run.model_dump(mode="json", include=set(ExperimentSpec.model_fields))
    data["training"]["seed"] = run.training.seed + repeat
    data["repeats"] = 1
    return ExperimentSpec.model_validate(data)


def spec_json_schema() -> dict[str, Any]:
    """The JSON schema of ExperimentSpec."""
    schema: dict[str, Any] = ExperimentSpec.model_json_schema()
    return schema
