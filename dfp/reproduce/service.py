"""The reproduction suite on a dfp service: submitted as a tagged batch, reported from results.

`submit_suite` sends each claim's experiment with the tags `reproduction:<batch>` and
`claim:<id>`; `collect_suite` waits for the batch, reads each experiment's results (with the
service's verdicts) and figures back, and judges the claims exactly as a local run does.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfp.reproduce.claims import CLAIMS, Scale
from dfp.reproduce.suite import SHOWN, ClaimOutcome, Update, claim_spec, judge, sin_lfr_figure
from dfp_engine.results import ExperimentResult
from dfp_engine.thresholds import VerdictThresholds

if TYPE_CHECKING:
    from dfp.client import Client
    from dfp.experiments.schemas import ExperimentPublic

BATCH_TAG = "reproduction:"
CLAIM_TAG = "claim:"


def submit_suite(
    client: Client, claim_ids: list[str], scale: Scale, seeds: int
) -> tuple[str, dict[str, str]]:
    """Submit every chosen claim's experiment; the batch name and experiment id per claim."""
    batch = uuid.uuid4().hex[:12]
    submitted: dict[str, str] = {}
    for claim in CLAIMS:
        if claim.id not in claim_ids or not claim.specs:
            continue  # sin_lfr_figure trains nothing: the report computes it where it is built
        spec = claim_spec(claim, scale, seeds).model_dump(mode="json")
        tags = [BATCH_TAG + batch, CLAIM_TAG + claim.id]
        submitted[claim.id] = client.submit(spec, tags=tags).id
    return batch, submitted


def collect_suite(
    client: Client,
    batch: str,
    thresholds: VerdictThresholds,
    out: Path,
    update: Update,
    timeout: float | None,
) -> tuple[list[ClaimOutcome], dict[str, Any]]:
    """Wait for the batch, then judge each claim from the service's stored results."""
    experiments = {}
    for item in client.iter(tag=BATCH_TAG + batch):
        claim_tag = next((t for t in item.tags if t.startswith(CLAIM_TAG)), None)
        if claim_tag is not None:
            experiments[claim_tag.removeprefix(CLAIM_TAG)] = item.id
    if not experiments:
        raise ValueError(f"--from-service: no experiments are tagged {BATCH_TAG}{batch}")
    chosen = [c for c in CLAIMS if c.id in experiments or not c.specs]
    outcomes = []
    where: dict[str, Any] = {}
    for i, claim in enumerate(chosen):
        update(i / len(chosen), claim.id)
        folder = out / claim.id
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if not claim.specs:
            outcome = sin_lfr_figure("laptop", thresholds)
            outcome.seconds = time.perf_counter() - started
            for name, png in outcome.figures.items():
                (folder / f"{name}.png").write_bytes(png)
            outcomes.append(outcome)
            continue
        experiment_id = experiments[claim.id]

        def on_update(e: ExperimentPublic, base: int = i) -> None:
            update((base + e.progress.fraction) / len(chosen), e.name)

        experiment = client.wait(experiment_id, timeout, on_update=on_update)
        results = client.results(experiment_id)
        (folder / "result.json").write_text(results.model_dump_json(indent=1) + "\n")
        result = ExperimentResult.model_construct(
            spec=results.spec,
            status=results.status,  # type: ignore[arg-type]  # terminal after the wait
            environment=None,  # type: ignore[arg-type]  # judging does not read it
            runs=list(results.runs),
            summary=results.summary,
            verdicts=results.verdicts,
        )
        available = client.figures(experiment_id)
        figures = {n: client.figure(experiment_id, n) for n in SHOWN[claim.id] if n in available}
        seconds = (
            (experiment.finished_at - experiment.started_at).total_seconds()
            if experiment.finished_at and experiment.started_at
            else 0.0
        )
        outcome = judge(claim, result, figures, folder, seconds)
        outcome.measured["experiment_id"] = experiment_id
        outcomes.append(outcome)
        where[claim.id] = experiment.reproducibility.model_dump(mode="json")
    update(1.0, "report")
    return outcomes, {"batch": batch, "experiments": where}
