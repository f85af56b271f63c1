"""`dfp keys create|revoke|list`: API keys, stored hashed in the service's database."""

from __future__ import annotations

import typer

from dfp.cli.app import app
from dfp.cli.errors import fail
from dfp.cli.options import DataDirOption, load_settings
from dfp.errors import DfpError

keys_app = typer.Typer(help="API keys for the service.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    owner: str = typer.Option(..., "--owner", help="Who the key's experiments belong to."),
    data_dir: DataDirOption = None,
) -> None:
    """Create a key and print just the key (shown once; only its hash is stored)."""
    from dfp.keys.service import create_key
    from dfp.storage.database import Database

    db = Database.from_settings(load_settings(data_dir))
    try:
        with db.unit_of_work() as uow:
            created = create_key(uow.session, owner)
    except DfpError as exc:
        fail(exc.message)
    except Exception as exc:
        fail(f"cannot store the key: {str(exc).splitlines()[0]} (did you run `dfp db upgrade`?)", 1)
    finally:
        db.dispose()
    print(created.key)


@keys_app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="The key, or its id (the part after 'dfp_')."),
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a key; requests with it fail from now on."""
    from dfp.keys.service import revoke_key
    from dfp.storage.database import Database

    db = Database.from_settings(load_settings(data_dir))
    try:
        with db.unit_of_work() as uow:
            revoked = revoke_key(uow.session, key)
            key_id, owner = revoked.id, revoked.owner
    except DfpError as exc:
        fail(exc.message)
    finally:
        db.dispose()
    print(f"revoked key {key_id} of {owner}")


@keys_app.command("list")
def list_keys(
    owner: str | None = typer.Option(None, "--owner", help="Only this owner's keys."),
    data_dir: DataDirOption = None,
) -> None:
    """List key ids, owners and whether they are revoked (never the keys themselves)."""
    from dfp.keys import repository
    from dfp.storage.database import Database

    db = Database.from_settings(load_settings(data_dir))
    try:
        with db.unit_of_work() as uow:
            for key in repository.list_keys(uow.session, owner):
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                print(f"{key.id}  {key.owner:<20} created {key.created_at:%Y-%m-%d}  {state}")
    finally:
        db.dispose()
