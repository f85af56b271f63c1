"""The training section of a spec: optimiser, schedule, epochs, loss and device."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from dfp_engine.spec.base import MAX_COUNT, MAX_EPOCHS, MAX_SEED, SpecModel, field_error


class LRSchedule(SpecModel):
    """Step schedule: multiply the learning rate by `gamma` at each milestone epoch."""

    milestones: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] = Field(
        default_factory=list, max_length=100
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v) or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("must be strictly increasing positive epochs")
        return v


class TrainingSpec(SpecModel):
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule)
    batch_size: int | None = Field(None, ge=1, le=MAX_COUNT, description="null means full batch.")
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    max_steps: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="Stop after this many optimizer steps."
    )
    loss: Literal["mse", "cross_entropy"] = Field(
        "mse", description="mse on one-hot (classification) or real targets; cross_entropy."
    )
    target_loss: float | None = Field(
        None, gt=0.0, le=1e6, description="Train loss for time-to-target."
    )
    stop_at_target: bool = Field(False, description="End the run once target_loss is reached.")
    history_every: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="Log every k epochs; null keeps the history near 1000 points.",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d{1,3})?)$")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            field_error(("nesterov",), "needs optimizer 'sgd' with momentum > 0", self.nesterov)
        if self.stop_at_target and self.target_loss is None:
            field_error(("stop_at_target",), "needs target_loss", self.stop_at_target)
        return self
