"""Options several commands share: the data directory, and the server URL and key of the client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from dfp.settings import Settings

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Embedded mode's folder (SQLite database, broker, local key). Env: DFP_DATA_DIR.",
        show_default=False,
    ),
]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="Server URL. Env: DFP_URL.", show_default=False)
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="API key. Env: DFP_API_KEY.", show_default=False)
]


def load_settings(data_dir: Path | None = None) -> Settings:
    """Settings from the environment, with --data-dir applied (and exported to child processes)."""
    from dfp.settings import Settings

    if data_dir is not None:
        os.environ["DFP_DATA_DIR"] = str(data_dir.expanduser().resolve())
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the DFP_ variable's field
        from dfp.cli.errors import fail

        fail(f"invalid DFP_* setting: {str(exc).splitlines()[1:3]}")
