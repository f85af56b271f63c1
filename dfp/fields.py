"""Field paths of validation errors, written the way users write them in a spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, get_args, get_origin

from pydantic import Tag

from dfp_engine.spec import DatasetSpec, ModelSpec

REQUEST_PARTS = {"body", "query", "path", "header"}


def _discriminator_tags() -> frozenset[str]:
    # Pydantic puts the chosen union member's tag in error locations ("model.mlp.depth");
    # users wrote "model.depth", so the tags are dropped from field paths.
    tags: set[str] = set()
    for union in (DatasetSpec, ModelSpec):
        for member in get_args(get_args(union)[0]):
            if get_origin(member) is Annotated:
                member, *metadata = get_args(member)
                tags.update(m.tag for m in metadata if isinstance(m, Tag))
            tags.update(get_args(member.model_fields["kind"].annotation))
    return frozenset(tags)


DISCRIMINATOR_TAGS = _discriminator_tags()


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'model', 'mlp', 'depth') -> 'model.depth'; ('query', 'limit') -> 'limit'."""
    parts = list(loc)
    source = parts.pop(0) if parts and parts[0] in REQUEST_PARTS else None
    kept = [str(p) for p in parts if not (isinstance(p, str) and p in DISCRIMINATOR_TAGS)]
    path = ".".join(kept)
    if source == "header":
        return f"header {path}"
    return path or ("request body" if source == "body" else "spec")
