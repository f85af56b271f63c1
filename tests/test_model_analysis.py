"""analyze_model and FrequencyMonitor on networks the engine knows nothing about."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dfp_engine import FrequencyMonitor, analyze_model
from dfp_engine.results import ExperimentResult
from dfp_engine.selectors import parse_selector

DELTAS = [0.05, 0.2, 1.0, 5.0]


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Linear(width, width)
        self.conv2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class Pair(nn.Module):
    """Returns a tuple: (features, an auxiliary tensor of another width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.proj(x)
        return h, h[:, :2] * 3.0


class Keyed(nn.Module):
    """Returns a dict, the interesting tensor not first."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"gate": torch.sigmoid(x), "hidden": torch.tanh(x) * 2.0}


class Net(nn.Module):
    def __init__(self, d_in: int = 3, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(d_in, width)
        self.blocks = nn.Sequential(Residual(width), Residual(width))
        self.pair = Pair(width)
        self.keyed = Keyed()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        h, _ = self.pair(h)
        h = self.keyed(h)["hidden"]
        return self.head(self.drop(h))


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net()


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(120, 3, generator=gen)
    y = torch.randint(0, 3, (120,), generator=gen)
    return x, y


def reference_lfr(z: np.ndarray, labels: np.ndarray, deltas: list[float]) -> np.ndarray:
    """Dense float64 LFR after max-abs-per-dim scaling: the textbook formulas."""
    z = z.astype(np.float64)
    scale = np.abs(z).max(axis=0)
    z = z / np.where(scale > 0, scale, 1.0)
    y = np.eye(int(labels.max()) + 1)[labels]
    dist = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    out = []
    for delta in sorted(deltas, reverse=True):
        g = np.exp(-dist / (2 * delta))
        low = g @ y / g.sum(axis=1, keepdims=True)
        out.append((low**2).sum() / (y**2).sum())
    return np.array(out)


def hooked_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Raw outputs of named modules, by hooks written here (independent of the engine)."""
    modules = dict(model.named_modules())
    seen: dict[str, Any] = {}
    handles = [
        modules[n].register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o)) for n in names
    ]
    model.eval()
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    seen["output"] = out
    return seen


