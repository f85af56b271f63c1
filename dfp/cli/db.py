"""`dfp db upgrade|current`: the schema is migrated by an explicit command, never at API start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dfp.cli.app import app
from dfp.cli.errors import fail
from dfp.cli.options import DataDirOption, load_settings

if TYPE_CHECKING:
    from dfp.settings import Settings
    from dfp.storage.migrate import SchemaState

db_app = typer.Typer(help="Database schema: upgrade and inspect.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(
    data_dir: DataDirOption = None,
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Apply the migrations to DFP_DATABASE_URL (or the embedded SQLite file)."""
    from dfp.storage import migrate

    settings = load_settings(data_dir)
    url = settings.resolved_database_url()
    try:
        migrate.upgrade(url, revision)
    except Exception as exc:
        fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", exit_code=1)
    print(f"database at revision {revision if revision != 'head' else migrate.head_revision()}")


def database_schema(settings: Settings) -> SchemaState:
    """The configured database's schema state; exit status 1 if it cannot be reached."""
    from dfp.storage import migrate
    from dfp.storage.database import Database

    db = Database.from_settings(settings)
    try:
        return migrate.schema_state(db.engine)
    except Exception as exc:
        fail(f"database unreachable: {str(exc).splitlines()[0]}", exit_code=1)
    finally:
        db.dispose()


@db_app.command("current")
def current(data_dir: DataDirOption = None) -> None:
    """Print the database's schema revision and whether it is at head."""
    settings = load_settings(data_dir)
    url = settings.resolved_database_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        print(f"no database at {url.removeprefix('sqlite:///')} yet: run `dfp db upgrade`")
        raise typer.Exit(1)
    state = database_schema(settings)
    print(state.describe())
    if not state.is_current:
        raise typer.Exit(1)
