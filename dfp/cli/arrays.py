"""Reading feature and label arrays from .npy, .npz and .csv files for `dfp analyze`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dfp.cli.errors import fail

# Keys tried, in order, when an .npz holds several arrays.
NPZ_KEYS = {"features": ("features", "x", "z", "inputs"), "labels": ("labels", "y", "targets")}


def load_array(path: Path, role: str, *, mapped: bool = False) -> np.ndarray:
    """Load one array; `role` ('features' or 'labels') picks the key in a multi-array .npz.

    With `mapped`, an .npy is memory-mapped read-only: it is read in place, never copied whole.
    """
    if not path.exists():
        fail(f"{role} file '{path}' does not exist")
    if path.is_dir():
        fail(f"{role} file '{path}' is a directory")
    if path.stat().st_size == 0:
        fail(f"{role} file '{path}' is empty")
    suffix = path.suffix.lower()
    array: np.ndarray
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False, mmap_mode="r" if mapped else None)
        elif suffix == ".npz":
            array = _from_npz(path, role)
        elif suffix == ".csv":
            array = _from_csv(path, role)
        else:
            fail(f"{role} file '{path}' must end in .npy, .npz or .csv")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        fail(f"cannot read {role} file '{path}': {exc}")
    if array.size == 0:
        fail(f"{role} file '{path}' holds an empty array")
    if array.dtype.kind not in "biuf":
        fail(f"{role} file '{path}' holds {array.dtype} data; expected numbers")
    return array


def _from_npz(path: Path, role: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as bundle:
        keys = list(bundle.keys())
        if len(keys) == 1:
            return np.asarray(bundle[keys[0]])
        for key in NPZ_KEYS[role]:
            if key in bundle:
                return np.asarray(bundle[key])
    fail(f"{role} file '{path}' holds arrays {keys}; name one {' or '.join(NPZ_KEYS[role])}")


def _from_csv(path: Path, role: str) -> np.ndarray:
    rows = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r]
    if rows and not _is_numeric_row(rows[0]):
        rows = rows[1:]  # a header line
    if not rows:
        fail(f"{role} file '{path}' has no data rows")
    cells = [r.split(",") for r in rows]
    width = len(cells[0])
    for number, row in enumerate(cells, start=1):
        if len(row) != width:
            fail(
                f"{role} file '{path}': data row {number} has {len(row)} columns, expected {width}"
            )
    flat = [c.strip() for row in cells for c in row]
    try:
        array = np.array([int(c) for c in flat], dtype=np.int64)
    except ValueError:
        try:
            array = np.array([float(c) for c in flat], dtype=np.float64)
        except ValueError as exc:
            fail(f"{role} file '{path}': {exc}")
    array = array.reshape(len(cells), width)
    return array[:, 0] if width == 1 else array


def _is_numeric_row(row: str) -> bool:
    try:
        [float(c) for c in row.split(",")]
    except ValueError:
        return False
    return True
