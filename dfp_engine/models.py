"""Networks whose hidden layers are modules with stable names (see dfp_engine.spec.models)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from dfp_engine.plugins import load_plugin
from dfp_engine.spec import (
    Activation,
    CNNModel,
    Initialization,
    MLPModel,
    ModelSpec,
    PluginModel,
    ResNetModel,
)
from dfp_engine.spec.models import RESNET_STAGES, hidden_names

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}
# ResNet18 for CIFAR: stage widths relative to the first stage, and the first conv's stride.
RESNET_STAGE_SCALE = (1, 2, 4, 8)
RESNET_STAGE_STRIDE = (1, 2, 2, 2)


class Network(nn.Module):
    """A feed-forward network whose hidden layers are modules with stable names."""

    def capture_points(self) -> dict[str, nn.Module]:
        """Hidden layers then `output`, in forward order; each module's output is h^[l]."""
        raise NotImplementedError


def _activation(name: Activation) -> nn.Module:
    return ACTIVATIONS[name]()


class MLP(Network):
    """x (n, ...) -> flatten -> [Linear, activation] x depth -> Linear."""

    def __init__(self, spec: MLPModel, in_features: int, n_outputs: int) -> None:
        super().__init__()
        widths = [in_features, *spec.widths()]
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b, bias=spec.bias), _activation(spec.activation))
            for a, b in itertools.pairwise(widths)
        )
        self.output = nn.Linear(widths[-1], n_outputs, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (n, ...) -> (n, d)
        for layer in self.hidden:
            h = layer(h)
        out: torch.Tensor = self.output(h)
        return out

    def capture_points(self) -> dict[str, nn.Module]:
        points: dict[str, nn.Module] = {f"hidden.{i}": m for i, m in enumerate(self.hidden, 1)}
        points["output"] = self.output
        return points


class _Head(nn.Module):
    """Flattened features -> [Linear, activation] per width; kept apart so every head is alike."""

    def __init__(self, in_features: int, widths: list[int], activation: Activation) -> None:
        super().__init__()
        sizes = [in_features, *widths]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), _activation(activation))
            for a, b in itertools.pairwise(sizes)
        )
        self.out_features = sizes[-1]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h)
        return h


def _image_shape(kind: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model '{kind}' needs image inputs of shape (channels, height, width); "
            f"this dataset gives {tuple(input_shape)}: use an image dataset or model 'mlp'"
        )
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


class VGG(Network):
    """Stages of 3x3 convs (+ optional batch norm) and a 2x2 max-pool, then a dense head."""

    def __init__(self, spec: CNNModel, input_shape: Sequence[int], n_outputs: int) -> None:
        super().__init__()
        c, h, w = _image_shape("cnn", input_shape)
        n_pools = len(spec.channels)
        if min(h, w) < 2**n_pools:
            raise ValueError(
                f"model 'cnn' with {n_pools} stages halves the image {n_pools} times and needs "
                f"at least {2**n_pools}x{2**n_pools} inputs; these are {h}x{w}"
            )
        stages: list[nn.Module] = []
        in_ch = c
        for out_ch in spec.channels:
            layers: list[nn.Module] = []
            for _ in range(spec.convs_per_stage):
                layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not spec.batch_norm))
                if spec.batch_norm:
                    layers.append(nn.BatchNorm2d(out_ch))
                layers.append(_activation(spec.activation))
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        flat = in_ch * (h // 2**n_pools) * (w // 2**n_pools)
        self.head = _Head(flat, spec.head_widths, spec.activation)
        self.output = nn.Linear(self.head.out_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for stage in self.stages:
            h = stage(h)  # (n, c, h, w) -> (n, c', h/2, w/2)
        out: torch.Tensor = self.output(self.head(h.flatten(1)))
        return out

    def capture_points(self) -> dict[str, nn.Module]:
        points: dict[str, nn.Module] = {f"stage.{i}": m for i, m in enumerate(self.stages, 1)}
        points.update({f"head.{i}": m for i, m in enumerate(self.head.layers, 1)})
        points["output"] = self.output
        return points


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, activation: Activation) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act1 = _activation(activation)
        self.act2 = _activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(self.conv1(x)))
        out: torch.Tensor = self.act2(self.bn2(self.conv2(h)) + self.shortcut(x))
        return out


