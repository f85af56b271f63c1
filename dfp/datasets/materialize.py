"""Uploaded datasets as the engine reads them: a local .npz with the arrays a spec names."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dfp.datasets.arrays import load_arrays
from dfp.datasets.blobs import blob_store
from dfp.settings import Settings
from dfp.storage.database import Database
from dfp_engine.spec import ExperimentSpec, NpzDataset, UploadedDataset


@contextmanager
def local_arrays(
    db: Database, settings: Settings, dataset_id: uuid.UUID, names: list[str]
) -> Iterator[dict[str, np.ndarray]]:
    """The named arrays of a stored dataset, read from a local copy that is gone afterwards
    (the transaction that read it is over before the caller works on the arrays)."""
    store = blob_store(db, settings)
    with db.unit_of_work() as uow, store.local_copy(uow.session, dataset_id) as path:
        arrays = load_arrays(path, names)
    yield arrays


@contextmanager
def engine_spec(db: Database, settings: Settings, spec: ExperimentSpec) -> Iterator[ExperimentSpec]:
    """`spec` itself, or, for an uploaded dataset, the same spec reading a local .npz copy with
    the named arrays under the engine's keys (x, y, x_test, y_test)."""
    dataset = spec.dataset
    if not isinstance(dataset, UploadedDataset):
        yield spec
        return
    keys = {"x": dataset.x, "y": dataset.y}
    if dataset.x_test is not None and dataset.y_test is not None:
        keys |= {"x_test": dataset.x_test, "y_test": dataset.y_test}
    with tempfile.TemporaryDirectory(prefix="dfp-run-") as folder:
        local = Path(folder) / "dataset.npz"
        with local_arrays(db, settings, dataset.id, sorted(set(keys.values()))) as arrays:
            np.savez(local, **{key: arrays[name] for key, name in keys.items()})  # type: ignore[arg-type]
        common = dataset.model_dump(exclude={"kind", "id", "x", "y", "x_test", "y_test"})
        npz = NpzDataset(path=str(local), **common)
        yield spec.model_copy(update={"dataset": npz})
