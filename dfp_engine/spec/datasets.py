"""Dataset sections of a spec: one model per `kind`, and the union over them."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from dfp_engine.expression import parse_expression
from dfp_engine.spec.base import (
    MAX_COUNT,
    MAX_INTERVAL,
    MAX_SEED,
    PlainText,
    SpecModel,
    field_error,
    kind_tag,
)

InputScaling = Literal["none", "standardize", "minmax", "max_abs"]

# Dataset kinds whose inputs are images (c, h, w); npz may be either, decided by its array shape.
IMAGE_DATASETS = frozenset({"digits", "mnist", "fashion_mnist", "cifar10"})
REGRESSION_DATASETS = frozenset({"synthetic_1d", "synthetic_nd"})


class DatasetCommon(SpecModel):
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share held out for testing.")
    scaling: InputScaling = Field("none", description="Input scaling, fitted on the train split.")
    max_train_samples: int | None = Field(
        None, ge=2, le=MAX_COUNT, description="Seeded subset of the train split."
    )
    max_test_samples: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="Seeded subset of the test split."
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed for generation, splitting and subsetting."
    )


class Synthetic1DDataset(DatasetCommon):
    """y = expression(x) on n points of an interval (a regression target)."""

    kind: Literal["synthetic_1d"] = "synthetic_1d"
    expression: str = Field(
        "cos(3*x) + cos(5*x)",
        max_length=500,
        description="Target y(x): numbers, x, pi, e, + - * / ** and whitelisted functions.",
    )
    n_points: int = Field(61, ge=2, le=1_000_000)
    interval: tuple[float, float] = (-math.pi, math.pi)
    sampling: Literal["grid", "uniform"] = Field(
        "grid", description="Evenly spaced points, or seeded uniform draws."
    )
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("expression")
    @classmethod
    def _parse(cls, v: str) -> str:
        parse_expression(v)
        return v

    @field_validator("interval")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError("must be two finite numbers with low < high")
        if max(abs(lo), abs(hi)) > MAX_INTERVAL:
            raise ValueError(f"must lie within [-{MAX_INTERVAL:g}, {MAX_INTERVAL:g}]")
        return v


class SyntheticNDDataset(DatasetCommon):
    """x uniform in [-1, 1]^dim with a named regression target family (see datasets.py)."""

    kind: Literal["synthetic_nd"] = "synthetic_nd"
    family: Literal["cosine_sum", "radial_cosine", "gaussian_bumps", "parity"] = "cosine_sum"
    dim: int = Field(2, ge=1, le=10_000)
    n_samples: int = Field(1000, ge=2, le=1_000_000)
    frequency: float = Field(1.0, gt=0.0, le=1_000.0)


class DigitsDataset(DatasetCommon):
    """scikit-learn's bundled 8x8 handwritten digits (1 797 images, 10 classes), in [0, 1]."""

    kind: Literal["digits"] = "digits"


class MNIST1DDataset(DatasetCommon):
    """MNIST-1D generated locally by the mnist1d package's generator (40-sample signals)."""

    kind: Literal["mnist1d"] = "mnist1d"
    n_samples: int = Field(4000, ge=20, le=200_000)


class TorchvisionDataset(DatasetCommon):
    """MNIST / Fashion-MNIST / CIFAR-10 read from a local folder in torchvision's layout."""

    kind: Literal["mnist", "fashion_mnist", "cifar10"]
    root: PlainText = Field(
        "data", min_length=1, max_length=4096, description="Folder above MNIST/ etc."
    )
    allow_download: bool = Field(False, description="Fetch missing files (needs torchvision).")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Unused: the official split.")


class NpzDataset(DatasetCommon):
    """A user file holding `x` (n, ...) and `y` (n,) ints = classes, or floats (n,) / (n, c)."""

    kind: Literal["npz"] = "npz"
    path: PlainText = Field(..., min_length=1, max_length=4096)


ArrayName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]


class UploadedDataset(DatasetCommon):
    """An .npz uploaded to the dfp service (POST /v1/datasets), named by its id; the service
    checks the id and array names at submission and its workers read the stored file."""

    kind: Literal["uploaded"] = "uploaded"
    id: uuid.UUID = Field(..., description="The id POST /v1/datasets answered.")
    x: ArrayName = Field("x", description="Array of inputs, (n, ...).")
    y: ArrayName = Field("y", description="Array of targets: (n,) int classes or real (n[, c]).")
    x_test: ArrayName | None = Field(None, description="Held-out inputs (with y_test).")
    y_test: ArrayName | None = Field(None, description="Held-out targets (with x_test).")

    @model_validator(mode="after")
    def _test_pair(self) -> UploadedDataset:
        if (self.x_test is None) != (self.y_test is None):
            field_error(("x_test",), "give both x_test and y_test, or neither", self.x_test)
        return self


DatasetSpec = Annotated[
    Annotated[Synthetic1DDataset, Tag("synthetic_1d")]
    | Annotated[SyntheticNDDataset, Tag("synthetic_nd")]
    | Annotated[DigitsDataset, Tag("digits")]
    | Annotated[MNIST1DDataset, Tag("mnist1d")]
    | Annotated[TorchvisionDataset, Tag("torchvision")]
    | Annotated[NpzDataset, Tag("npz")]
    | Annotated[UploadedDataset, Tag("uploaded")],
    Discriminator(
        kind_tag(
            "synthetic_1d", dict.fromkeys(("mnist", "fashion_mnist", "cifar10"), "torchvision")
        ),
        custom_error_type="dataset_kind",
        custom_error_message="kind must be one of synthetic_1d, synthetic_nd, digits, mnist1d, "
        "mnist, fashion_mnist, cifar10, npz, uploaded",
    ),
]
