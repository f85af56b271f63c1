"""Routes of /v1/datasets: upload (multipart, streamed to disk), list, read, delete."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import IO, Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api.deps import Caller, CallerDep
from api.errors import error_responses
from api.experiments import json_response
from dfp.datasets import service
from dfp.datasets.blobs import blob_store
from dfp.datasets.schemas import DatasetPublic, DatasetsPublic
from dfp.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_PATH = "/v1/datasets"
# Room for the multipart boundaries, part headers and the name field around the file.
FORM_OVERHEAD_BYTES = 64 * 1024

UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "An .npy or .npz file (numbers only; no pickles).",
                    },
                    "name": {"type": "string", "maxLength": service.MAX_NAME},
                },
            }
        }
    },
}


def too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"dataset larger than {max_bytes} bytes (DFP_MAX_DATASET_BYTES)",
        details={"max_bytes": max_bytes, "field": "file"},
    )


async def _limited(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncGenerator[bytes, None]:
    """The request body, refused (413) as soon as it outgrows `max_bytes`."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > max_bytes + FORM_OVERHEAD_BYTES:
            raise too_large(max_bytes)
        yield chunk


async def _read_form(request: Request, max_bytes: int) -> tuple[UploadFile, str | None]:
    """The `file` part (spooled to a temporary file past 1 MiB) and the optional `name`."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            f"content type '{content_type or 'none'}' is not supported: send the file as "
            "multipart/form-data (field 'file')",
            details={"content_type": content_type or None},
        )
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), max_bytes),
        max_files=1,
        max_fields=1,
        max_part_size=4 * service.MAX_NAME,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequestError(
            f"request body: not a valid multipart form ({exc.message})",
            details={"field": "request body"},
        ) from None
    unknown = sorted(set(form.keys()) - {"file", "name"})
    if unknown:
        await form.close()
        raise InvalidRequestError(
            f"{unknown[0]}: not a field of an upload (send 'file' and optionally 'name')",
            details={"field": unknown[0]},
        )
    upload, name = form.get("file"), form.get("name")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise InvalidRequestError(
            "file: missing; send the .npy or .npz file in the form field 'file'",
            details={"field": "file"},
        )
    if name is not None and not isinstance(name, str):
        await form.close()
        raise InvalidRequestError("name: must be text, not a file", details={"field": "name"})
    if upload.size is not None and upload.size > max_bytes:
        await form.close()
        raise too_large(max_bytes)
    return upload, name


def _store(caller: Caller, source: IO[bytes], name: str) -> tuple[DatasetPublic, bool]:
    state = caller.state
    with caller.transaction() as (uow, owner):
        result = service.upload(
            uow,
            owner,
            source,
            name=name,
            store=blob_store(state.db, state.settings),
            settings=state.settings,
        )
        return service.public(result.dataset), result.created


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="uploadDataset",
    response_model=DatasetPublic,
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses={
        200: {"model": DatasetPublic, "description": "You had uploaded this exact file before"},
        **error_responses(401, 413, 415, 422, 503),
    },
)
async def upload_dataset(request: Request, caller: CallerDep) -> Response:
    """Upload an .npy or .npz file; its arrays are checked before anything is stored."""
    # The key is checked before a byte of the body is read: only its owner's uploads spool.
    await run_in_threadpool(caller.read, lambda _session, owner: owner)
    max_bytes = caller.state.settings.max_dataset_bytes
    # The key first: a bad one is 401 before its body is read (and not 415 for its form).
    await run_in_threadpool(caller.read, lambda session, owner: owner)
    upload, name = await _read_form(request, max_bytes)
    try:
        clean = service.clean_name(name, upload.filename)
        public, created = await run_in_threadpool(_store, caller, upload.file, clean)
    finally:
        await upload.close()
    code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return json_response(public, code, {"Location": f"/v1/datasets/{public.id}"})


@router.get(
    "",
    operation_id="listDatasets",
    response_model=DatasetsPublic,
    responses=error_responses(401, 422, 503),
)
def list_datasets(
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> Response:
    """List your datasets, newest first, one page at a time."""
    page = caller.read(
        lambda session, owner: service.list_datasets(session, owner, limit=limit, cursor=cursor)
    )
    return json_response(page)


@router.get(
    "/{dataset_id}",
    operation_id="getDataset",
    response_model=DatasetPublic,
    responses=error_responses(401, 404, 422, 503),
)
def get_dataset(dataset_id: uuid.UUID, caller: CallerDep) -> Response:
    """One dataset: its arrays' names, shapes and dtypes."""
    dataset = caller.read(lambda session, owner: service.get(session, owner, dataset_id))
    return json_response(service.public(dataset))


@router.delete(
    "/{dataset_id}",
    operation_id="deleteDataset",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 409, 422, 503),
)
def delete_dataset(dataset_id: uuid.UUID, caller: CallerDep) -> Response:
    """Delete a dataset that no unfinished experiment or analysis reads."""
    state = caller.state
    with caller.transaction() as (uow, owner):
        service.delete(uow, owner, dataset_id, store=blob_store(state.db, state.settings))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
