"""Per-layer curves stored compactly: float64 arrays in one binary column, the rest as JSON.

A 100-δ layer's six curves take 4.8 kB as doubles and decode in microseconds; as JSON they
are twice the size and parsing them dominated the time to serve a result. Values round-trip
exactly; a missing value inside a curve (None) is stored as NaN and read back as None.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

from dfp_engine.results import LayerAnalysis

# LayerAnalysis fields kept in their own columns.
LAYER_COLUMNS = frozenset(
    {"layer", "dim", "normalization", "peak_inverse_delta", "mean_inverse_delta"}
)


def encode_layer(layer: LayerAnalysis) -> dict[str, Any]:
    """Column values for one LayerAnalysis: scalar columns, `arrays` (bytes) and `curves`."""
    layout: list[list[Any]] = []
    extra: dict[str, Any] = {}
    values = array("d")
    for name, value in layer.model_dump(exclude=set(LAYER_COLUMNS)).items():
        if isinstance(value, list):
            layout.append([name, len(value)])
            values.extend(math.nan if v is None else float(v) for v in value)
        elif value is None:
            layout.append([name, None])
        else:
            extra[name] = value
    return {
        "layer": layer.layer,
        "dim": layer.dim,
        "normalization": layer.normalization,
        "peak_inverse_delta": _finite(layer.peak_inverse_delta),
        "mean_inverse_delta": _finite(layer.mean_inverse_delta),
        "arrays": _little_endian(values).tobytes(),
        "curves": {"layout": layout, "extra": extra},
    }


def decode_layer(
    layer: str,
    dim: int,
    normalization: str,
    peak_inverse_delta: float | None,
    mean_inverse_delta: float | None,
    arrays: bytes,
    curves: dict[str, Any],
) -> dict[str, Any]:
    """The fields of the LayerAnalysis that `encode_layer` stored, as plain data."""
    values = array("d")
    values.frombytes(arrays)
    values = _little_endian(values)
    fields: dict[str, Any] = {
        "layer": layer,
        "dim": dim,
        "normalization": normalization,
        "peak_inverse_delta": peak_inverse_delta,
        "mean_inverse_delta": mean_inverse_delta,
        **curves.get("extra", {}),
    }
    offset = 0
    for name, length in curves["layout"]:
        if length is None:
            fields[name] = None
            continue
        chunk = values[offset : offset + length].tolist()
        offset += length
        fields[name] = [None if v != v else v for v in chunk] if _has_nan(chunk) else chunk
    return fields


def _has_nan(values: list[float]) -> bool:
    total = sum(values)  # NaN if any value is NaN (or inf meets -inf): then look closer
    return total != total and any(map(math.isnan, values))


def _little_endian(values: array[float]) -> array[float]:
    import sys

    if sys.byteorder == "big":  # pragma: no cover - every platform we run on is little-endian
        values = array("d", values)
        values.byteswap()
    return values


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
