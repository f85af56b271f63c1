"""Client commands for lab scripts: submit, status, wait, results, cancel, list.

Output is made for pipes: `submit` prints the id alone, `results` prints JSON (or CSV), and
`wait` exits 0 only when the experiment succeeded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dfp.cli.app import app
from dfp.cli.errors import fail
from dfp.cli.options import ApiKeyOption, UrlOption, load_settings
from dfp.cli.progress import progress_bar
from dfp.errors import DfpError

if TYPE_CHECKING:
    from dfp.client import Client
    from dfp.experiments.schemas import ExperimentPublic

JsonOption = Annotated[bool, typer.Option("--json", help="Print the full JSON document.")]
RunOption = Annotated[list[int] | None, typer.Option("--run", help="Only this run (repeatable).")]
LayerOption = Annotated[
    list[str] | None, typer.Option("--layer", help="Only this layer (repeatable).")
]
EpochOption = Annotated[
    list[int] | None, typer.Option("--epoch", help="Only this epoch (repeatable).")
]


@contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client; server errors become one-line messages (exit 2 for a bad request, 1 otherwise)."""
    from dfp.client import Client

    try:
        with Client(url, api_key, settings=load_settings()) as client:
            yield client
    except DfpError as exc:
        fail(exc.message, exit_code=2 if 400 <= exc.status_code < 500 else 1)


def describe(experiment: ExperimentPublic) -> str:
    """A few readable lines about an experiment."""
    progress = experiment.progress
    lines = [
        f"{experiment.id}  {experiment.name}  {experiment.status}",
        f"progress {progress.fraction:.0%} ({progress.runs_finished}/{progress.n_runs} runs)"
        + (f": {progress.message}" if progress.message else ""),
    ]
    if experiment.error is not None:
        lines.append(f"error [{experiment.error.code}] {experiment.error.message}")
    for run in experiment.runs if len(experiment.runs) > 1 else []:
        value = "" if run.sweep_value is None else f" = {run.sweep_value!r}"
        lines.append(f"  run {run.index}{value}: {run.status} {run.fraction:.0%}")
    return "\n".join(lines)


def progress_line(experiment: ExperimentPublic) -> str:
    """The bar's text: runs done, then the latest report (run, epoch, loss)."""
    progress = experiment.progress
    line = f"{experiment.status}  {progress.runs_finished}/{progress.n_runs} runs"
    if progress.message:
        line += f"  {progress.message}"
    if progress.train_loss is not None and not experiment.is_terminal:
        line += f"  loss {progress.train_loss:.4g}"
    return line


def wait_with_progress(
    client: Client, experiment_id: str, timeout: float | None
) -> ExperimentPublic:
    """Follow the experiment's event stream with a bar (at a terminal) until it is terminal."""
    with progress_bar(f"experiment {experiment_id[:8]}") as update:
        return client.wait(
            experiment_id,
            timeout,
            on_update=lambda e: update(e.progress.fraction, progress_line(e)),
        )


def finish(experiment: ExperimentPublic) -> None:
    """Exit status for scripts: 0 succeeded, 1 failed or cancelled."""
    print(describe(experiment), file=sys.stderr)
    if experiment.status != "succeeded":
        raise typer.Exit(1)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Experiment spec, YAML or JSON.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it finishes.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Resubmitting with the same key returns the same job.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="POST a signed event here when it finishes.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Give up waiting after S s.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit a spec; prints the experiment id (with --wait, waits and exits 0 on success)."""
    from pydantic import ValidationError

    from dfp.fields import field_path
    from dfp_engine.spec import load_spec

    if not spec.is_file():
        fail(f"spec file '{spec}' does not exist")
    try:
        parsed = load_spec(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = field_path(first["loc"])
        fail(f"{spec}: {where}: {first['msg']}")
    except (ValueError, OSError) as exc:
        fail(f"{spec}: {str(exc).splitlines()[0]}")
    with connect(url, api_key) as client:
        experiment = client.submit(
            parsed, tags=tag or (), callback_url=callback_url, idempotency_key=idempotency_key
        )
        print(experiment.id, flush=True)
        if wait:
            finish(wait_with_progress(client, experiment.id, timeout))


@app.command()
def status(
    experiment_id: Annotated[str, typer.Argument(help="Experiment id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show an experiment's status and progress."""
    with connect(url, api_key) as client:
        experiment = client.get(experiment_id)
    print(experiment.model_dump_json(indent=2) if as_json else describe(experiment))


@app.command("wait")
def wait_command(
    experiment_id: Annotated[str, typer.Argument(help="Experiment id.")],
    timeout: Annotated[float | None, typer.Option(help="Give up after S s (exit 1).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Wait until the experiment is terminal; exit 0 if it succeeded, 1 otherwise."""
    with connect(url, api_key) as client:
        experiment = wait_with_progress(client, experiment_id, timeout)
    finish(experiment)


@app.command()
def results(
    experiment_id: Annotated[str, typer.Argument(help="Experiment id.")],
    csv: Annotated[bool, typer.Option("--csv", help="A flat CSV table instead of JSON.")] = False,
    verdicts: Annotated[
        bool, typer.Option("--verdicts", help="Whether the paper's claims hold, one per line.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    run: RunOption = None,
    layer: LayerOption = None,
    epoch: EpochOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Print the results as JSON (partial while running) or, with --csv, as a table."""
    runs, layers, epochs = run or [], layer or [], epoch or []
    with connect(url, api_key) as client:
        if csv:
            text = client.results_csv(experiment_id, run=runs, layer=layers, epoch=epochs)
        else:
            result = client.results(experiment_id, run=runs, layer=layers, epoch=epochs)
            if verdicts:
                from dfp.cli.verdicts import verdict_table

                text = verdict_table(result.verdicts) + "\n"
            else:
                text = result.model_dump_json(indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write --out '{out}': {exc}")
    print(f"wrote {out}", file=sys.stderr)


@app.command()
def cancel(
    experiment_id: Annotated[str, typer.Argument(help="Experiment id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Cancel an experiment (queued runs at once, running ones at their next epoch)."""
    with connect(url, api_key) as client:
        experiment = client.cancel(experiment_id)
    print(describe(experiment))


@app.command("list")
def list_command(
    status_: Annotated[
        list[str] | None, typer.Option("--status", help="Only this status (repeatable).")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="Only experiments with this tag.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 20,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List your experiments, newest first."""
    if not 1 <= limit <= 200:
        fail(f"--limit must be between 1 and 200, got {limit}")
    with connect(url, api_key) as client:
        page = client.list(status=status_ or (), tag=tag, limit=limit)
    if as_json:
        print(page.model_dump_json(indent=2))
        return
    for item in page.data:
        tags = ",".join(item.tags)
        print(f"{item.id}  {item.status:<9}  {item.created_at:%Y-%m-%d %H:%M}  {item.name}  {tags}")
