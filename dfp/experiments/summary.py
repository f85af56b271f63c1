"""The sweep summary from what each run stores: its columns, its last loss and the peak column.

Refreshed every time a run of the job finishes, so it reads no curves: one row per finished run
and one peak per (checkpoint, summary layer).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy.orm import Session

from dfp.experiments import repository
from dfp.experiments.curves import last_value
from dfp_engine.results import SummaryRow


def job_summary(
    session: Session, job_id: uuid.UUID, summary_layers: Sequence[str]
) -> list[SummaryRow]:
    """One row per finished run, in run order; run i is summarised at `summary_layers[i]`."""
    runs = repository.finished_run_rows(session, job_id)
    layer_of = {run.id: summary_layers[run.position] for run in runs}
    peaks: dict[int, dict[str, float | None]] = defaultdict(dict)
    for run_id, epoch, layer, peak in repository.layer_peaks(session, list(layer_of)):
        if layer == layer_of[run_id]:
            peaks[run_id][str(epoch)] = peak
    return [
        SummaryRow(
            sweep_value=run.sweep_value,
            status=run.status,
            steps_to_target=run.steps_to_target,
            epochs_to_target=run.epochs_to_target,
            final_train_loss=last_value(run.history, run.history_fields, "train_loss"),
            layer=layer_of[run.id],
            peak_inverse_delta_by_checkpoint=peaks[run.id],
        )
        for run in runs
    ]