class ResNet(Network):
    """CIFAR ResNet18 (3x3 stem, four stages of basic blocks) minus `variant` deepest stages.

    Global average pooling feeds the same dense head in every variant; only its input width
    follows the last remaining stage.
    """

    def __init__(self, spec: ResNetModel, input_shape: Sequence[int], n_outputs: int) -> None:
        super().__init__()
        c, _, _ = _image_shape("resnet", input_shape)
        width = spec.base_width
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            _activation(spec.activation),
        )
        n_stages = RESNET_STAGES - spec.variant
        stages: list[nn.Module] = []
        in_ch = width
        for scale, stride, blocks in zip(
            RESNET_STAGE_SCALE[:n_stages],
            RESNET_STAGE_STRIDE[:n_stages],
            spec.blocks_per_stage[:n_stages],
            strict=True,
        ):
            out_ch = width * scale
            layers = [
                BasicBlock(
                    in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, spec.activation
                )
                for i in range(blocks)
            ]
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = _Head(in_ch, spec.head_widths, spec.activation)
        self.output = nn.Linear(self.head.out_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        h = self.pool(h).flatten(1)  # (n, c, h, w) -> (n, c)
        out: torch.Tensor = self.output(self.head(h))
        return out

    def capture_points(self) -> dict[str, nn.Module]:
        points: dict[str, nn.Module] = {"stem": self.stem}
        points.update({f"stage.{i}": m for i, m in enumerate(self.stages, 1)})
        points.update({f"head.{i}": m for i, m in enumerate(self.head.layers, 1)})
        points["output"] = self.output
        return points


def initialize(
    model: nn.Module, scheme: Initialization, activation: Activation, std: float | None
) -> None:
    """Re-initialise every Linear and Conv2d weight by `scheme`; biases to zero (except default)."""
    if scheme == "default":
        return
    nonlinearity = activation if activation in ("tanh", "relu", "sigmoid") else "linear"
    gain = nn.init.calculate_gain(nonlinearity)
    for module in model.modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        weight = module.weight
        if scheme == "xavier_uniform":
            nn.init.xavier_uniform_(weight, gain=gain)
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(weight, gain=gain)
        elif scheme in ("kaiming_uniform", "kaiming_normal"):
            init = (
                nn.init.kaiming_uniform_ if scheme == "kaiming_uniform" else nn.init.kaiming_normal_
            )
            init(weight, nonlinearity=nonlinearity)
        else:  # normal: N(0, std²), std defaulting to 1/sqrt(fan_in)
            fan_in = weight[0].numel()
            nn.init.normal_(weight, 0.0, std if std is not None else 1.0 / math.sqrt(fan_in))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class PluginNetwork(Network):
    """A plugin's module; its capture points are submodules named by the plugin."""

    def __init__(self, module: nn.Module, points: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.points = list(points)
        for name in self.points:
            try:
                module.get_submodule(name)
            except AttributeError:
                raise ValueError(f"model plugin: the module has no submodule '{name}'") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out

    def capture_points(self) -> dict[str, nn.Module]:
        points = {name: self.module.get_submodule(name) for name in self.points}
        points["output"] = self.module
        return points


def build_model(spec: ModelSpec, input_shape: Sequence[int], n_outputs: int) -> Network:
    """The network for `spec` on inputs of `input_shape` (per sample) with `n_outputs` outputs."""
    model: Network
    if isinstance(spec, PluginModel):
        plugin = load_plugin(spec.name)
        params = spec.checked_params()
        module = plugin.build(params, tuple(input_shape), n_outputs)
        if not isinstance(module, nn.Module):
            raise ValueError(f"model plugin '{spec.name}': build did not return an nn.Module")
        return PluginNetwork(module, hidden_names(spec))
    if isinstance(spec, MLPModel):
        model = MLP(spec, math.prod(input_shape), n_outputs)
        initialize(model, spec.init, spec.activation, spec.init_std)
    elif isinstance(spec, CNNModel):
        model = VGG(spec, input_shape, n_outputs)
        initialize(model, spec.init, spec.activation, None)
    else:
        model = ResNet(spec, input_shape, n_outputs)
    names = list(model.capture_points())
    if names != [*hidden_names(spec), "output"]:  # pragma: no cover - a bug, not user input
        raise RuntimeError(f"capture points {names} disagree with the spec's names")
    return model
