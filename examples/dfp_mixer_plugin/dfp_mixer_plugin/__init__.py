"""An example dfp model plugin: a small MLP-Mixer (Tolstikhin et al., 2021) for images.

Images (c, h, w) are cut into p x p patches, embedded to `dim` channels, mixed by `depth`
blocks (token mixing across patches, then channel mixing, each a residual MLP after a
LayerNorm), averaged over patches and classified. Capture points: `embed`, `blocks.0` ...
`blocks.{depth-1}`, `pool`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class MixerParams(BaseModel):
    """What a spec may set under `model.params`."""

    model_config = ConfigDict(extra="forbid")

    patch: int = Field(2, ge=1, le=32, description="Patch side in pixels.")
    dim: int = Field(32, ge=1, le=1024, description="Channels per token.")
    depth: int = Field(2, ge=1, le=24, description="Mixer blocks.")
    expansion: int = Field(2, ge=1, le=8, description="Hidden width of each MLP, times its input.")


class _MLP(nn.Sequential):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class MixerBlock(nn.Module):
    """x (n, tokens, dim) -> the same shape: token mixing, then channel mixing."""

    def __init__(self, tokens: int, dim: int, expansion: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.tokens = _MLP(tokens, tokens * expansion)
        self.norm2 = nn.LayerNorm(dim)
        self.channels = _MLP(dim, dim * expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        out: torch.Tensor = x + self.channels(self.norm2(x))
        return out


class Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)  # (n, tokens, dim) -> (n, dim)


class Embed(nn.Module):
    """Images (n, c, h, w) -> patch tokens (n, tokens, dim)."""

    def __init__(self, channels: int, patch: int, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).transpose(1, 2)


class Mixer(nn.Module):
    def __init__(self, params: MixerParams, input_shape: Sequence[int], n_outputs: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"mixer needs images (c, h, w); inputs have shape {tuple(input_shape)}"
            )
        c, h, w = input_shape
        if h % params.patch or w % params.patch:
            raise ValueError(f"mixer: patch {params.patch} does not divide the image {h} x {w}")
        tokens = (h // params.patch) * (w // params.patch)
        self.embed = Embed(c, params.patch, params.dim)
        self.blocks = nn.Sequential(
            *(MixerBlock(tokens, params.dim, params.expansion) for _ in range(params.depth))
        )
        self.pool = Pool()
        self.head = nn.Linear(params.dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.pool(self.blocks(self.embed(x))))
        return out


class MixerPlugin:
    """The object the `dfp.models` entry point names."""

    params = MixerParams

    def build(self, params: MixerParams, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
        return Mixer(params, input_shape, n_outputs)

    def capture_points(self, params: MixerParams) -> list[str]:
        return ["embed", *(f"blocks.{i}" for i in range(params.depth)), "pool"]


PLUGIN = MixerPlugin()
