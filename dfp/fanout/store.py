"""Where a fan-out's parts live, readable by every worker: the operand (part -1), the target
values (part -2) and each block's partial sums (part = block index), as .npy files.

PostgreSQL: ordered 1 MiB rows of `fanout_chunks`, written in the writer's transaction. SQLite
(embedded mode, one machine): files under the data directory. Both stream.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from dfp.datasets.blobs import CHUNK_BYTES
from dfp.settings import Settings
from dfp.storage.database import Database, UnitOfWork
from dfp.storage.models import FanoutChunk

OPERAND_PART = -1
VALUES_PART = -2
_INSERT = insert(FanoutChunk).values(
    fanout_id=bindparam("fanout_id"), part=bindparam("part"), seq=bindparam("seq"),
    data=bindparam("data"),
)  # fmt: skip


class PartStore(Protocol):
    """Stores and hands back the parts of a fan-out, keyed by (fan-out id, part)."""

    def write(self, uow: UnitOfWork, fanout_id: uuid.UUID, part: int, source: Path) -> None:
        """Store the file as part of the unit of work."""

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

    def remove(self, uow: UnitOfWork, fanout_id: uuid.UUID) -> None:
        uow.session.execute(delete(FanoutChunk).where(FanoutChunk.fanout_id == fanout_id))

    @contextmanager
    def local_copy(self, session: Session, fanout_id: uuid.UUID, part: int) -> Iterator[Path]:
        query = (
            select(FanoutChunk.data)
            .where(FanoutChunk.fanout_id == fanout_id, FanoutChunk.part == part)
            .order_by(FanoutChunk.seq)
            .execution_options(yield_per=8)
        )
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

    def remove(self, uow: UnitOfWork, fanout_id: uuid.UUID) -> None:
        folder = self.root / str(fanout_id)
        uow.after_commit(lambda: shutil.rmtree(folder, ignore_errors=True))

    @contextmanager
    def local_copy(self, session: Session, fanout_id: uuid.UUID, part: int) -> Iterator[Path]:
        path = self.path(fanout_id, part)
        if not path.is_file():
            raise FileNotFoundError(f"fan-out {fanout_id}: part {part} is missing from {self.root}")
        yield path


def part_store(db: Database, settings: Settings) -> PartStore:
    """The store of this deployment: chunked rows on PostgreSQL, files beside SQLite."""
    if db.dialect == "sqlite":
        return DirectoryPartStore(settings.data_dir / "fanout-parts")
    return ChunkedPartStore()
