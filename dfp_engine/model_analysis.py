"""Frequency analysis of the layers of any torch module, on the caller's inputs and targets.

`analyze_model` hooks the selected modules (dfp_engine.selectors), runs the model once over the
inputs in eval mode without gradients, flattens each selected output per sample into the
effective target function {(h_l(x_i), y_i)} (docs/method.md §1), keeps the captured rows within
`max_memory` (the rest spill to mapped files, dfp_engine.representations) and analyses every
layer with `analyze_frequency`, streaming spilled layers from their files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dfp_engine.capture import CAPTURE_BATCH, forward_hooks
from dfp_engine.frequency import DTYPES, ArrayLike, analyze_frequency, as_array, as_targets
from dfp_engine.representations import RepresentationStore
from dfp_engine.results import LayerAnalysis
from dfp_engine.selectors import Selector, resolve_selectors

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

# Captured representations held in memory at most, by default (bytes); larger ones spill.
DEFAULT_MAX_MEMORY = 4 * 2**30


@dataclass(frozen=True)
class ModelAnalysis:
    """One entry per analysed layer, in the order asked, as experiments store them."""

    layers: list[LayerAnalysis]
    n_samples: int
    capture_seconds: float
    analysis_seconds: float
    spilled_layers: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerAnalysis:
        """The entry of one layer selector."""
        for entry in self.layers:
            if entry.layer == name:
                return entry
        raise KeyError(f"no layer '{name}'; analysed: {[e.layer for e in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        """{"layers": [...], ...}: plain JSON-ready values."""
        return {
            "layers": [entry.model_dump(mode="json") for entry in self.layers],
            "n_samples": self.n_samples,
            "capture_seconds": self.capture_seconds,
            "analysis_seconds": self.analysis_seconds,
            "spilled_layers": list(self.spilled_layers),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per layer and δ (pandas, an optional dependency); RDF is NaN at the first δ."""
        return layer_frame(self.layers)

    def plot(self, path: str | Path | None = None, *, title: str | None = None) -> Figure:
        """RDF against 1/δ, one line per layer; saved as PNG when `path` is given."""
        from dfp_engine.plots import rdf_by_layer
        from dfp_engine.results import Checkpoint

        checkpoint = Checkpoint(epoch=0, step=0, layers=self.layers)
        heading = title or f"RDF of each layer's effective target (n = {self.n_samples})"
        fig = rdf_by_layer([checkpoint], heading, epoch_titles=False)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def layer_frame(layers: Sequence[LayerAnalysis], **columns: Any) -> pd.DataFrame:
    """Rows (layer, δ) of LFR and RDF with each layer's summaries; `columns` are constants."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is installed with dfp[frame]
        raise ImportError('to_frame needs pandas: pip install "dfp[frame]"') from exc
    rows = []
    for entry in layers:
        rdf = dict(zip(entry.rdf_inverse_deltas, entry.rdf, strict=True))
        for j, (delta, u) in enumerate(zip(entry.deltas, entry.inverse_deltas, strict=True)):
            rows.append(
                {
                    **columns,
                    "layer": entry.layer,
                    "dim": entry.dim,
                    "delta": delta,
                    "inverse_delta": u,
                    "lfr": entry.lfr[j],
                    "rdf": rdf.get(u, float("nan")),
                    "peak_inverse_delta": entry.peak_inverse_delta,
                    "mean_inverse_delta": entry.mean_inverse_delta,
                    "lfr_limit": entry.lfr_limit,
                    "n_samples": entry.n_samples,
                }
            )
    return pd.DataFrame(rows)


def analyze_model(
    model: nn.Module,
    inputs: Any,
    targets: ArrayLike | None = None,
    layers: str | Sequence[str] | None = None,
    *,
    deltas: Sequence[float] | None = None,
    inverse_deltas: Sequence[float] | None = None,
    auto_deltas: int | None = None,
    normalization: str = "max_abs_per_dim",
    predictions: ArrayLike | str | None = None,
    block_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: Any = "float32",
    threads: int | None = None,
    n_classes: int | None = None,
    batch_size: int = CAPTURE_BATCH,
    max_memory: int = DEFAULT_MAX_MEMORY,
    spill_dir: str | Path | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> ModelAnalysis:
    """LFR and RDF of each selected layer's effective target {(h_l(x_i), y_i)}.

    `inputs`: a tensor or array (split into `batch_size` rows), or an iterable of batches
    (a DataLoader yielding `x` or `(x, y, …)`); `targets`: class labels or real targets, one
    row per input (default: the `y` of the batches). `layers`: selectors as in
    dfp_engine.selectors. The grid and analysis options are those of `analyze_frequency`;
    `predictions` may also be "output", the model's own outputs, for the filtering test.
    `device` is where the analysis runs: the model stays where it is, and each batch is moved
    to the device of the model's parameters. `max_memory` bounds the bytes of captured rows
    held in memory (larger layers spill to files in `spill_dir`, streamed by the analysis).
    """
    if layers is None:
        raise ValueError("layers: name at least one layer (module names, 'input' or 'output')")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    precision = str(np.dtype(dtype) if isinstance(dtype, type) else dtype).removeprefix("torch.")
    if precision not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    resolve_selectors(model, layers)  # bad names fail before anything runs
    wants_output = isinstance(predictions, str)
    if wants_output and predictions != "output":
        raise ValueError(f"predictions must be an array or 'output', got '{predictions}'")

    start = time.perf_counter()
    with capture_model(
        model,
        inputs,
        targets,
        layers,
        batch_size=batch_size,
        max_memory=max_memory,
        spill_dir=spill_dir,
        dtype=precision,
        keep_outputs=wants_output,
    ) as capture:
        captured = time.perf_counter()
        chosen = capture.outputs if wants_output else predictions
        entries: list[LayerAnalysis] = []
        for k, name in enumerate(capture.representations):
            report = None
            if on_progress is not None:
                done, total = k, len(capture.representations)
                report = lambda f, done=done, total=total: on_progress((done + f) / total)  # noqa: E731
            try:
                result = analyze_frequency(
                    capture.representations[name],
                    capture.targets,
                    deltas=deltas,
                    inverse_deltas=inverse_deltas,
                    auto_deltas=auto_deltas,
                    normalization=normalization,
                    predictions=chosen,
                    block_size=block_size,
                    device=device,
                    dtype=precision,
                    threads=threads,
                    n_classes=n_classes,
                    stream_memory=max(max_memory // 2, 1),
                    on_progress=report,
                )
            except ValueError as exc:
                raise ValueError(f"layer '{name}': {exc}") from None
            entries.append(LayerAnalysis.from_frequency(name, result))
    end = time.perf_counter()
    return ModelAnalysis(
        layers=entries,
        n_samples=capture.n_samples,
        capture_seconds=captured - start,
        analysis_seconds=end - captured,
        spilled_layers=capture.spilled,
    )


@dataclass(frozen=True)
class Capture:
    """Representations (n, d) per selector, in the order asked (memmaps for spilled ones)."""

    representations: dict[str, np.ndarray]
    targets: np.ndarray
    outputs: np.ndarray | None
    n_samples: int
    spilled: list[str]


@contextmanager
def capture_model(
    model: nn.Module,
    inputs: Any,
    targets: ArrayLike | None,
    layers: str | Sequence[str],
    *,
    batch_size: int = CAPTURE_BATCH,
    max_memory: int = DEFAULT_MAX_MEMORY,
    spill_dir: str | Path | None = None,
    dtype: str = "float32",
    keep_outputs: bool = False,
) -> Iterator[Capture]:
    """One eval-mode pass of the model over the inputs, every selected layer's rows captured.

    Inside the block the spilled layers' files exist; they are deleted on leaving it.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    selectors, hooked = resolve_selectors(model, layers)
    store = RepresentationStore(max_memory, DTYPES[dtype], spill_dir)
    try:
        n, batch_targets, outputs = _capture(
            model, inputs, selectors, hooked, store, batch_size, keep_outputs
        )
        y = _targets(targets, batch_targets, n)
        reps = store.finish()
        yield Capture(
            representations={s.text: reps[s.text] for s in selectors},
            targets=y,
            outputs=outputs,
            n_samples=n,
            spilled=store.spilled,
        )
    finally:
        store.close()


