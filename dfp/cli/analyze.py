"""`dfp analyze`: the frequency content of one sampled function given as arrays on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dfp.cli.app import app
from dfp.cli.arrays import load_array
from dfp.cli.errors import fail
from dfp.cli.progress import progress_callback
from dfp_engine.normalization import NORMALIZATION_MODES

if TYPE_CHECKING:
    from dfp_engine.frequency import FrequencyResult


def parse_float_list(text: str, option: str) -> list[float]:
    """'0.5,1,2' -> [0.5, 1.0, 2.0], or a one-line error naming the option."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return [float(p) for p in parts]
    except ValueError:
        fail(f"{option}: '{text}' is not a comma-separated list of numbers")


def format_table(result: FrequencyResult) -> str:
    """A readable table of δ, 1/δ, LFR and RDF with the summaries underneath."""
    rdf_by_u = dict(zip(result.rdf_inverse_deltas, result.rdf, strict=True))
    halves = result.lfr_ci_half_width
    lines = [f"{'delta':>12} {'1/delta':>12} {'LFR':>10} {'RDF':>12}"]
    if halves is not None:
        lines[0] = f"{'delta':>12} {'1/delta':>12} {'LFR':>10} {'+-95%':>9} {'RDF':>12}"
    for q, (d, u, lfr) in enumerate(
        zip(result.deltas, result.inverse_deltas, result.lfr, strict=True)
    ):
        rdf = f"{rdf_by_u[u]:12.5g}" if u in rdf_by_u else f"{'':>12}"
        half = f" {halves[q]:9.2e}" if halves is not None else ""
        lines.append(f"{d:12.5g} {u:12.5g} {lfr:10.6f}{half} {rdf}")
    peak, mean = result.peak_inverse_delta, result.mean_inverse_delta
    lines += [
        "",
        f"samples {result.n_samples}, dim {result.dim}, outputs {result.n_outputs}, "
        f"normalization {result.normalization}, device {result.device}",
        f"estimator {result.estimator}, rows evaluated {result.rows_evaluated}",
        f"LFR limit (delta -> inf) {result.lfr_limit:.6f}",
        f"RDF peak at 1/delta = {peak:.5g}" if peak is not None else "RDF peak: none",
        f"RDF-weighted mean 1/delta = {mean:.5g}" if mean is not None else "RDF mean: undefined",
        f"elapsed {result.elapsed_seconds:.3f} s",
    ]
    return "\n".join(lines)


@app.command()
def analyze(
    features: Annotated[Path, typer.Argument(help="Features (n, d): .npy, .npz or .csv.")],
    labels: Annotated[
        Path, typer.Argument(help="Labels: 1-D integers = classes, floats = real targets.")
    ],
    deltas: Annotated[str | None, typer.Option(help="Comma-separated δ values.")] = None,
    inverse_deltas: Annotated[str | None, typer.Option(help="Comma-separated 1/δ values.")] = None,
    auto_deltas: Annotated[
        int | None, typer.Option(help="Automatic grid of M values (default 20).")
    ] = None,
    normalize: Annotated[
        str, typer.Option(help=f"One of: {', '.join(NORMALIZATION_MODES)}.")
    ] = "max_abs_per_dim",
    predictions: Annotated[
        Path | None, typer.Option(help="Network outputs: adds the filtering test e_low/e_high.")
    ] = None,
    block_size: Annotated[int | None, typer.Option(help="Rows per tile.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    ci: Annotated[
        float | None,
        typer.Option(
            help="Estimate LFR from sampled rows until its 95 % half-width is at most W at "
            "every δ (exact when that needs half the rows).",
            metavar="W",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON result here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw LFR and RDF against 1/δ (PNG).")] = None,
) -> None:
    """Low frequency ratio and ratio density of the function {(features_i, labels_i)}."""
    if sum(x is not None for x in (deltas, inverse_deltas, auto_deltas)) > 1:
        fail("give only one of --deltas, --inverse-deltas and --auto-deltas")
    if normalize not in NORMALIZATION_MODES:
        fail(
            f"--normalize: unknown mode '{normalize}'; "
            f"expected one of {', '.join(NORMALIZATION_MODES)}"
        )
    if block_size is not None and block_size < 1:
        fail(f"--block-size must be positive, got {block_size}")
    if auto_deltas is not None and auto_deltas < 2:
        fail(f"--auto-deltas needs at least 2 values, got {auto_deltas}")
    if ci is not None and not 0 < ci < 1:
        fail(f"--ci must lie strictly between 0 and 1, got {ci}")
    if ci is not None and predictions is not None:
        fail("--ci: the row-sampled estimator does not run the filtering test (--predictions)")
    if plot is not None and plot.suffix.lower() != ".png":
        fail(f"--plot: '{plot}' must be a .png file")
    grid = parse_float_list(deltas, "--deltas") if deltas is not None else None
    inverse = parse_float_list(inverse_deltas, "--inverse-deltas") if inverse_deltas else None
    # With --ci the features are only read in chunks: a mapped .npy is never loaded whole.
    x = load_array(features, "features", mapped=ci is not None)
    y = load_array(labels, "labels")
    p = load_array(predictions, "predictions") if predictions is not None else None
    from dfp_engine.frequency import analyze_frequency  # numpy on the CPU; torch only for CUDA

    try:
        with progress_callback("analysing", enabled=not as_json) as on_progress:
            result = analyze_frequency(
                x,
                y,
                deltas=grid,
                inverse_deltas=inverse,
                auto_deltas=auto_deltas,
                normalization=normalize,
                predictions=p,
                block_size=block_size,
                device=device,
                on_progress=on_progress,
                ci=ci,
            )
    except (ValueError, RuntimeError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    payload = json.dumps(result.to_dict(), indent=2)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(payload + "\n", encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write --out '{out}': {exc}")
    if plot is not None:
        from dfp.figures import plot_frequency

        plot_frequency(
            result, plot, title=f"{features.name}: n = {result.n_samples}, d = {result.dim}"
        )
    if as_json:
        sys.stdout.write(payload + "\n")
    else:
        print(format_table(result))
        if out is not None:
            print(f"wrote {out}")
        if plot is not None:
            print(f"wrote {plot}")
