"""Spec files and `field.path=value` overrides: from a YAML or JSON file to an ExperimentSpec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfp_engine.spec.experiment import ExperimentSpec


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
