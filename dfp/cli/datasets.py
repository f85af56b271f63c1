"""`dfp datasets upload|list|show|delete`: .npy/.npz files stored by the service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dfp.cli.app import app
from dfp.cli.client import JsonOption, connect
from dfp.cli.errors import fail
from dfp.cli.options import ApiKeyOption, UrlOption

if TYPE_CHECKING:
    from dfp.datasets.schemas import DatasetPublic

datasets_app = typer.Typer(help="Datasets uploaded to the service.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


def describe(dataset: DatasetPublic) -> str:
    lines = [f"{dataset.id}  {dataset.name}  {dataset.file_kind}  {dataset.size_bytes} bytes"]
    for array in dataset.arrays:
        shape = "x".join(str(n) for n in array.shape) or "scalar"
        flag = "" if array.finite else "  (has NaN/inf)"
        lines.append(f"  {array.name}: {shape} {array.dtype}{flag}")
    return "\n".join(lines)


@datasets_app.command("upload")
def upload(
    file: Annotated[Path, typer.Argument(help="An .npy or .npz file.")],
    name: Annotated[str | None, typer.Option(help="A name (default: the file name).")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload a file; prints the dataset id (the same id again for the same bytes)."""
    if not file.is_file():
        fail(f"file '{file}' does not exist")
    with connect(url, api_key) as client:
        dataset = client.upload_dataset(file, name=name)
    print(dataset.model_dump_json(indent=2) if as_json else dataset.id)


@datasets_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List your datasets, newest first."""
    if not 1 <= limit <= 200:
        fail(f"--limit must be between 1 and 200, got {limit}")
    with connect(url, api_key) as client:
        page = client.datasets(limit=limit)
    if as_json:
        print(page.model_dump_json(indent=2))
        return
    for dataset in page.data:
        arrays = ", ".join(a.name for a in dataset.arrays)
        print(f"{dataset.id}  {dataset.created_at:%Y-%m-%d %H:%M}  {dataset.name}  [{arrays}]")


@datasets_app.command("show")
def show(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show a dataset's arrays: names, shapes, dtypes."""
    with connect(url, api_key) as client:
        dataset = client.dataset(dataset_id)
    print(dataset.model_dump_json(indent=2) if as_json else describe(dataset))


@datasets_app.command("delete")
def delete(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a dataset that no unfinished work reads."""
    with connect(url, api_key) as client:
        client.delete_dataset(dataset_id)
    print(f"deleted {dataset_id}")