def _capture(
    model: nn.Module,
    inputs: Any,
    selectors: list[Selector],
    hooked: dict[str, nn.Module],
    store: RepresentationStore,
    batch_size: int,
    keep_outputs: bool,
) -> tuple[int, list[Any], np.ndarray | None]:
    """One pass over the inputs: rows of every selector into `store`; (n, batch y, outputs)."""
    calls: dict[str, int] = {}
    by_module: dict[str, list[Selector]] = {}
    for selector in selectors:
        by_module.setdefault(selector.name, []).append(selector)
    rows = 0

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == 1:
                for selector in by_module[name]:
                    _store_rows(store, selector, selector.pick(output), rows)

        return hook

    targets: list[Any] = []
    outputs: list[np.ndarray] = []
    n = batches = 0
    where = _model_device(model)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), forward_hooks(hooked, make_hook):
            for x, y in input_batches(inputs, batch_size, model_dtype(model)):
                rows = int(x.shape[0]) if x.ndim else 0
                if rows == 0:
                    continue
                calls.clear()
                out = model(x.to(where))
                for name in hooked:
                    if calls.get(name, 0) != 1:
                        raise ValueError(_call_count_error(name, calls.get(name, 0)))
                for selector in by_module.get("input", []):
                    _store_rows(store, selector, selector.pick(x), rows)
                for selector in by_module.get("output", []):
                    _store_rows(store, selector, selector.pick(out), rows)
                if keep_outputs:
                    outputs.append(_as_numpy(Selector("output", "output", ()).pick(out)))
                if y is not None:
                    targets.append(y)
                n += rows
                batches += 1
    finally:
        for module, training in modes.items():
            module.train(training)
    if n == 0:
        raise ValueError("inputs hold no samples")
    if targets and len(targets) != batches:
        raise ValueError("inputs: some batches are (x, y) pairs and some are not")
    return n, targets, np.concatenate(outputs) if keep_outputs else None


