"""What the API does with datasets: store an upload once, read, list, delete, and check the
arrays a spec or an analysis names. Services never commit."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dfp.cursors import decode_cursor, encode_cursor
from dfp.datasets import repository
from dfp.datasets.arrays import ArrayInfo, UnsafeArrayError, inspect_file
from dfp.datasets.blobs import BlobStore
from dfp.datasets.schemas import ArrayPublic, DatasetPublic, DatasetsPublic
from dfp.errors import ConflictError, InvalidRequestError, LimitExceededError, NotFoundError
from dfp.settings import Settings
from dfp.storage.database import UnitOfWork
from dfp.storage.models import Dataset
from dfp.storage.types import utcnow
from dfp_engine.spec import ExperimentSpec, UploadedDataset

HASH_CHUNK = 1 << 20
# What names the stored file and its arrays: the same for every run of an experiment.
SWEEP_REFUSED = frozenset(
    f"dataset.{name}" for name in ("kind", "id", "x", "y", "x_test", "y_test")
)
MAX_NAME = 200


@dataclass(frozen=True)
class Upload:
    dataset: Dataset
    created: bool  # False when the owner already had this exact file


def sha256_of(source: IO[bytes]) -> tuple[str, int]:
    """The SHA-256 and size of a seekable file, read in chunks from its start."""
    digest = hashlib.sha256()
    size = 0
    source.seek(0)
    while chunk := source.read(HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    source.seek(0)
    return digest.hexdigest(), size


def clean_name(name: str | None, filename: str | None) -> str:
    """The dataset's name: the one given, else the file's base name, printable and short."""
    chosen = (name or Path(filename or "").name or "dataset").strip()
    if len(chosen) > MAX_NAME:
        raise InvalidRequestError(
            f"name: longer than {MAX_NAME} characters", details={"field": "name"}
        )
    if any(
        ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) <= 0xDFFF for ch in chosen
    ):
        raise InvalidRequestError(
            "name: must not contain control characters", details={"field": "name"}
        )
    return chosen or "dataset"


def upload(
    uow: UnitOfWork,
    owner: str,
    source: IO[bytes],
    *,
    name: str,
    store: BlobStore,
    settings: Settings,
) -> Upload:
    """Check the (seekable) file and store it, unless the owner already has the same bytes."""
    session = uow.session
    sha256, size = sha256_of(source)
    existing = repository.by_sha256(session, owner, sha256)
    if existing is not None:
        return Upload(existing, created=False)
    try:
        kind, arrays = inspect_file(source, max_array_bytes=settings.max_dataset_array_bytes)
    except UnsafeArrayError as exc:
        raise InvalidRequestError(
            str(exc), code="invalid_dataset", details={"field": "file"}
        ) from None
    dataset = Dataset(
        id=uuid.uuid4(),
        owner=owner,
        name=name,
        sha256=sha256,
        size_bytes=size,
        file_kind=kind,
        arrays=[array.to_json() for array in arrays],
        created_at=utcnow(),
    )
    try:
        # A savepoint: a concurrent upload of the same file by the same owner may win.
        with session.begin_nested():
            session.add(dataset)
            session.flush()
    except IntegrityError:
        existing = repository.by_sha256(session, owner, sha256)
        if existing is None:
            raise
        return Upload(existing, created=False)
    source.seek(0)
    store.write(uow, dataset.id, source)
    return Upload(dataset, created=True)


def get(session: Session, owner: str, dataset_id: uuid.UUID, *, lock: bool = False) -> Dataset:
    dataset = repository.get(session, dataset_id, owner, lock=lock)
    if dataset is None:
        raise NotFoundError(f"no dataset {dataset_id}")
    return dataset


def public(dataset: Dataset) -> DatasetPublic:
    return DatasetPublic(
        id=str(dataset.id),
        name=dataset.name,
        sha256=dataset.sha256,
        size_bytes=dataset.size_bytes,
        file_kind=dataset.file_kind,  # type: ignore[arg-type]
        arrays=[ArrayPublic.model_validate(array) for array in dataset.arrays],
        created_at=dataset.created_at,
    )


def list_datasets(
    session: Session, owner: str, *, limit: int, cursor: str | None = None
) -> DatasetsPublic:
    """One page, newest first; one more row than asked tells whether a next page exists."""
    after = decode_cursor(cursor) if cursor else None
    rows = repository.list_page(session, owner, limit=limit + 1, after=after)
    page, more = list(rows[:limit]), len(rows) > limit
    return DatasetsPublic(
        data=[public(d) for d in page],
        count=len(page),
        next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more and page else None,
    )


def delete(uow: UnitOfWork, owner: str, dataset_id: uuid.UUID, *, store: BlobStore) -> None:
    """Remove a dataset no unfinished experiment or analysis reads (409 otherwise)."""
    dataset = get(uow.session, owner, dataset_id, lock=True)
    if repository.in_use(uow.session, dataset.id):
        raise ConflictError(
            f"dataset {dataset_id} is read by unfinished work; cancel it or wait until it ends",
            code="dataset_in_use",
        )
    store.remove(uow, dataset.id)
    uow.session.delete(dataset)


def arrays_of(dataset: Dataset) -> dict[str, ArrayInfo]:
    return {array["name"]: ArrayInfo.from_json(array) for array in dataset.arrays}


def named_arrays(dataset: Dataset, wanted: Sequence[tuple[str, str]]) -> dict[str, ArrayInfo]:
    """The arrays that (field, array name) pairs name; 422 naming the field of a missing one."""
    arrays = arrays_of(dataset)
    found: dict[str, ArrayInfo] = {}
    for field, name in wanted:
        if name not in arrays:
            raise InvalidRequestError(
                f"{field}: dataset {dataset.id} has no array '{name}' "
                f"(it has {', '.join(sorted(arrays))})",
                details={"field": field, "available": sorted(arrays)},
            )
        found[field] = arrays[name]
    return found


def check_spec_dataset(
    session: Session, owner: str, spec: ExperimentSpec, settings: Settings
) -> uuid.UUID | None:
    """The uploaded dataset a spec's runs read, checked now (422 naming the field) so that a
    missing dataset or array is never discovered by a worker; None for other dataset kinds."""
    if (
        isinstance(spec.dataset, UploadedDataset)
        and spec.sweep is not None
        and spec.sweep.field in SWEEP_REFUSED
    ):
        raise InvalidRequestError(
            f"sweep.field: {spec.sweep.field} of an uploaded dataset cannot be swept "
            "(submit one experiment per dataset or array)",
            details={"field": "sweep.field"},
        )
    ids: set[uuid.UUID] = set()
    for run_spec in spec.run_specs:
        dataset = run_spec.dataset
        if not isinstance(dataset, UploadedDataset):
            continue
        ids.add(dataset.id)
        if len(ids) > 1:
            raise InvalidRequestError(
                "dataset.id: all runs of an experiment must read the same uploaded dataset",
                details={"field": "dataset.id"},
            )
        _check_uploaded(session, owner, dataset, settings)
    return next(iter(ids), None)


def _check_uploaded(
    session: Session, owner: str, spec: UploadedDataset, settings: Settings
) -> None:
    stored = repository.get(session, spec.id, owner, lock=True)
    if stored is None:
        raise InvalidRequestError(
            f"dataset.id: no dataset {spec.id} (upload one with POST /v1/datasets)",
            details={"field": "dataset.id"},
        )
    if stored.file_kind != "npz":
        raise InvalidRequestError(
            f"dataset.id: dataset {spec.id} is a single .npy array; an experiment needs inputs "
            "and targets: upload an .npz",
            details={"field": "dataset.id"},
        )
    wanted = [("dataset.x", spec.x), ("dataset.y", spec.y)]
    if spec.x_test is not None and spec.y_test is not None:
        wanted += [("dataset.x_test", spec.x_test), ("dataset.y_test", spec.y_test)]
    arrays = named_arrays(stored, wanted)
    for field, array in arrays.items():
        if not array.shape:
            raise InvalidRequestError(
                f"{field}: array '{array.name}' is a scalar; it needs one row per sample",
                details={"field": field},
            )
        if not array.finite:
            raise InvalidRequestError(
                f"{field}: array '{array.name}' contains NaN or inf", details={"field": field}
            )
    for inputs, targets in (("dataset.x", "dataset.y"), ("dataset.x_test", "dataset.y_test")):
        if inputs in arrays and arrays[inputs].rows != arrays[targets].rows:
            raise InvalidRequestError(
                f"{targets}: '{arrays[targets].name}' has {arrays[targets].rows} rows but "
                f"{inputs} '{arrays[inputs].name}' has {arrays[inputs].rows}",
                details={"field": targets},
            )
    rows = arrays["dataset.x"].rows
    if spec.max_train_samples is None and rows > settings.max_samples:
        raise LimitExceededError(
            f"dataset.x: '{spec.x}' has {rows} rows, more than the limit max_samples = "
            f"{settings.max_samples} (DFP_MAX_SAMPLES); set dataset.max_train_samples",
            details={
                "limit": "max_samples",
                "field": "dataset.x",
                "value": rows,
                "maximum": settings.max_samples,
            },
        )
