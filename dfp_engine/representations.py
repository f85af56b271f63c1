"""Captured representations held within a memory budget; the largest spill to mapped files.

Rows arrive batch by batch for several layers at once. While the batches held in memory stay
within `max_memory` bytes they are kept; past it, the layer holding the most is moved to a raw
file in a private temporary folder and later batches of it are appended there. `finish` gives
each layer as one (n, d) array: in memory, or an `np.memmap` of its file, which the frequency
analysis streams from without loading (dfp_engine.lowpass).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np


class RepresentationStore:
    """Per-layer rows (batch, d), appended in order; in memory up to `max_memory` bytes."""

    def __init__(
        self, max_memory: int, dtype: type[np.floating[Any]], spill_dir: str | Path | None = None
    ) -> None:
        if max_memory < 0:
            raise ValueError(f"max_memory must be non-negative bytes, got {max_memory}")
        self.max_memory = int(max_memory)
        self.dtype = np.dtype(dtype)
        self.spill_dir = spill_dir
        self.chunks: dict[str, list[np.ndarray]] = {}
        self.held: dict[str, int] = {}  # bytes in memory per layer
        self.rows: dict[str, int] = {}
        self.width: dict[str, int] = {}
        self.files: dict[str, IO[bytes]] = {}
        self.folder: Path | None = None

    @property
    def spilled(self) -> list[str]:
        """Layers whose rows live in a file."""
        return list(self.files)

    def append(self, name: str, rows: np.ndarray) -> None:
        """Add a batch of rows (batch, d) of layer `name` (same d every time)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        width = self.width.setdefault(name, rows.shape[1])
        if rows.shape[1] != width:
            raise ValueError(
                f"layer '{name}' gave {rows.shape[1]} features per sample after {width} before"
            )
        self.rows[name] = self.rows.get(name, 0) + rows.shape[0]
        if name in self.files:
            self.files[name].write(rows.data)
            return
        self.chunks.setdefault(name, []).append(rows)
        self.held[name] = self.held.get(name, 0) + rows.nbytes
        while sum(self.held.values()) > self.max_memory and self.held:
            self._spill(max(self.held, key=lambda k: self.held[k]))

    def _spill(self, name: str) -> None:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="dfp-capture-", dir=self.spill_dir))
        handle = (self.folder / f"{len(self.files)}.raw").open("wb")
        for chunk in self.chunks.pop(name):
            handle.write(chunk.data)
        del self.held[name]
        self.files[name] = handle

    def finish(self) -> dict[str, np.ndarray]:
        """Every layer as (n, d): a numpy array, or a read-only memmap for a spilled layer."""
        out: dict[str, np.ndarray] = {}
        for name in self.rows:
            shape = (self.rows[name], self.width[name])
            if name in self.files:
                handle = self.files[name]
                handle.close()
                out[name] = np.memmap(handle.name, dtype=self.dtype, mode="r", shape=shape)
            else:
                # one layer at a time, so the copy adds at most one layer on top of the budget
                out[name] = np.concatenate(self.chunks.pop(name)).reshape(shape)
                self.held.pop(name, None)
        return out

    def close(self) -> None:
        """Delete the spill files (arrays mapping them must no longer be used)."""
        for handle in self.files.values():
            handle.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.chunks.clear()
        self.held.clear()
