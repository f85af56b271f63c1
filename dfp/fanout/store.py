"""Where a fan-out's parts live, readable by every worker: the operand (part -1), the target
values (part -2) and each block's partial sums (part = block index), as .npy files.

PostgreSQL: ordered 1 MiB rows of `fanout_chunks`, written in the writer's transaction. SQLite
(embedded mode, one machine): files under the data directory. Both stream.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from dfp.datasets.blobs import CHUNK_BYTES
from dfp.settings import Settings
from dfp.storage.database import Database, UnitOfWork
from dfp.storage.models import FanoutChunk

OPERAND_PART = -1
VALUES_PART = -2
# Chunks sent to the database per statement.
_BATCH = 16
_INSERT = insert(FanoutChunk).values(
    fanout_id=bindparam("fanout_id"), part=bindparam("part"), seq=bindparam("seq"),
    data=bindparam("data"),
)  # fmt: skip


class PartStore(Protocol):
    """Stores and hands back the parts of a fan-out, keyed by (fan-out id, part)."""

    def write(self, uow: UnitOfWork, fanout_id: uuid.UUID, part: int, source: Path) -> None:
        """Store the file as part of the unit of work."""

    def write_array(
        self, uow: UnitOfWork, fanout_id: uuid.UUID, part: int, array: np.ndarray
    ) -> None:
        """Store the array (as .npy) as part of the unit of work, straight from its memory."""

    def read_array(self, session: Session, fanout_id: uuid.UUID, part: int) -> np.ndarray:
        """The stored part as an array in memory."""

    def remove(self, uow: UnitOfWork, fanout_id: uuid.UUID) -> None:
        """Remove every part once the unit of work commits."""

    def local_copy(
        self, session: Session, fanout_id: uuid.UUID, part: int
    ) -> contextlib.AbstractContextManager[Path]:
        """A readable local file with the part, for as long as the context lasts."""


class ChunkedPartStore:
    """PostgreSQL: each part as ordered 1 MiB rows, removed with the fan-out."""

    def write(self, uow: UnitOfWork, fanout_id: uuid.UUID, part: int, source: Path) -> None:
        with source.open("rb") as handle:
            seq = 0
            while chunk := handle.read(CHUNK_BYTES):
                row = {"fanout_id": fanout_id, "part": part, "seq": seq, "data": chunk}
                uow.session.execute(_INSERT, row)
                seq += 1

    def write_array(
        self, uow: UnitOfWork, fanout_id: uuid.UUID, part: int, array: np.ndarray
    ) -> None:
        data = np.ascontiguousarray(array).data.cast("B")
        chunks = [npy_header(array)] + [
            data[start : start + CHUNK_BYTES] for start in range(0, len(data), CHUNK_BYTES)
        ]
        for first in range(0, len(chunks), _BATCH):
            rows = [
                {"fanout_id": fanout_id, "part": part, "seq": first + i, "data": bytes(chunk)}
                for i, chunk in enumerate(chunks[first : first + _BATCH])
            ]
            uow.session.execute(_INSERT, rows)

    def read_array(self, session: Session, fanout_id: uuid.UUID, part: int) -> np.ndarray:
        chunks = session.scalars(self._query(fanout_id, part))
        first = next(iter(chunks), None)
        if first is None:
            raise FileNotFoundError(f"fan-out {fanout_id}: part {part} is not stored")
        head = io.BytesIO(first)
        version = np.lib.format.read_magic(head)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(head)
        if fortran:
            raise ValueError(f"fan-out {fanout_id}: part {part} is not in C order")
        out = np.empty(shape, dtype=dtype)
        buffer = out.data.cast("B") if out.size else memoryview(bytearray())
        rest = first[head.tell() :]
        buffer[: len(rest)] = rest
        filled = len(rest)
        for chunk in chunks:
            buffer[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        if filled != len(buffer):
            raise ValueError(f"fan-out {fanout_id}: part {part} is truncated")
        return out

    def _query(self, fanout_id: uuid.UUID, part: int) -> Any:
        return (
            select(FanoutChunk.data)
            .where(FanoutChunk.fanout_id == fanout_id, FanoutChunk.part == part)
            .order_by(FanoutChunk.seq)
            .execution_options(yield_per=8)
        )

    def remove(self, uow: UnitOfWork, fanout_id: uuid.UUID) -> None:
        uow.session.execute(delete(FanoutChunk).where(FanoutChunk.fanout_id == fanout_id))

    @contextmanager
    def local_copy(self, session: Session, fanout_id: uuid.UUID, part: int) -> Iterator[Path]:
        query = self._query(fanout_id, part)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - removed in the finally below
            prefix="dfp-fanout-", suffix=".npy", delete=False
        )
        path = Path(handle.name)
        try:
            with handle:
                written = 0
                for data in session.scalars(query):
                    written += handle.write(data)
            if not written:
                raise FileNotFoundError(f"fan-out {fanout_id}: part {part} is not stored")
            yield path
        finally:
            path.unlink(missing_ok=True)


class DirectoryPartStore:
    """Embedded mode: one folder per fan-out under the data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, fanout_id: uuid.UUID, part: int) -> Path:
        return self.root / str(fanout_id) / f"{part}.npy"

    def write(self, uow: UnitOfWork, fanout_id: uuid.UUID, part: int, source: Path) -> None:
        target = self.path(fanout_id, part)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copyfile(source, partial)
        partial.replace(target)
        uow.after_rollback(lambda: target.unlink(missing_ok=True))

    def write_array(
        self, uow: UnitOfWork, fanout_id: uuid.UUID, part: int, array: np.ndarray
    ) -> None:
        target = self.path(fanout_id, part)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            np.save(out, array)
        partial.replace(target)
        uow.after_rollback(lambda: target.unlink(missing_ok=True))

    def read_array(self, session: Session, fanout_id: uuid.UUID, part: int) -> np.ndarray:
        with self.local_copy(session, fanout_id, part) as path:
            loaded: np.ndarray = np.load(path)
        return loaded

    def remove(self, uow: UnitOfWork, fanout_id: uuid.UUID) -> None:
        folder = self.root / str(fanout_id)
        uow.after_commit(lambda: shutil.rmtree(folder, ignore_errors=True))

    @contextmanager
    def local_copy(self, session: Session, fanout_id: uuid.UUID, part: int) -> Iterator[Path]:
        path = self.path(fanout_id, part)
        if not path.is_file():
            raise FileNotFoundError(f"fan-out {fanout_id}: part {part} is missing from {self.root}")
        yield path


def npy_header(array: np.ndarray) -> bytes:
    """The .npy header of `array` (what np.save writes before the data)."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, np.lib.format.header_data_from_array_1_0(array))
    return out.getvalue()


def part_store(db: Database, settings: Settings) -> PartStore:
    """The store of this deployment: chunked rows on PostgreSQL, files beside SQLite."""
    if db.dialect == "sqlite":
        return DirectoryPartStore(settings.data_dir / "fanout-parts")
    return ChunkedPartStore()
