"""The server's limits on what one experiment may ask for; exceeding one is a 422 naming it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfp.errors import InvalidRequestError, LimitExceededError
from dfp.settings import Settings
from dfp_engine.plugins import installed_names
from dfp_engine.spec import (
    CNNModel,
    DigitsDataset,
    ExperimentSpec,
    MLPModel,
    MNIST1DDataset,
    NpzDataset,
    PluginModel,
    ResNetModel,
    Synthetic1DDataset,
    SyntheticNDDataset,
    TorchvisionDataset,
)

# Training-set sizes of the fixed datasets (used when no max_train_samples caps them).
KNOWN_TRAIN_SIZES = {"digits": 1797, "mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}


@dataclass(frozen=True)
class Measure:
    """One quantity a limit applies to: the spec field it comes from and its value."""

    limit: str
    field: str
    value: int


def measures(spec: ExperimentSpec) -> list[Measure]:
    """Everything in one run spec that a limit applies to."""
    out = [
        Measure("max_epochs", "training.epochs", spec.training.epochs),
        Measure("max_samples", "analysis.n_samples", spec.analysis.n_samples),
    ]
    dataset = spec.dataset
    if dataset.max_train_samples is not None:
        out.append(Measure("max_samples", "dataset.max_train_samples", dataset.max_train_samples))
    elif isinstance(dataset, Synthetic1DDataset):
        out.append(Measure("max_samples", "dataset.n_points", dataset.n_points))
    elif isinstance(dataset, SyntheticNDDataset | MNIST1DDataset):
        out.append(Measure("max_samples", "dataset.n_samples", dataset.n_samples))
    elif isinstance(dataset, DigitsDataset | TorchvisionDataset):
        size = KNOWN_TRAIN_SIZES[dataset.kind]
        out.append(Measure("max_samples", "dataset.max_train_samples (unset: full set)", size))

    model = spec.model
    if isinstance(model, MLPModel):
        out.append(Measure("max_depth", "model.depth", model.depth))
        out.append(Measure("max_width", "model.width", max(model.widths())))
    elif isinstance(model, CNNModel):
        convs = len(model.channels) * model.convs_per_stage
        out.append(Measure("max_depth", "model.channels x model.convs_per_stage", convs))
        out.append(Measure("max_width", "model.channels", max(model.channels)))
        if model.head_widths:
            out.append(Measure("max_width", "model.head_widths", max(model.head_widths)))
    elif isinstance(model, ResNetModel):
        out.append(Measure("max_width", "model.head_widths", max(model.head_widths)))
        out.append(Measure("max_width", "model.base_width", model.base_width * 8))
    return out


def check_model_plugin(spec: ExperimentSpec, settings: Settings) -> None:
    """A plugin model must be one the operator allows (DFP_MODEL_PLUGINS; empty: any installed)."""
    for run_spec in spec.run_specs:
        model = run_spec.model
        if not isinstance(model, PluginModel) or not settings.model_plugins:
            continue
        allowed = sorted(set(settings.model_plugins) & set(installed_names()))
        if model.name not in allowed:
            raise InvalidRequestError(
                f"model.name: model plugin '{model.name}' is not allowed on this server "
                f"(available: {', '.join(allowed) or 'none'}; DFP_MODEL_PLUGINS)",
                details={"field": "model.name", "available": allowed},
            )


def check_spec_limits(spec: ExperimentSpec, settings: Settings) -> None:
    """Raise LimitExceededError for the first limit a run of `spec` exceeds."""
    values = spec.run_values()
    if len(values) > settings.max_sweep_size:
        raise _exceeded(Measure("max_sweep_size", "sweep.values", len(values)), settings, None)
    for index, (value, run_spec) in enumerate(zip(values, spec.run_specs, strict=True)):
        for measure in measures(run_spec):
            maximum = getattr(settings, measure.limit)
            if measure.value > maximum:
                context = None if spec.sweep is None else (index, spec.sweep.field, value)
                raise _exceeded(measure, settings, context)
        check_dataset_path(run_spec, settings)


def _dataset_file(spec: ExperimentSpec) -> tuple[str, str] | None:
    """The spec field naming a file or folder on the server, and its value."""
    dataset = spec.dataset
    if isinstance(dataset, NpzDataset):
        return "path", dataset.path
    if isinstance(dataset, TorchvisionDataset):
        return "root", dataset.root
    return None


def resolve_dataset_path(spec: ExperimentSpec, settings: Settings) -> ExperimentSpec:
    """A relative dataset path means one inside the server's first dataset folder.

    Workers and the API run in different directories, so the stored spec names the file by
    its absolute path: every worker then reads the same file."""
    named = _dataset_file(spec)
    if named is None or Path(named[1]).expanduser().is_absolute():
        return spec
    root = settings.resolved_dataset_roots()[0].expanduser().resolve()
    data = spec.model_dump(mode="json")
    data["dataset"][named[0]] = str(root / named[1])
    return ExperimentSpec.model_validate(data)


def check_dataset_path(spec: ExperimentSpec, settings: Settings) -> None:
    """Files a spec names must lie inside the server's dataset folders."""
    named = _dataset_file(spec)
    if named is None:
        return
    field, raw = f"dataset.{named[0]}", named[1]
    roots = [root.expanduser().resolve() for root in settings.resolved_dataset_roots()]
    path = Path(raw).expanduser()
    if not path.is_absolute():  # a swept path: each value must say where it is
        raise InvalidRequestError(
            f"{field}: '{raw}' must be an absolute path on the server", details={"field": field}
        )
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise InvalidRequestError(
            f"{field}: '{raw}' is outside the server's dataset folders ({allowed}; "
            "DFP_DATASET_ROOTS)",
            details={"field": field, "allowed": [str(root) for root in roots]},
        )


def _exceeded(
    measure: Measure, settings: Settings, sweep: tuple[int, str, Any] | None
) -> LimitExceededError:
    maximum = getattr(settings, measure.limit)
    prefix = "" if sweep is None else f"run {sweep[0]} ({sweep[1]} = {sweep[2]!r}): "
    message = (
        f"{prefix}{measure.field} = {measure.value} exceeds the limit {measure.limit} = "
        f"{maximum} (DFP_{measure.limit.upper()})"
    )
    details = {
        "limit": measure.limit,
        "field": measure.field,
        "value": measure.value,
        "maximum": maximum,
    }
    return LimitExceededError(message, details=details)
