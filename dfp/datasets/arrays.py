"""Reading uploaded `.npy` / `.npz` files without trusting them.

Nothing in a file is unpickled or executed: headers are parsed by numpy's literal-only header
reader, object dtypes are refused, and every member's declared size (its header's shape times
its item size, and the archive's declared uncompressed size) is checked against the limits and
against each other before a single byte of data is decompressed. The data is then streamed in
bounded chunks, counted, checked for NaN/inf and CRC-checked by `zipfile`, never held whole.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from numpy.lib import format as npy_format

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# The name an .npy upload's single array gets (numpy's own name for unnamed savez arrays).
NPY_ARRAY_NAME = "arr_0"
ARRAY_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
MAX_MEMBERS = 256
MAX_HEADER_BYTES = 10_000
CHUNK_BYTES = 1 << 20
# Numbers only: booleans, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"

FileKind = Literal["npy", "npz"]


class UnsafeArrayError(ValueError):
    """The file is not something dfp will read; the message says what is wrong and where."""


@dataclass(frozen=True)
class ArrayInfo:
    """What an upload's array is, as checked: its name, shape, dtype, and whether it is finite."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    finite: bool
    # Smallest and largest value of an integer array (class labels: how many classes).
    int_range: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "finite": self.finite,
            "int_range": None if self.int_range is None else list(self.int_range),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArrayInfo:
        span = data.get("int_range")
        return cls(
            data["name"],
            tuple(data["shape"]),
            data["dtype"],
            bool(data["finite"]),
            None if span is None else (int(span[0]), int(span[1])),
        )


def file_kind(source: IO[bytes]) -> FileKind:
    """npy or npz, by the file's first bytes (never by its name)."""
    source.seek(0)
    head = source.read(len(NPY_MAGIC))
    source.seek(0)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        return "npz"
    raise UnsafeArrayError("file: neither an .npy array nor an .npz archive (bad magic bytes)")


def inspect_file(source: IO[bytes], *, max_array_bytes: int) -> tuple[FileKind, list[ArrayInfo]]:
    """The kind and checked arrays of an upload (a seekable binary file); UnsafeArrayError says
    why one is refused. `max_array_bytes` bounds the declared size of all arrays, decompressed."""
    kind = file_kind(source)
    if kind == "npy":
        size = source.seek(0, 2)
        source.seek(0)
        return kind, [_inspect_member(source, NPY_ARRAY_NAME, size, max_array_bytes)]
    return kind, _inspect_archive(source, max_array_bytes)


def _inspect_archive(source: IO[bytes], max_array_bytes: int) -> list[ArrayInfo]:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UnsafeArrayError(f"file: not a readable .npz archive ({exc})") from None
    with archive:
        members = archive.infolist()
        if not members:
            raise UnsafeArrayError("file: the .npz archive holds no arrays")
        if len(members) > MAX_MEMBERS:
            raise UnsafeArrayError(f"file: more than {MAX_MEMBERS} arrays in one archive")
        names = [_member_name(info) for info in members]
        if len(set(names)) != len(names):
            raise UnsafeArrayError("file: the archive names an array twice")
        declared = sum(info.file_size for info in members)
        if declared > max_array_bytes:
            raise UnsafeArrayError(
                f"file: the archive declares {declared} bytes of arrays, more than the limit "
                f"{max_array_bytes} (DFP_MAX_DATASET_ARRAY_BYTES)"
            )
        arrays = []
        for info, name in zip(members, names, strict=True):
            try:
                with archive.open(info) as member:
                    arrays.append(_inspect_member(member, name, info.file_size, max_array_bytes))
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                if isinstance(exc, UnsafeArrayError):
                    raise
                raise UnsafeArrayError(f"array '{name}': corrupt or truncated ({exc})") from None
        return arrays


