"""The Typer application every `dfp` subcommand module registers its commands on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="dfp",
    help="Measure the Deep Frequency Principle: per-layer frequency ratios of trained networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Measure the Deep Frequency Principle: per-layer frequency ratios of trained networks."""