def _store_rows(store: RepresentationStore, selector: Selector, t: torch.Tensor, rows: int) -> None:
    """Check a selected tensor (batch, ...) and append it flattened to (batch, d)."""
    if t.ndim == 0 or t.shape[0] != rows:
        got = "a scalar" if t.ndim == 0 else f"{t.shape[0]} rows"
        raise ValueError(
            f"layer '{selector.text}' gave {got} for a batch of {rows} inputs "
            "(its first dimension must be the batch)"
        )
    flat = _as_numpy(t)
    if flat.dtype.kind not in "biuf":
        raise ValueError(f"layer '{selector.text}' holds {flat.dtype} values, not real numbers")
    if not np.isfinite(flat).all():
        raise ValueError(f"layer '{selector.text}' holds NaN or inf values")
    store.append(selector.text, flat)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """(batch, ...) -> (batch, d) on the CPU; half precision widened to float32."""
    t = t.detach().flatten(1) if t.ndim > 1 else t.detach().reshape(-1, 1)
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.cpu().numpy()


def _call_count_error(name: str, count: int) -> str:
    if count == 0:
        return f"layer '{name}' produced no tensor: the module did not run in the forward pass"
    return f"layer '{name}' ran {count} times in one forward pass; its rows are ambiguous"


def _targets(given: ArrayLike | None, from_batches: list[Any], n: int) -> np.ndarray:
    """The targets as an array with n rows: given ones, else the batches' y."""
    if given is None:
        if not from_batches:
            raise ValueError("targets: none given and the input batches carry no (x, y) pairs")
        parts = [as_array(t) for t in from_batches]
        y = np.concatenate([p.reshape(len(p), *p.shape[1:]) for p in parts])
    else:
        y = as_array(given)
    rows = y.shape[0] if y.ndim else 0
    if rows != n:
        raise ValueError(f"targets have {rows} rows but the inputs have {n}")
    as_targets(y)  # fails early, with its own message, on labels that are not numbers
    return y


def input_batches(
    inputs: Any, batch_size: int, float_dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, Any]]:
    """(x, y or None) per batch: tensors and arrays split by rows, iterables as they come."""
    if isinstance(inputs, torch.Tensor | np.ndarray):
        x = _as_tensor(inputs, float_dtype)
        for i in range(0, len(x), batch_size) if x.ndim else [0]:
            yield x[i : i + batch_size], None
        return
    if not isinstance(inputs, Iterable) or isinstance(inputs, str | bytes | dict):
        raise ValueError(
            f"inputs must be a tensor, an array or an iterable of batches, got "
            f"{type(inputs).__name__}"
        )
    for batch in inputs:
        if isinstance(batch, list | tuple):
            if not batch:
                raise ValueError("inputs: an empty batch")
            yield _as_tensor(batch[0], float_dtype), (batch[1] if len(batch) > 1 else None)
        else:
            yield _as_tensor(batch, float_dtype), None


def _as_tensor(x: Any, float_dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.to(float_dtype) if t.is_floating_point() else t
    raise ValueError(f"inputs: a batch must be a tensor or an array, got {type(x).__name__}")


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype float array inputs are given in: the model's first floating parameter's."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()
