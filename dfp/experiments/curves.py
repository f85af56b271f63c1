"""Curves and histories stored compactly: float64 arrays in a binary column, the rest as JSON.

A 100-δ layer's six curves take 4.8 kB as doubles and decode in microseconds; as JSON they
are twice the size and parsing them dominated the time to serve a result. Values round-trip
exactly; a missing value inside a curve (None) is stored as NaN and read back as None.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

from dfp_engine.results import Checkpoint, HistoryPoint, LayerAnalysis

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


def checkpoint_bytes(checkpoint: Checkpoint) -> int:
    """What a checkpoint's curves take in storage: eight bytes per value (see `encode_layer`)."""
    return sum(
        8 * len(value)
        for layer in checkpoint.layers
        for name, value in layer
        if isinstance(value, list) and name not in LAYER_COLUMNS
    )


def history_bytes(history: Sequence[HistoryPoint]) -> int:
    """What a loss history takes in storage (see `encode_table`)."""
    return 8 * len(history) * len(HistoryPoint.model_fields)


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


def encode_table(rows: list[dict[str, Any]]) -> tuple[bytes, list[list[str]]]:
    """Rows of numbers (a loss history) as float64 columns, plus each column's name and type.

    Missing values (None, or a diverged loss) are stored as NaN and read back as None."""
    names = list(rows[0]) if rows else []
    kinds = [_kind([row[name] for row in rows]) for name in names]
    values = array("d")
    for name in names:
        values.extend(math.nan if row[name] is None else float(row[name]) for row in rows)
    return _little_endian(values).tobytes(), [[n, k] for n, k in zip(names, kinds, strict=True)]


def decode_table(data: bytes, layout: list[list[str]]) -> list[dict[str, Any]]:
    """The rows that `encode_table` stored."""
    values = array("d")
    values.frombytes(data)
    values = _little_endian(values)
    if not layout:
        return []
    n = len(values) // len(layout)
    columns = []
    for i, (_, kind) in enumerate(layout):
        column: list[Any] = values[i * n : (i + 1) * n].tolist()
        if _has_nan(column):
            column = [None if v != v else v for v in column]
        if kind == "int":
            column = [None if v is None else int(v) for v in column]
        columns.append(column)
    names = [name for name, _ in layout]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def last_value(data: bytes, layout: list[list[str]], name: str) -> float | None:
    """The last row's `name` of a table `encode_table` stored, without decoding the rest."""
    names = [column for column, _ in layout]
    rows = len(data) // (8 * len(names)) if names else 0
    if name not in names or rows == 0:
        return None
    at = 8 * ((names.index(name) + 1) * rows - 1)  # the column's last value
    value = array("d")
    value.frombytes(data[at : at + 8])
    (number,) = _little_endian(value)
    return None if number != number else number


def _kind(column: list[Any]) -> str:
    return "int" if all(isinstance(v, int) and not isinstance(v, bool) for v in column) else "float"


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
