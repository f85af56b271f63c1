"""Reading stored results back: as the JSON document, as a flat CSV table, as engine objects."""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session

from dfp.errors import NotFoundError
from dfp.experiments import repository
from dfp.experiments.curves import decode_layer, decode_table
from dfp.experiments.schemas import ResultsPublic, RunResultPublic
from dfp.experiments.service import EXPERIMENT, get_job
from dfp.storage.models import Job, Run
from dfp_engine.results import (
    Environment,
    ExperimentResult,
    HistoryPoint,
    RunResult,
    SummaryRow,
    Verdict,
)
from dfp_engine.status import TERMINAL_STATUSES, Status
from dfp_engine.thresholds import VerdictThresholds
from dfp_engine.verdicts import compute_verdicts

CSV_COLUMNS = (
    "run",
    "sweep_value",
    "epoch",
    "step",
    "layer",
    "delta",
    "inverse_delta",
    "lfr",
    "rdf",
)


def _selected_runs(session: Session, job: Job, runs: Collection[int]) -> Sequence[Run]:
    rows = repository.runs_of(session, job.id, results=True)
    return [run for run in rows if not runs or run.index in runs]


def _checkpoints_by_run(
    session: Session,
    run_rows: Sequence[Run],
    layers: Collection[str],
    epochs: Collection[int],
) -> dict[int, list[dict[str, Any]]]:
    """Stored checkpoints per run id, each with the selected layers in model order."""
    grouped: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    rows = repository.curve_rows(
        session, [run.id for run in run_rows], layers=layers, epochs=epochs
    )
    for row in rows:
        run_id, epoch, step = row[0], row[1], row[2]
        checkpoint = grouped[run_id].setdefault(epoch, {"epoch": epoch, "step": step, "layers": []})
        checkpoint["layers"].append(decode_layer(*row[3:]))
    return {run_id: list(by_epoch.values()) for run_id, by_epoch in grouped.items()}


def results_document(
    session: Session,
    owner: str,
    job_id: uuid.UUID,
    *,
    runs: Collection[int] = (),
    layers: Collection[str] = (),
    epochs: Collection[int] = (),
    thresholds: VerdictThresholds | None = None,
    kind: str = EXPERIMENT,
    verdicts: bool = True,
) -> dict[str, Any]:
    """The stored result as plain JSON-ready data in the shape of ResultsPublic.

    Plain data because a result holds tens of thousands of numbers: building models of them
    would cost more than reading them from the database. Without `verdicts` their list is
    empty: they judge the whole stored result, so a narrow read would cost as much as all."""
    job = get_job(session, owner, job_id, kind)
    run_rows = _selected_runs(session, job, runs)
    checkpoints = _checkpoints_by_run(session, run_rows, layers, epochs)
    terminal = job.status in TERMINAL_STATUSES
    documents = [run_document(run, checkpoints.get(run.id, [])) for run in run_rows]
    if not verdicts:
        whole = []
    elif runs or layers or epochs:  # verdicts always judge the whole stored result
        every_run = repository.runs_of(session, job.id, results=True)
        every_checkpoint = _checkpoints_by_run(session, every_run, (), ())
        whole = [run_document(run, every_checkpoint.get(run.id, [])) for run in every_run]
    else:
        whole = documents
    return {
        "experiment_id": str(job.id),
        "status": job.status,
        "is_terminal": terminal,
        "partial": not terminal,
        "spec": job.spec,
        "runs": documents,
        "summary": job.summary or [],
        "verdicts": [
            verdict.model_dump(mode="json") for verdict in _verdicts(job, whole, thresholds)
        ]
        if verdicts
        else [],
    }


def _verdicts(
    job: Job, documents: list[dict[str, Any]], thresholds: VerdictThresholds | None
) -> list[Verdict]:
    """The engine's verdicts on the stored runs (those still going count as unfinished)."""
    runs = [engine_run_result(document) for document in documents]
    result = ExperimentResult.model_construct(
        spec=job.spec,
        status=Status(job.status),
        environment=None,  # type: ignore[arg-type]  # verdicts do not read it
        runs=runs,
        summary=[SummaryRow.model_validate(row) for row in job.summary or []],
    )
    return compute_verdicts(result, thresholds)


