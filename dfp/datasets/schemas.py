"""Public shapes of the datasets API, shared by the server (responses) and the client."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ArrayPublic(BaseModel):
    """One array of an upload as checked on arrival."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    shape: list[int]
    dtype: str = Field(..., description="numpy's dtype string, e.g. '<f4'.")
    finite: bool = Field(..., description="False when a float array holds NaN or inf.")
    int_range: list[int] | None = Field(
        None, description="Smallest and largest value of an integer array."
    )


class DatasetPublic(BaseModel):
    """An uploaded file: what it holds and how to name it in specs and analyses."""

    id: str
    name: str
    sha256: str = Field(..., description="Of the file as uploaded; one copy per owner.")
    size_bytes: int
    file_kind: Literal["npy", "npz"]
    arrays: list[ArrayPublic]
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
    next_cursor: str | None = None
