"""The OpenAPI document's shared parts: response headers, non-JSON bodies, error components.

Routes declare errors with `api.errors.error_responses(...)`, headers with the constants here,
and non-JSON bodies with `file_response(...)` plus `response_class=Response` (so FastAPI does
not also declare `application/json` for them); `install(app)` adds the error components.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header

from api.errors import error_responses, error_schemas

LOCATION_HEADER = {
    "Location": {
        "description": "The path of the experiment just submitted",
        "schema": {"type": "string"},
    }
}
IDEMPOTENT_REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when an earlier submission with this Idempotency-Key and body "
        "was returned instead of a new one",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
CONTENT_DISPOSITION_HEADER = {
    "Content-Disposition": {
        "description": "`attachment` with a file name",
        "schema": {"type": "string"},
    }
}


def file_response(
    media_type: str,
    description: str,
    *,
    binary: bool = False,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A 200 entry for a body that is not JSON: text (CSV, Prometheus) or bytes (PNG)."""
    schema: dict[str, Any] = {"type": "string"}
    if binary:
        schema["format"] = "binary"
    response: dict[str, Any] = {
        "description": description,
        "content": {media_type: {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


# Every operation answers 422 for a query parameter it does not take (api.deps), and every
# one with a body 413/415 for one too large or not JSON (api.request_body).
ALWAYS = (422,)
WITH_BODY = (413, 415, 422)
BODY_METHODS = frozenset({"post", "put", "patch"})


def _walk(node: Any) -> Any:
    """Every dict in a JSON document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _kinds(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("properties", {}).get("kind", {})
    if "const" in kind:
        return [kind["const"]]
    return list(kind.get("enum", []))


def _refine_unions(schemas: dict[str, Any]) -> None:
    """Unions a generated client can load: a `kind` discriminator where every member has one,
    and constant members (`'all'`, `'auto'`) after the structured ones, as enums."""
    for node in _walk(schemas):
        for key in ("oneOf", "anyOf"):
            members = node.get(key)
            if not isinstance(members, list):
                continue
            refs = [m.get("$ref", "") for m in members]
            targets = [schemas.get(ref.rsplit("/", 1)[-1], {}) for ref in refs]
            if all(refs) and all(_kinds(t) for t in targets):
                pairs = zip(refs, targets, strict=True)
                mapping = {kind: ref for ref, target in pairs for kind in _kinds(target)}
                node["discriminator"] = {"propertyName": "kind", "mapping": mapping}
                continue
            constants = [m for m in members if "const" in m]
            if constants:
                for member in constants:
                    member["enum"] = [member.pop("const")]
                node[key] = [m for m in members if m not in constants] + constants


def _refine_fields(schemas: dict[str, Any]) -> None:
    """Fields whose declared type says less than what the server accepts or returns."""
    analysis = schemas.get("AnalysisSpec", {}).get("properties", {})
    for member in analysis.get("layers", {}).get("oneOf", []):
        if member.get("type") == "array":
            # `-3` counts from the output; YAML and JSON give it as an integer.
            member["items"] = {"anyOf": [member["items"], {"type": "integer"}]}
    for name in ("ExperimentPublic", "ResultsPublic"):
        spec = schemas.get(name, {}).get("properties", {}).get("spec")
        if spec is not None and "ExperimentSpec" in schemas:
            spec.clear()
            spec.update(
                {"$ref": "#/components/schemas/ExperimentSpec", "description": "The stored spec."}
            )


def _generated_summary(summary: str) -> bool:
    """Whether FastAPI made the summary from the function name ("Get Results Csv")."""
    return summary.replace(" ", "").isalnum() and summary.istitle()


def _summaries_and_statuses(paths: dict[str, Any]) -> None:
    for operations in paths.values():
        for method, operation in operations.items():
            description = operation.get("description", "").strip()
            if description and _generated_summary(operation.get("summary", "")):
                operation["summary"] = description.splitlines()[0].rstrip(".")
            responses = operation.setdefault("responses", {})
            for status in WITH_BODY if method in BODY_METHODS else ALWAYS:
                if str(status) not in responses:
                    responses.update({str(k): v for k, v in error_responses(status).items()})


def _environment_schema() -> dict[str, Any]:
    from dfp_engine.results import Environment

    schema = Environment.model_json_schema()
    schema["title"] = "EnvironmentPublic"
    schema["properties"]["worker_host"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": "The worker process that ran it.",
    }
    schema["additionalProperties"] = True
    schema.pop("required", None)  # results stored by older versions hold fewer fields
    return schema


def refine(document: dict[str, Any]) -> dict[str, Any]:
    """The document FastAPI builds, made precise where it is vague (see the helpers)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(error_schemas())
    if "ExperimentSpec" not in schemas:
        from dfp_engine.spec import ExperimentSpec

        spec = ExperimentSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in spec.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas["ExperimentSpec"] = spec
    schemas.setdefault("EnvironmentPublic", _environment_schema())
    environment = schemas.get("RunResultPublic", {}).get("properties", {}).get("environment")
    if environment is not None:
        environment.clear()
        environment["anyOf"] = [
            {"$ref": "#/components/schemas/EnvironmentPublic"},
            {"type": "null"},
        ]
    _refine_unions(schemas)
    _refine_fields(schemas)
    _summaries_and_statuses(document.get("paths", {}))
    return document


def install(app: FastAPI) -> None:
    """Build the document once, refined (see `refine`)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            app.openapi_schema = refine(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


# The Idempotency-Key header of every submission operation.
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        description="Repeat a submission safely: the same key and body return the same job "
        "(printable ASCII).",
    ),
]