def get_results(
    session: Session,
    owner: str,
    job_id: uuid.UUID,
    *,
    runs: Collection[int] = (),
    layers: Collection[str] = (),
    epochs: Collection[int] = (),
    thresholds: VerdictThresholds | None = None,
) -> ResultsPublic:
    """The stored result, optionally narrowed to some runs, layers and epochs."""
    document = results_document(
        session, owner, job_id, runs=runs, layers=layers, epochs=epochs, thresholds=thresholds
    )
    return ResultsPublic.model_validate(document)


def run_document(run: Run, checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """One run in the shape of RunResultPublic, every field present."""
    document = {
        name: field.get_default(call_default_factory=True)
        for name, field in RunResultPublic.model_fields.items()
        if not field.is_required()
    }
    # Fields this version of the engine no longer has are left out rather than refused.
    document.update((k, v) for k, v in (run.details or {}).items() if k in document)
    document.update(
        index=run.index,
        sweep_value=run.sweep_value,
        status=run.status,
        error={"code": run.error_code, "message": run.error_message or ""}
        if run.error_code
        else None,
        steps_to_target=run.steps_to_target,
        epochs_to_target=run.epochs_to_target,
        n_train=run.n_train,
        n_test=run.n_test,
        n_analysis=run.n_analysis,
        layer_names=run.layer_names,
        history=decode_table(run.history, run.history_fields),
        checkpoints=checkpoints,
        elapsed_seconds=run.elapsed_seconds,
        analysis_seconds=run.analysis_seconds,
        environment=run.environment,
    )
    return document


def experiment_result(
    session: Session, owner: str, job_id: uuid.UUID, kind: str = EXPERIMENT
) -> ExperimentResult:
    """The stored result as the engine's ExperimentResult, for its figures.

    While the experiment runs this holds the runs analysed so far, each with its own status
    (figures draw what is there)."""
    job = get_job(session, owner, job_id, kind)
    runs = repository.runs_of(session, job.id, results=True)
    runs = [run for run in runs if run.environment is not None]
    if not runs:
        raise NotFoundError(
            f"experiment {job_id} has no results yet, so no figures", code="no_results"
        )
    checkpoints = _checkpoints_by_run(session, runs, (), ())
    engine_runs = [engine_run_result(run_document(r, checkpoints.get(r.id, []))) for r in runs]
    fields = set(Environment.model_fields)
    environment = {k: v for k, v in (runs[0].environment or {}).items() if k in fields}
    return ExperimentResult.model_construct(
        spec=job.spec,
        status=Status(job.status),
        error=None,
        environment=Environment.model_construct(**environment),  # figures do not read it
        runs=engine_runs,
        summary=[SummaryRow.model_validate(row) for row in job.summary or []],
    )


def engine_run_result(document: dict[str, Any]) -> RunResult:
    """A run document (`run_document`) as the engine's model: a loss stored as null (it
    diverged) becomes NaN again; fields of another version's history are left out."""
    history = [
        {
            **{name: point[name] for name in HistoryPoint.model_fields if name in point},
            "train_loss": math.nan if point.get("train_loss") is None else point["train_loss"],
        }
        for point in document["history"]
    ]
    data = {name: value for name, value in document.items() if name in RunResult.model_fields}
    return RunResult.model_validate({**data, "history": history})


def curve_rows(results: ResultsPublic) -> Iterator[tuple[Any, ...]]:
    """One row per (run, checkpoint, layer, δ) in CSV_COLUMNS order, as numbers; the RDF is
    None where it is undefined (the first δ)."""
    for run in results.runs:
        for checkpoint in run.checkpoints:
            for layer in checkpoint.layers:
                rdf = dict(zip(layer.rdf_inverse_deltas, layer.rdf, strict=True))
                for delta, inverse, lfr in zip(
                    layer.deltas, layer.inverse_deltas, layer.lfr, strict=True
                ):
                    yield (
                        run.index,
                        run.sweep_value,
                        checkpoint.epoch,
                        checkpoint.step,
                        layer.layer,
                        delta,
                        inverse,
                        lfr,
                        rdf.get(inverse),
                    )


def csv_rows(results: ResultsPublic) -> Iterator[tuple[Any, ...]]:
    """curve_rows as CSV cells: floats in full precision, empty cells for None."""
    for row in curve_rows(results):
        run, sweep_value, epoch, step, layer, *numbers = row
        yield (
            run,
            "" if sweep_value is None else sweep_value,
            epoch,
            step,
            layer,
            *("" if value is None else repr(value) for value in numbers),
        )


def results_csv(results: ResultsPublic) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(results))
    return out.getvalue()
