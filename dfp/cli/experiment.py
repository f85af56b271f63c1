"""`dfp run`, `dfp validate`, `dfp spec-schema`: experiments described by a spec file."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dfp.cli.app import app
from dfp.cli.errors import fail
from dfp.cli.progress import progress_bar
from dfp.cli.verdicts import verdict_table

if TYPE_CHECKING:
    from dfp_engine.results import ExperimentResult
    from dfp_engine.runner import Progress
    from dfp_engine.spec import ExperimentSpec

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override one field, e.g. --set training.epochs=50 (repeatable, YAML value)."
    ),
]


def read_spec(path: Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Load and validate a spec file, or fail with one line naming the field."""
    from pydantic import ValidationError

    from dfp_engine.spec import describe_validation_error, load_spec

    try:
        return load_spec(path, overrides or [])
    except ValidationError as exc:
        fail(f"{path}: {describe_validation_error(exc)}")
    except ValueError as exc:
        fail(str(exc).splitlines()[0])


@app.command("validate")
def validate(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Spec file (.yaml or .json).")],
    overrides: SetOption = None,
) -> None:
    """Check a spec without running it."""
    spec = read_spec(spec_path, overrides)
    runs = len(spec.run_values())
    sweep = f", sweeping {spec.sweep.field} over {runs} values" if spec.sweep else ""
    print(
        f"ok: '{spec.name}': {spec.dataset.kind} data, {spec.model.kind} model, "
        f"{spec.training.epochs} epochs{sweep}; spec hash {spec.spec_hash()[:12]}"
    )


@app.command("spec-schema")
def spec_schema() -> None:
    """Print the JSON schema of experiment specs."""
    from dfp_engine.spec import spec_json_schema

    sys.stdout.write(json.dumps(spec_json_schema(), indent=2) + "\n")


@contextmanager
def _interrupt_flag() -> Iterator[list[bool]]:
    """Ctrl-C sets a flag the run polls, so a partial result is still written."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        flag[0] = True
        print("\nstopping after the current epoch (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary_table(result: ExperimentResult) -> str:
    field = result.spec.get("sweep", {}) or {}
    head = str(field.get("field", "run"))
    lines = [f"{head:>24} {'status':>10} {'steps→target':>13} {'final loss':>11} {'time s':>8}"]
    for run in result.runs:
        value = str(run.sweep_value) if run.sweep_value is not None else str(run.index)
        steps = "-" if run.steps_to_target is None else str(run.steps_to_target)
        loss = f"{run.history[-1].train_loss:.4g}" if run.history else "-"
        lines.append(
            f"{value[:24]:>24} {run.status:>10} {steps:>13} {loss:>11} {run.elapsed_seconds:8.1f}"
        )
    return "\n".join(lines)


@app.command("run")
def run_command(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Spec file (.yaml or .json).")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: runs/<spec name>).")
    ] = None,
    overrides: SetOption = None,
    figures: Annotated[bool, typer.Option(help="Draw PNG figures next to result.json.")] = True,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> int:
    """Train and analyse the spec's networks; write result.json and figures."""
    spec = read_spec(spec_path, overrides)
    # The spec's name may hold anything; as a default folder name keep it to safe characters.
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.name).strip(".-") or "experiment"
    folder = out if out is not None else Path("runs") / slug
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--out: cannot create '{folder}': {exc}")

    from dfp.settings import get_settings
    from dfp_engine.runner import run_experiment

    thresholds = get_settings().verdict_thresholds()

    started = time.perf_counter()
    with progress_bar(spec.name, enabled=not quiet) as update, _interrupt_flag() as stop:

        def on_progress(p: Progress) -> None:
            loss = "" if p.train_loss is None else f"  loss {p.train_loss:.4g}"
            update(
                p.fraction,
                f"run {p.run_index} of {p.n_runs}  epoch {p.epoch}/{p.epochs}{loss}",
            )

        try:
            result = run_experiment(
                spec,
                on_progress=on_progress,
                should_cancel=lambda: stop[0],
                thresholds=thresholds,
            )
        except ValueError as exc:
            fail(str(exc).splitlines()[0])
    elapsed = time.perf_counter() - started

    result_path = folder / "result.json"
    result_path.write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")
    print(_summary_table(result))
    print(verdict_table(result.verdicts))
    print(f"wrote {result_path} ({elapsed:.1f} s)")
    if figures:
        from dfp.figures import write_figures

        paths = write_figures(result, folder)
        print(f"wrote {len(paths)} figures to {folder}: {', '.join(p.name for p in paths)}")
    if result.status == "cancelled":
        print("cancelled: the result holds what was recorded so far", file=sys.stderr)
        return 130
    if result.status == "failed":
        reason = f"{result.error.code}: {result.error.message}" if result.error else "a run failed"
        print(f"failed: {reason}", file=sys.stderr)
        return 1
    return 0
