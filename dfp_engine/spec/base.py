"""What every spec section shares: the strict base model, plain text, limits and field errors."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

# Upper bounds that keep every number a spec can hold meaningful (and inside int64 and the
# seeders' range); the service's configurable limits (dfp.experiments.limits) are far lower.
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (mnist1d) takes 32-bit seeds
MAX_COUNT = 1_000_000_000  # samples, steps
MAX_EPOCHS = 10_000_000
MAX_UNITS = 100_000  # units or channels of one layer
MAX_INTERVAL = 1e6  # |x| of the synthetic 1-D interval


def _plain_text(value: str) -> str:
    """Free text (names, paths) holds no control characters and no lone surrogates: they would
    be rejected by the database, corrupt logs and file names, or hide what a name says."""
    for ch in value:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            raise ValueError(f"must not contain control characters (found {ch!r})")
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError("must be valid Unicode text (found a lone surrogate)")
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]


def field_error(loc: tuple[str | int, ...], message: str, value: Any = None) -> NoReturn:
    """Raise a validation error at `loc` (relative to the model being validated)."""
    error = PydanticCustomError("spec", message)  # type: ignore[arg-type]
    raise ValidationError.from_exception_data(
        "ExperimentSpec", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


class SpecModel(BaseModel):
    """Base for every spec part: unknown fields are errors, instances are immutable."""

    # NaN and infinity are refused everywhere: no spec field means anything by them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def kind_tag(default: str, aliases: dict[str, str]) -> Any:
    """Discriminator on `kind` that treats an omitted kind as `default`."""

    def tag(v: Any) -> str | None:
        kind = v.get("kind", default) if isinstance(v, dict) else getattr(v, "kind", None)
        return aliases.get(kind, kind) if isinstance(kind, str) else None

    return tag