def _member_name(info: zipfile.ZipInfo) -> str:
    if info.is_dir() or not info.filename.endswith(".npy"):
        raise UnsafeArrayError(f"file: archive member '{info.filename[:100]}' is not an .npy array")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise UnsafeArrayError(
            f"file: archive member '{info.filename[:100]}' uses an unsupported compression "
            "(stored and deflate are accepted, as numpy writes them)"
        )
    if info.flag_bits & 0x1:
        raise UnsafeArrayError(f"file: archive member '{info.filename[:100]}' is encrypted")
    name = info.filename.removesuffix(".npy")
    if not re.match(ARRAY_NAME_PATTERN, name):
        raise UnsafeArrayError(
            f"file: array name '{name[:100]}' must be 1-100 letters, digits, '.', '_' or '-'"
        )
    return name


def _inspect_member(
    stream: IO[bytes], name: str, stored_size: int, max_array_bytes: int
) -> ArrayInfo:
    shape, dtype, header_size = _read_header(stream, name)
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_array_bytes:
        raise UnsafeArrayError(
            f"array '{name}': shape {shape} of {dtype} needs {expected} bytes, more than the "
            f"limit {max_array_bytes} (DFP_MAX_DATASET_ARRAY_BYTES)"
        )
    if header_size + expected != stored_size:
        raise UnsafeArrayError(
            f"array '{name}': its header declares shape {shape} of {dtype} ({expected} bytes) "
            f"but the file holds {stored_size - header_size} bytes of data (truncated or padded)"
        )
    finite = True
    low: int | None = None
    high: int | None = None
    seen = 0
    for chunk in _chunks(stream, expected, dtype.itemsize):
        seen += len(chunk)
        if len(chunk) % dtype.itemsize:
            continue  # a partial item: reported as truncated below
        values = np.frombuffer(chunk, dtype=dtype)
        if finite and dtype.kind == "f":
            finite = bool(np.isfinite(values).all())
        elif dtype.kind in "iu" and len(values):
            low = int(values.min()) if low is None else min(low, int(values.min()))
            high = int(values.max()) if high is None else max(high, int(values.max()))
    if seen != expected:
        raise UnsafeArrayError(f"array '{name}': truncated ({seen} of {expected} data bytes)")
    if stream.read(1):
        raise UnsafeArrayError(f"array '{name}': more data than its header declares")
    span = None if low is None or high is None else (low, high)
    return ArrayInfo(name, shape, dtype.str, finite, span)


def _read_header(stream: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(
                stream, max_header_size=MAX_HEADER_BYTES
            )
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = npy_format.read_array_header_2_0(
                stream, max_header_size=MAX_HEADER_BYTES
            )
        else:
            raise UnsafeArrayError(f"array '{name}': unsupported .npy version {version}")
    except UnsafeArrayError:
        raise
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise UnsafeArrayError(f"array '{name}': not a valid .npy header ({exc})") from None
    if dtype.hasobject:
        raise UnsafeArrayError(
            f"array '{name}': object arrays (pickled Python objects) are refused; save numbers only"
        )
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafeArrayError(
            f"array '{name}': dtype {dtype} is not supported (booleans, integers and floats only)"
        )
    return tuple(int(n) for n in shape), dtype, stream.tell()


def _chunks(stream: IO[bytes], total: int, itemsize: int) -> Iterator[bytes]:
    """Up to `total` bytes in reads of whole items (so each chunk can be viewed as an array)."""
    size = max(itemsize, CHUNK_BYTES - CHUNK_BYTES % itemsize)
    remaining = total
    pending = b""
    while remaining > 0:
        data = stream.read(min(size, remaining))
        if not data:
            break
        remaining -= len(data)
        data = pending + data
        cut = len(data) - len(data) % itemsize
        pending = data[cut:]
        if cut:
            yield data[:cut]
    if pending:
        yield pending  # a partial item: the size check after the loop reports the truncation


def load_arrays(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The named arrays of a checked upload (numpy's reader, objects refused)."""
    with path.open("rb") as handle:
        head = handle.read(len(NPY_MAGIC))
    if head.startswith(NPY_MAGIC):
        array = np.load(path, allow_pickle=False)
        return dict.fromkeys(names, array)
    with np.load(path, allow_pickle=False) as bundle:
        return {name: np.asarray(bundle[name]) for name in names}
