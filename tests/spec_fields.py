"""Every numeric field of an experiment spec, found by walking the pydantic models, each with a
spec it applies to: hostile-input tests set each one to absurd values and expect the field named.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from dfp_engine.spec import (
    AnalysisSpec,
    CNNModel,
    DigitsDataset,
    MLPModel,
    MNIST1DDataset,
    NpzDataset,
    ResNetModel,
    Synthetic1DDataset,
    SyntheticNDDataset,
    TorchvisionDataset,
    TrainingSpec,
)

Shape = Literal["scalar", "list", "pair"]

# (section, model, the part of a spec that selects it)
SECTIONS: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
    ("dataset", Synthetic1DDataset, {"dataset": {"kind": "synthetic_1d"}}),
    ("dataset", SyntheticNDDataset, {"dataset": {"kind": "synthetic_nd"}}),
    ("dataset", DigitsDataset, {"dataset": {"kind": "digits"}}),
    ("dataset", MNIST1DDataset, {"dataset": {"kind": "mnist1d"}}),
    ("dataset", TorchvisionDataset, {"dataset": {"kind": "mnist", "root": "data"}}),
    ("dataset", NpzDataset, {"dataset": {"kind": "npz", "path": "data.npz"}}),
    ("model", MLPModel, {"model": {"kind": "mlp"}}),
    ("model", CNNModel, {"model": {"kind": "cnn"}, "dataset": {"kind": "digits"}}),
    ("model", ResNetModel, {"model": {"kind": "resnet"}, "dataset": {"kind": "digits"}}),
    ("training", TrainingSpec, {}),
    ("analysis", AnalysisSpec, {}),
]


@dataclass(frozen=True, eq=False)
class NumericField:
    path: str  # dotted, as errors name it: "training.lr_schedule.gamma"
    number: type  # int or float
    shape: Shape
    base: dict[str, Any]

    def spec_with(self, value: Any, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """A copy of `spec` (default: the base) merged with the base and this field set."""
        out = copy.deepcopy(_merge(spec or {}, self.base))
        node = out
        *parents, leaf = self.path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        # Float lists (δ grids) need two entries; the first is a valid one.
        listed = [0.5, value] if self.number is float else [value]
        node[leaf] = {"scalar": value, "list": listed, "pair": [value, value]}[self.shape]
        return out

    def __str__(self) -> str:
        kind = next(iter(self.base.get(self.path.split(".")[0], {}).values()), "")
        return f"{self.path}{'@' + kind if kind else ''}"


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for key, value in b.items():
        current = out.get(key)
        # Another kind of dataset or model has other fields: it replaces the section.
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and current.get("kind") == value.get("kind", current.get("kind"))
        ):
            out[key] = _merge(current, value)
        else:
            out[key] = value
    return out


def _members(annotation: Any) -> list[Any]:
    """The types an annotation admits, with Optional, unions and Annotated unwrapped."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _numeric(annotation: Any) -> type | None:
    members = _members(annotation)
    if any(m is float for m in members):
        return float
    if any(m is int for m in members):
        return int
    return None


def _walk(model: type[BaseModel], prefix: str, base: dict[str, Any]) -> list[NumericField]:
    found = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}"
        for member in _members(info.annotation):
            origin = get_origin(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                found += _walk(member, path, base)
            elif member in (int, float):
                found.append(NumericField(path, member, "scalar", base))
            elif origin is list and (number := _numeric(get_args(member)[0])):
                found.append(NumericField(path, number, "list", base))
            elif origin is tuple and (number := _numeric(get_args(member)[0])):
                found.append(NumericField(path, number, "pair", base))
    return found


def numeric_fields() -> list[NumericField]:
    """Every numeric field of every spec section (each dataset and model kind separately)."""
    fields: list[NumericField] = []
    for section, model, base in SECTIONS:
        fields += _walk(model, section, base)
    return fields


def absurd_values(number: type) -> list[Any]:
    """Values no numeric field may accept: huge, hugely negative, and (floats) non-finite."""
    if number is int:
        return [10**30, -(10**30)]
    return [1e300, -1e300, float("nan"), float("inf")]