def test_layers_match_a_float64_reference_on_hook_captured_outputs(
    net: Net, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = data
    layers = ["input", "blocks.0", "blocks.1.conv2", "pair", "pair[1]", "keyed['hidden']", "output"]
    result = analyze_model(net, x, y, layers, deltas=DELTAS, dtype="float64", batch_size=50)
    raw = hooked_outputs(net, x, ["blocks.0", "blocks.1.conv2", "pair", "keyed"])
    expected = {
        "input": x,
        "blocks.0": raw["blocks.0"],
        "blocks.1.conv2": raw["blocks.1.conv2"],
        "pair": raw["pair"][0],  # a tuple means its first tensor
        "pair[1]": raw["pair"][1],
        "keyed['hidden']": raw["keyed"]["hidden"],
        "output": raw["output"],
    }
    assert [e.layer for e in result.layers] == layers
    for name, tensor in expected.items():
        entry = result.layer(name)
        z = tensor.flatten(1).numpy()
        assert entry.dim == z.shape[1] and entry.n_samples == 120
        np.testing.assert_allclose(entry.lfr, reference_lfr(z, y.numpy(), DELTAS), rtol=1e-9)
    assert result.layer("pair[1]").dim == 2


def test_a_dataloader_gives_the_same_result_as_tensors(
    net: Net, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = data
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    from_loader = analyze_model(net, loader, None, ["blocks.1", "keyed"], deltas=DELTAS)
    from_tensors = analyze_model(net, x, y, ["blocks.1", "keyed"], deltas=DELTAS)
    for a, b in zip(from_loader.layers, from_tensors.layers, strict=True):
        np.testing.assert_allclose(a.lfr, b.lfr, rtol=1e-6)
    # a dict output without a selector means its first tensor: the sigmoid gate
    gate = torch.sigmoid(hooked_outputs(net, x, ["pair"])["pair"][0]).numpy()
    np.testing.assert_allclose(
        from_loader.layer("keyed").lfr, reference_lfr(gate, y.numpy(), DELTAS), rtol=1e-5
    )


def test_real_targets_and_numpy_inputs(net: Net, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = data
    targets = np.sin(x[:, 0].numpy().astype(np.float64))
    result = analyze_model(net, x.numpy().astype(np.float64), targets, "stem", auto_deltas=6)
    entry = result.layers[0]
    assert len(entry.deltas) == 6 and entry.lfr_limit is not None
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in entry.lfr)


def test_the_spill_path_streams_from_files_and_matches(
    net: Net, data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    x, y = data
    layers = ["stem", "blocks.0", "output"]
    in_memory = analyze_model(net, x, y, layers, deltas=DELTAS, batch_size=16)
    # 120 rows x 8 floats x 4 bytes = 3840 bytes a hidden layer: a 4 KiB budget spills one
    spilled = analyze_model(
        net, x, y, layers, deltas=DELTAS, batch_size=16, max_memory=4096, spill_dir=tmp_path
    )
    assert in_memory.spilled_layers == []
    assert len(spilled.spilled_layers) >= 1
    for a, b in zip(spilled.layers, in_memory.layers, strict=True):
        np.testing.assert_allclose(a.lfr, b.lfr, rtol=1e-6)
    nothing = analyze_model(net, x, y, layers, deltas=DELTAS, max_memory=0, spill_dir=tmp_path)
    assert sorted(nothing.spilled_layers) == sorted(layers)
    assert list(tmp_path.iterdir()) == []  # spill files are removed


def test_unknown_layer_names_list_the_closest() -> None:
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4)))
    with pytest.raises(ValueError, match=r"unknown layer 'featurs.2'; closest: features\.2"):
        analyze_model(model, torch.zeros(4, 2), [0, 1, 0, 1], ["featurs.2"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pair[x]", "an accessor is"),
        ("[0]", "expected a module name"),
        ("pair[0", "expected a module name"),
    ],
)
def test_bad_selector_syntax(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_selector(text)


def test_selector_syntax() -> None:
    s = parse_selector("encoder.layers.3[1]['h'][\"k\"][-1]")
    assert s.name == "encoder.layers.3" and s.path == (1, "h", "k", -1)


class Transposed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.T


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(3, 3)
        self.unused = nn.Linear(3, 3)
        self.flip = Transposed()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.flip(x)
        return self.shared(self.shared(x))


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bad = nn.Identity()
        self.fine = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fine(self.bad(x / 0.0))


@pytest.mark.parametrize(
    ("model", "layer", "message"),
    [
        (Twice(), "unused", "layer 'unused' produced no tensor"),
        (Twice(), "shared", "layer 'shared' ran 2 times"),
        (Twice(), "flip", "layer 'flip' gave 3 rows for a batch of 10 inputs"),
        (Broken(), "bad", "layer 'bad' holds NaN or inf"),
        (Net(), "pair[5]", "layer 'pair\\[5\\]': index 5 is out of range"),
        (Net(), "keyed['nope']", "no key 'nope'; the dict has 'gate', 'hidden'"),
        (Net(), "stem[0]", "needs a tuple or list"),
    ],
)
def test_bad_layers_are_named_and_hooks_are_removed(
    model: nn.Module, layer: str, message: str
) -> None:
    model.train()
    x = torch.randn(10, 3) + 2.0
    with pytest.raises(ValueError, match=message):
        analyze_model(model, x, torch.zeros(10, dtype=torch.long), [layer], deltas=DELTAS)
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_targets_with_the_wrong_row_count(
    net: Net, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = data
    with pytest.raises(ValueError, match="targets have 119 rows but the inputs have 120"):
        analyze_model(net, x, y[:-1], ["stem"], deltas=DELTAS)
    with pytest.raises(ValueError, match="targets: none given"):
        analyze_model(net, x, None, ["stem"], deltas=DELTAS)


def test_modes_are_restored_module_by_module_and_eval_is_used(
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = data
    torch.manual_seed(0)
    net = Net()
    net.train()
    net.blocks.eval()  # a frozen part inside a training model stays frozen
    seen: list[bool] = []
    net.drop.register_forward_hook(lambda m, a, o: seen.append(m.training))
    result = analyze_model(net, x, y, ["drop"], deltas=DELTAS)
    assert seen and not any(seen)  # dropout ran in eval mode
    assert net.training and net.drop.training and not net.blocks.training
    assert not net.blocks[0].conv1.training
    # eval-mode dropout is the identity: the same as keyed['hidden']
    again = analyze_model(net, x, y, ["keyed['hidden']"], deltas=DELTAS)
    np.testing.assert_allclose(result.layers[0].lfr, again.layers[0].lfr, rtol=1e-7)
    assert all(p.grad is None for p in net.parameters())


def test_an_error_inside_forward_removes_the_hooks(net: Net) -> None:
    net.train()
    with pytest.raises(RuntimeError):
        analyze_model(net, torch.zeros(4, 5), [0, 1, 2, 0], ["stem", "blocks.0"])
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


def test_the_model_is_not_moved(net: Net, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    before = [p.device for p in net.parameters()]
    analyze_model(net, x, y, ["stem"], deltas=DELTAS, device="cpu")
    assert [p.device for p in net.parameters()] == before


def test_outputs_as_predictions_for_the_filtering_test(
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = data
    model = nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1))
    result = analyze_model(model, x, y, ["input"], deltas=DELTAS, predictions="output")
    entry = result.layers[0]
    assert entry.e_low is not None and entry.e_high is not None
    assert len(entry.e_low) == len(DELTAS)
    with pytest.raises(ValueError, match="predictions must be an array or 'output'"):
        analyze_model(model, x, y, ["input"], predictions="outputs")


def test_to_dict_frame_and_plot(
    net: Net, data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    x, y = data
    result = analyze_model(net, x, y, ["stem", "blocks.1"], deltas=DELTAS)
    doc = json.loads(json.dumps(result.to_dict()))
    assert [e["layer"] for e in doc["layers"]] == ["stem", "blocks.1"]
    for key in ("deltas", "lfr", "rdf_inverse_deltas", "rdf", "peak_inverse_delta", "lfr_limit"):
        assert key in doc["layers"][0]
    frame = result.to_frame()
    assert len(frame) == 2 * len(DELTAS)
    assert list(frame["layer"].unique()) == ["stem", "blocks.1"]
    first = frame[frame["layer"] == "stem"]
    assert np.isnan(first["rdf"].iloc[0])
    np.testing.assert_allclose(first["rdf"].iloc[1:], result.layers[0].rdf)
    fig = result.plot(tmp_path / "rdf.png")
    assert (tmp_path / "rdf.png").stat().st_size > 1000
    assert [line.get_label() for line in fig.axes[0].lines if not line.get_label().startswith("_")]


def test_monitor_records_checkpoints_in_the_experiment_result_shape(
    net: Net, data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    from dfp.figures import figure_names, render_figure

    x, y = data
    loader = DataLoader(TensorDataset(x, y), batch_size=40, shuffle=True)
    monitor = FrequencyMonitor(net, loader, None, ["stem", "blocks.1"], deltas=DELTAS)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for epoch in range(3):
        if epoch in (0, 2):
            monitor.record(epoch=epoch, step=epoch * 3, train_loss=1.0 / (epoch + 1))
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            optimizer.step()
    doc = monitor.result()
    parsed = ExperimentResult.model_validate(doc)
    run = parsed.runs[0]
    assert [c.epoch for c in run.checkpoints] == [0, 2]
    assert [[la.layer for la in c.layers] for c in run.checkpoints] == [["stem", "blocks.1"]] * 2
    assert run.checkpoints[0].layers[0].lfr != run.checkpoints[1].layers[0].lfr  # it trained
    assert "rdf_layers_run_0" in figure_names(doc) and "loss_curves" in figure_names(doc)
    assert render_figure(doc, "rdf_peaks_run_0").startswith(b"\x89PNG")
    path = monitor.save(tmp_path / "monitor.json")
    assert json.loads(path.read_text()) == doc
    assert len(monitor.to_frame()) == 2 * 2 * len(DELTAS)
    # the probe set is fixed: the shuffling loader was read once, so a record now is reproducible
    again = monitor.record(epoch=3)
    np.testing.assert_allclose(again.layers[0].lfr, monitor.record(epoch=4).layers[0].lfr)


def test_monitor_rejects_bad_names_and_options_up_front(net: Net) -> None:
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="closest: stem"):
        FrequencyMonitor(net, x, [0, 1, 0, 1], ["stm"])
    with pytest.raises(ValueError, match="unexpected keyword argument 'deltaz'"):
        FrequencyMonitor(net, x, [0, 1, 0, 1], ["stem"], deltaz=[1, 2])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_cuda_stays_there(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    torch.manual_seed(0)
    cpu_net = Net()
    gpu_net = Net().cuda()
    gpu_net.load_state_dict(cpu_net.state_dict())
    on_gpu = analyze_model(gpu_net, x, y, ["blocks.1"], deltas=DELTAS, device="cuda")
    on_cpu = analyze_model(cpu_net, x, y, ["blocks.1"], deltas=DELTAS)
    assert all(p.is_cuda for p in gpu_net.parameters())
    np.testing.assert_allclose(on_gpu.layers[0].lfr, on_cpu.layers[0].lfr, rtol=1e-4)
