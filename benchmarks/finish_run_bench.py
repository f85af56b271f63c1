"""Time `finish_run` (storing a run and refreshing the sweep summary) as a sweep fills up.

A 20-run sweep whose runs each hold 6 layers x 10 checkpoints x 100 δ is stored run after run
the way a worker stores it (claim, then finish with the sweep summary), on a fresh PostgreSQL
database migrated by the real chain (or SQLite with --sqlite). It prints the time of each
finish_run, the summary it now computes from stored columns, and what re-reading every
finished run's curves through the read model and summarising them costs at the same point:
the work finish_run used to repeat on every finish.

Usage: python benchmarks/finish_run_bench.py [--runs 20] [--sqlite]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from dfp.experiments import lifecycle, service
from dfp.experiments.schemas import ExperimentCreate
from dfp.settings import Settings
from dfp.storage import migrate
from dfp.storage.database import Database
from dfp_engine.results import Checkpoint, HistoryPoint, LayerAnalysis, RunResult
from dfp_engine.runner import summarize
from dfp_engine.spec import ExperimentSpec

PG_ADMIN = os.environ.get("DFP_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
LAYERS = ["input", "hidden.1", "hidden.2", "hidden.3", "hidden.4", "hidden.5"]
EPOCHS = list(range(10))
N_DELTAS = 100


class _Unsent:
    """Runs are claimed directly here: nothing needs to go to a queue."""

    def send_run(self, run_id: int, queue: str) -> None:
        del run_id, queue


def _body(runs: int) -> dict[str, Any]:
    deltas = np.geomspace(1e-3, 1e2, N_DELTAS).tolist()
    return {
        "name": "finish-run-bench",
        "model": {"kind": "mlp", "depth": 5, "width": 20},
        "training": {"epochs": EPOCHS[-1]},
        "analysis": {"layers": "all", "checkpoints": EPOCHS, "deltas": deltas},
        "sweep": {"field": "training.seed", "values": list(range(runs))},
    }


def _result(index: int, rng: np.random.Generator) -> RunResult:
    deltas = sorted(np.geomspace(1e-3, 1e2, N_DELTAS).tolist(), reverse=True)
    inverse = [1 / d for d in deltas]
    checkpoints = []
    for epoch in EPOCHS:
        layers = []
        for layer in LAYERS:
            lfr = np.sort(rng.uniform(0.1, 1.0, N_DELTAS)).tolist()
            rdf = np.diff(lfr) / np.diff(inverse)
            layers.append(
                LayerAnalysis(
                    layer=layer,
                    dim=20,
                    normalization="max_abs_per_dim",
                    deltas=deltas,
                    inverse_deltas=inverse,
                    lfr=lfr,
                    rdf_inverse_deltas=inverse[1:],
                    rdf=rdf.tolist(),
                    peak_inverse_delta=inverse[1 + int(np.argmax(rdf))],
                    mean_inverse_delta=float(np.mean(inverse)),
                    lfr_limit=0.1,
                    n_samples=500,
                )
            )
        checkpoints.append(Checkpoint(epoch=epoch, step=epoch * 4, layers=layers))
    return RunResult(
        index=index,
        sweep_value=index,
        status="succeeded",
        n_train=500,
        n_analysis=500,
        layer_names=LAYERS,
        history=[HistoryPoint(epoch=e, step=4 * e, train_loss=1 / (e + 1)) for e in EPOCHS],
        checkpoints=checkpoints,
        elapsed_seconds=1.0,
    )


def _database(sqlite: bool, workdir: Path) -> tuple[str, str | None]:
    if sqlite:
        return f"sqlite:///{workdir / 'bench.sqlite3'}", None
    name = f"dfp_bench_finish_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


def _reread_summary(db: Database, job_id: uuid.UUID, spec: ExperimentSpec) -> float:
    """Seconds to summarise by reading every finished run back through the read model."""
    from dfp.experiments.results import experiment_result

    started = time.perf_counter()
    with db.reading() as session:
        result = experiment_result(session, "bench", job_id)
        summarize(spec, [run for run in result.runs if run.status == "succeeded"])
    return time.perf_counter() - started


def _stored_summary(db: Database, job_id: uuid.UUID, spec: ExperimentSpec) -> float:
    """Seconds to summarise from the stored columns, as finish_run now does."""
    from dfp.experiments.summary import job_summary

    started = time.perf_counter()
    with db.reading() as session:
        job_summary(session, job_id, spec.summary_layers())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url, pg_name = _database(args.sqlite, Path(tmp))
        try:
            _bench(url, Path(tmp), args.runs)
        finally:
            if pg_name is not None:
                with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def _bench(url: str, data_dir: Path, runs: int) -> None:
    migrate.upgrade(url)
    settings = Settings(database_url=url, data_dir=data_dir, max_sweep_size=max(runs, 100))
    db = Database.from_settings(settings)
    body = ExperimentCreate.model_validate(_body(runs))
    spec = body.to_spec()
    with db.unit_of_work() as uow:
        job = service.submit(uow, "bench", body, settings=settings, dispatcher=_Unsent()).job
        run_ids = [(run.index, run.id) for run in job.runs]
    rng = np.random.default_rng(0)
    finish, stored, reread = [], [], []
    for index, run_id in sorted(run_ids):
        with db.unit_of_work() as uow:
            lease = lifecycle.claim_run(uow.session, run_id, worker="bench:1", settings=settings)
        assert lease is not None
        result = _result(index, rng)
        started = time.perf_counter()
        with db.unit_of_work() as uow:
            assert lifecycle.finish_run(
                uow.session, lease, result, {"device": "cpu"}, spec.summary_layers()
            )
        finish.append(time.perf_counter() - started)
        stored.append(_stored_summary(db, job.id, spec))
        reread.append(_reread_summary(db, job.id, spec))
    db.dispose()
    print(
        f"{db.dialect}: {runs} runs x {len(LAYERS)} layers x {len(EPOCHS)} checkpoints x "
        f"{N_DELTAS} δ; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus"
    )
    print("run  finish_run ms  summary from columns ms  summary re-read ms")
    for i, (f, c, r) in enumerate(zip(finish, stored, reread, strict=True), start=1):
        print(f"{i:3d}  {1000 * f:13.1f}  {1000 * c:23.1f}  {1000 * r:18.1f}")
    print(
        f"finish_run: median {1000 * statistics.median(finish):.1f} ms, "
        f"last run {1000 * finish[-1]:.1f} ms; its summary at the last run "
        f"{1000 * stored[-1]:.1f} ms from columns vs {1000 * reread[-1]:.1f} ms re-read "
        "through the read model (what finish_run did before)"
    )


if __name__ == "__main__":
    main()
