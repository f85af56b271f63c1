"""`dfp reproduce`: run the paper's claims and write a self-contained report."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from dfp.cli.app import app
from dfp.cli.errors import fail
from dfp.cli.options import ApiKeyOption, UrlOption
from dfp.cli.progress import progress_bar


@app.command("reproduce")
def reproduce(
    out: Annotated[
        Path | None, typer.Option(help="Folder for report.html, report.json and the runs.")
    ] = None,
    scale: Annotated[
        str,
        typer.Option(
            help="laptop (2 CPU cores, minutes), paper (the paper's datasets; a GPU), or smoke "
            "(seconds: checks the machinery, not the paper)."
        ),
    ] = "laptop",
    only: Annotated[
        list[str] | None, typer.Option(help="Run only this claim (repeatable).")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per experiment (verdicts across seeds).")] = 1,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit", help="Submit the experiments to the service as one tagged batch instead."
        ),
    ] = False,
    from_service: Annotated[
        str | None,
        typer.Option(
            "--from-service",
            metavar="BATCH",
            help="Build the report from a submitted batch's results (waits for them).",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="With --from-service: seconds to wait per experiment.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Re-run the paper's claims, judge each, and write report.html and report.json."""
    from dfp.reproduce.claims import CLAIM_IDS, SCALES

    if scale not in SCALES:
        fail(f"--scale: '{scale}' is not one of laptop, paper, smoke")
    unknown = [c for c in only or [] if c not in CLAIM_IDS]
    if unknown:
        fail(f"--only: unknown claim '{unknown[0]}'; claims: {', '.join(CLAIM_IDS)}")
    if not 1 <= seeds <= 100:
        fail(f"--seeds: {seeds} must be between 1 and 100")
    if submit and from_service is not None:
        fail("--submit and --from-service: give one of them")
    chosen = next(s for s in SCALES if s == scale)
    claims = only or CLAIM_IDS
    if submit:
        _submit(claims, chosen, seeds, url, api_key)
        return
    if out is None:
        fail("--out: give the folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--out: cannot create '{out}': {exc}")

    from pydantic import ValidationError

    from dfp.cli.verdicts import OUTCOME_LABELS
    from dfp.reproduce.report import write_report
    from dfp.reproduce.suite import environment, run_suite
    from dfp.settings import get_settings
    from dfp_engine.spec import describe_validation_error

    thresholds = get_settings().verdict_thresholds()
    started = time.perf_counter()
    context = environment(chosen, seeds, thresholds)
    with progress_bar("reproduce", enabled=not quiet) as update:
        try:
            if from_service is None:
                outcomes = run_suite(claims, chosen, seeds, thresholds, out, update)
            else:
                from dfp.cli.client import connect
                from dfp.reproduce.service import collect_suite

                with connect(url, api_key) as client:
                    outcomes, where = collect_suite(
                        client, from_service, thresholds, out, update, timeout
                    )
                context = {**context, "scale": "service", "service": where}
        except ValidationError as exc:
            fail(f"a reproduction spec is invalid: {describe_validation_error(exc)}")
        except (ValueError, OSError) as exc:
            fail(str(exc).splitlines()[0])
    elapsed = time.perf_counter() - started
    json_path, html_path = write_report(out, outcomes, context, elapsed)
    for o in outcomes:
        label = OUTCOME_LABELS.get(o.outcome, o.outcome)
        print(f"{label:>13}  {o.claim.id}: {'; '.join(o.measured.get('detail', []))[:300]}")
    print(f"wrote {html_path} and {json_path} ({elapsed:.0f} s)")


def _submit(
    claims: list[str], scale: str, seeds: int, url: str | None, api_key: str | None
) -> None:
    """Submit the batch and print its name, for `dfp reproduce --from-service NAME`."""
    from dfp.cli.client import connect
    from dfp.reproduce.claims import SCALES
    from dfp.reproduce.service import submit_suite

    chosen = next(s for s in SCALES if s == scale)
    with connect(url, api_key) as client:
        batch, submitted = submit_suite(client, claims, chosen, seeds)
    for claim_id, experiment_id in submitted.items():
        print(f"{experiment_id}  {claim_id}", file=sys.stderr)
    print(batch)
