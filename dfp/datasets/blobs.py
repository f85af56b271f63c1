"""Where uploaded files live, readable by every worker: the deployment's own services.

PostgreSQL (production): rows of `dataset_chunks`, 1 MiB each, written in the upload's
transaction, so a dataset row never exists without its bytes. SQLite (embedded mode): a file
per dataset in the data directory, written before the row commits and removed if it does not.
Both stream: neither side ever holds a whole file in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from dfp.settings import Settings
from dfp.storage.database import Database, UnitOfWork
from dfp.storage.models import DatasetChunk

CHUNK_BYTES = 1 << 20
_INSERT_CHUNK = insert(DatasetChunk).values(
    dataset_id=bindparam("dataset_id"), seq=bindparam("seq"), data=bindparam("data")
)


class BlobStore(Protocol):
    """Stores and hands back the bytes of a dataset, keyed by its id."""

    def write(self, uow: UnitOfWork, dataset_id: uuid.UUID, source: IO[bytes]) -> None:
        """Store `source` (read to its end) as part of the unit of work."""

    def remove(self, uow: UnitOfWork, dataset_id: uuid.UUID) -> None:
        """Remove the bytes once the unit of work that deletes the dataset commits."""

    def local_copy(
        self, session: Session, dataset_id: uuid.UUID
    ) -> contextlib.AbstractContextManager[Path]:
        """A readable local file with the bytes, for as long as the context lasts."""


class ChunkedRowStore:
    """PostgreSQL: the bytes as ordered 1 MiB rows, written and deleted with the dataset row."""

    def __init__(self, scratch: Path | None = None) -> None:
        self.scratch = scratch

    def write(self, uow: UnitOfWork, dataset_id: uuid.UUID, source: IO[bytes]) -> None:
        seq = 0
        while chunk := source.read(CHUNK_BYTES):
            uow.session.execute(
                _INSERT_CHUNK, {"dataset_id": dataset_id, "seq": seq, "data": chunk}
            )
            seq += 1

    def remove(self, uow: UnitOfWork, dataset_id: uuid.UUID) -> None:
        uow.session.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id))

    @contextmanager
    def local_copy(self, session: Session, dataset_id: uuid.UUID) -> Iterator[Path]:
        query = (
            select(DatasetChunk.data)
            .where(DatasetChunk.dataset_id == dataset_id)
            .order_by(DatasetChunk.seq)
            .execution_options(yield_per=8)
        )
        if self.scratch is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - removed in the finally below
            prefix="dfp-dataset-", dir=self.scratch, delete=False
        )
        path = Path(handle.name)
        try:
            with handle:
                for data in session.scalars(query):
                    handle.write(data)
            yield path
        finally:
            path.unlink(missing_ok=True)


class DirectoryStore:
    """Embedded mode: one file per dataset under the data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, dataset_id: uuid.UUID) -> Path:
        return self.root / f"{dataset_id}.bin"

    def write(self, uow: UnitOfWork, dataset_id: uuid.UUID, source: IO[bytes]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(dataset_id)
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)
        # Gone again unless the row that names it commits.
        uow.after_rollback(lambda: target.unlink(missing_ok=True))

    def remove(self, uow: UnitOfWork, dataset_id: uuid.UUID) -> None:
        target = self.path(dataset_id)
        uow.after_commit(lambda: target.unlink(missing_ok=True))

    @contextmanager
    def local_copy(self, session: Session, dataset_id: uuid.UUID) -> Iterator[Path]:
        path = self.path(dataset_id)
        if not path.is_file():
            raise FileNotFoundError(f"dataset {dataset_id}: its file is missing from {self.root}")
        yield path


def blob_store(db: Database, settings: Settings) -> BlobStore:
    """The store of this deployment: chunked rows on PostgreSQL, files beside SQLite."""
    if db.dialect == "sqlite":
        return DirectoryStore(settings.data_dir / "dataset-files")
    return ChunkedRowStore()
