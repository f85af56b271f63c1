"""Validation errors as a person reads them: the path they wrote and one line of reason."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

# Locations whose next segment may be a union tag rather than a field: tags are dropped from
# user-facing paths.
_TAGGED_UNIONS: dict[tuple[str | int, ...], set[str]] = {
    ("dataset",): {
        "synthetic_1d",
        "synthetic_nd",
        "digits",
        "mnist1d",
        "torchvision",
        "npz",
        "uploaded",
    },
    ("model",): {"mlp", "cnn", "resnet", "plugin"},
    ("analysis", "deltas"): {"auto", "list", "inverse", "grid"},
    ("analysis", "layers"): {"all", "list"},
    ("analysis", "checkpoints"): {"every", "list"},
}


def user_location(loc: tuple[int | str, ...]) -> list[int | str]:
    """The field names and indexes of a pydantic error location, union tags and type markers
    dropped: what a user wrote in the spec."""
    fields: list[int | str] = []
    tag_seen = False  # at most one tag follows each union location
    for segment in loc:
        if isinstance(segment, str) and ("[" in segment or "(" in segment):
            continue  # validator or type markers such as 'function-after[...]' or 'list[int]'
        if not tag_seen and segment in _TAGGED_UNIONS.get(tuple(fields), set()):
            tag_seen = True
            continue
        tag_seen = False
        fields.append(segment)
    return fields


def error_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the user wrote it: `analysis.layers[0]`, union tags dropped."""
    parts: list[str] = []
    for segment in user_location(loc):
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append(("." if parts else "") + segment)
    return "".join(parts)


def describe_validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line for a person: `field.path: reason` (plus how many further problems there are);
    with the `model` that was validated, a misspelt field gets its close match."""
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden" and model is not None:
        message = extra_field_message(model, tuple(first["loc"]), message)
    path = error_path(tuple(first["loc"]))
    line = f"{path}: {message}" if path else message
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


def _models_in(annotation: Any, tag: str | None = None) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold; with `tag`, only the union member so tagged."""
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        inner, *metadata = args
        tags = [m.tag for m in metadata if isinstance(m, Tag)]
        if tag is not None and tags and tag not in tags:
            return []
        return _models_in(inner, None if tags else tag)
    for arg in args:
        found.extend(_models_in(arg, tag))
    return found


def close_field(root: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """For an unknown field at `loc` (a pydantic error location), the closest field name the
    model at that place has, if one is close: `model.depht` -> `depth`."""
    if not loc or not isinstance(loc[-1], str):
        return None
    model: type[BaseModel] | None = root
    segments = list(loc[:-1])
    while segments and model is not None:
        segment = segments.pop(0)
        if isinstance(segment, int) or segment not in model.model_fields:
            return None
        annotation = model.model_fields[segment].annotation
        while segments and isinstance(segments[0], int):
            segments.pop(0)  # an item of a list: the list's own model
        tag = segments[0] if segments and isinstance(segments[0], str) else None
        candidates = _models_in(annotation, tag)
        if tag is not None and candidates and tag not in model_fields_of(candidates):
            segments.pop(0)  # the tag was a union member's, not a field
        model = candidates[0] if len(candidates) == 1 else None
    if model is None:
        return None
    matches = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return matches[0] if matches else None


def model_fields_of(models: list[type[BaseModel]]) -> set[str]:
    return {name for model in models for name in model.model_fields}


def extra_field_message(root: type[BaseModel], loc: tuple[int | str, ...], message: str) -> str:
    """pydantic's "Extra inputs are not permitted", with the close match when there is one."""
    match = close_field(root, loc)
    return f"{message}; did you mean '{match}'?" if match else message
