"""`dfp analyses submit|status|wait|results`: frequency analyses of uploaded arrays, run by the
service's workers (`dfp analyze` does the same locally)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from dfp.cli.analyze import parse_float_list
from dfp.cli.app import app
from dfp.cli.client import JsonOption, connect
from dfp.cli.errors import fail
from dfp.cli.options import ApiKeyOption, UrlOption
from dfp.cli.progress import progress_callback

if TYPE_CHECKING:
    from dfp.analyses.schemas import AnalysisPublic
    from dfp.client import Client

analyses_app = typer.Typer(help="Analyses of uploaded representations.", no_args_is_help=True)
app.add_typer(analyses_app, name="analyses")


def describe(analysis: AnalysisPublic) -> str:
    progress = analysis.progress
    lines = [
        f"{analysis.id}  {analysis.name}  {analysis.status}",
        f"progress {progress.fraction:.0%}" + (f": {progress.message}" if progress.message else ""),
    ]
    if analysis.error is not None:
        lines.append(f"error [{analysis.error.code}] {analysis.error.message}")
    return "\n".join(lines)


def _wait(client: Client, analysis_id: str, timeout: float | None) -> AnalysisPublic:
    with progress_callback(f"analysis {analysis_id[:8]}") as on_progress:
        return client.wait_analysis(
            analysis_id, timeout, on_update=lambda a: on_progress(a.progress.fraction)
        )


def _finish(analysis: AnalysisPublic) -> None:
    print(describe(analysis), file=sys.stderr)
    if analysis.status != "succeeded":
        raise typer.Exit(1)


@analyses_app.command("submit")
def submit(
    dataset_id: Annotated[str, typer.Argument(help="Uploaded dataset id (dfp datasets upload).")],
    features: Annotated[
        list[str], typer.Option("--features", help="Feature array, one per layer (repeatable).")
    ],
    targets: Annotated[str, typer.Option(help="Target array: int classes or real values.")],
    deltas: Annotated[str | None, typer.Option(help="Comma-separated δ values.")] = None,
    inverse_deltas: Annotated[str | None, typer.Option(help="Comma-separated 1/δ values.")] = None,
    auto_deltas: Annotated[int | None, typer.Option(help="Automatic grid of M values.")] = None,
    normalize: Annotated[str | None, typer.Option(help="Normalisation mode.")] = None,
    predictions: Annotated[str | None, typer.Option(help="Network outputs array.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda[:N].")] = None,
    ci: Annotated[
        float | None,
        typer.Option(help="Row-sampled estimate: 95 % half-width at most W.", metavar="W"),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it finishes.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Give up waiting after S s.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit an analysis; prints its id (with --wait, waits and exits 0 on success)."""
    if sum(x is not None for x in (deltas, inverse_deltas, auto_deltas)) > 1:
        fail("give only one of --deltas, --inverse-deltas and --auto-deltas")
    grid = parse_float_list(deltas, "--deltas") if deltas is not None else None
    inverse = parse_float_list(inverse_deltas, "--inverse-deltas") if inverse_deltas else None
    with connect(url, api_key) as client:
        analysis = client.analyze(
            dataset_id,
            features=features,
            targets=targets,
            deltas=grid,
            inverse_deltas=inverse,
            auto_deltas=auto_deltas,
            normalization=normalize,
            predictions=predictions,
            device=device,
            ci=ci,
            tags=tag or (),
        )
        print(analysis.id, flush=True)
        if wait:
            _finish(_wait(client, analysis.id, timeout))


@analyses_app.command("status")
def status(
    analysis_id: Annotated[str, typer.Argument(help="Analysis id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show an analysis's status and progress."""
    with connect(url, api_key) as client:
        analysis = client.analysis(analysis_id)
    print(analysis.model_dump_json(indent=2) if as_json else describe(analysis))


@analyses_app.command("wait")
def wait_command(
    analysis_id: Annotated[str, typer.Argument(help="Analysis id.")],
    timeout: Annotated[float | None, typer.Option(help="Give up after S s (exit 1).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Wait until the analysis is terminal; exit 0 if it succeeded, 1 otherwise."""
    with connect(url, api_key) as client:
        analysis = _wait(client, analysis_id, timeout)
    _finish(analysis)


@analyses_app.command("results")
def results(
    analysis_id: Annotated[str, typer.Argument(help="Analysis id.")],
    csv: Annotated[bool, typer.Option("--csv", help="A flat CSV table instead of JSON.")] = False,
    layer: Annotated[
        list[str] | None, typer.Option("--layer", help="Only this layer (repeatable).")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Print the per-layer results as JSON (partial while running) or, with --csv, a table."""
    with connect(url, api_key) as client:
        if csv:
            sys.stdout.write(client.analysis_results_csv(analysis_id, layer=layer or []))
        else:
            result = client.analysis_results(analysis_id, layer=layer or [])
            sys.stdout.write(result.model_dump_json(indent=2) + "\n")
