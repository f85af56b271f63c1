"""FrequencyMonitor: the frequency content of a model's layers over the user's own training loop.

Built once from a model, a fixed probe set and layers; `record(epoch=…, step=…)` analyses every
layer now (one forward pass of the probe set plus the analysis of each layer, as
`analyze_model`), and `result()` is a document shaped like an experiment result, one run whose
checkpoints hold one entry per layer, so the figures and summaries of experiments apply to it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dfp_engine.model_analysis import ModelAnalysis, analyze_model, input_batches, model_dtype
from dfp_engine.results import (
    Checkpoint,
    Environment,
    ExperimentResult,
    HistoryPoint,
    RunResult,
)
from dfp_engine.selectors import resolve_selectors
from dfp_engine.version import __version__

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


class FrequencyMonitor:
    """Records `analyze_model` of a fixed probe set at the checkpoints the caller chooses."""

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        targets: Any = None,
        layers: str | Sequence[str] | None = None,
        *,
        name: str = "monitor",
        **options: Any,
    ) -> None:
        if layers is None:
            raise ValueError("layers: name at least one layer (module names, 'input' or 'output')")
        selectors, _ = resolve_selectors(model, layers)  # bad names fail here, not mid-training
        try:
            inspect.signature(analyze_model).bind(model, inputs, targets, layers, **options)
        except TypeError as exc:
            raise ValueError(f"FrequencyMonitor options: {exc}") from None
        self.model = model
        self.layers = [s.text for s in selectors]
        self.name = name
        self.options = options
        # A fixed probe set: batches from an iterable (a shuffling DataLoader, say) are taken once.
        batch_size = int(options.get("batch_size", 512))
        xs, ys = [], []
        for x, y in input_batches(inputs, batch_size, model_dtype(model)):
            xs.append(x)
            if y is not None:
                ys.append(torch.as_tensor(y) if not isinstance(y, np.ndarray) else y)
        if not xs:
            raise ValueError("inputs hold no samples")
        self.inputs = torch.cat(xs)
        if targets is None and not ys:
            raise ValueError("targets: none given and the input batches carry no (x, y) pairs")
        self.targets = targets if targets is not None else _concat(ys)
        self.checkpoints: list[Checkpoint] = []
        self.history: list[HistoryPoint] = []
        self.analysis_seconds = 0.0

    def record(
        self,
        *,
        epoch: int,
        step: int = 0,
        train_loss: float | None = None,
        test_loss: float | None = None,
    ) -> ModelAnalysis:
        """Analyse every layer now; losses given are kept as the run's history."""
        analysis = analyze_model(self.model, self.inputs, self.targets, self.layers, **self.options)
        self.checkpoints.append(Checkpoint(epoch=epoch, step=step, layers=analysis.layers))
        self.analysis_seconds += analysis.capture_seconds + analysis.analysis_seconds
        if train_loss is not None:
            self.history.append(
                HistoryPoint(epoch=epoch, step=step, train_loss=train_loss, test_loss=test_loss)
            )
        return analysis

    def spec(self) -> dict[str, Any]:
        """What was monitored, as the `spec` of the result document (JSON values only)."""
        options = {k: v for k, v in self.options.items() if _is_json(v)}
        return {"name": self.name, "source": "FrequencyMonitor", "layers": self.layers, **options}

    def result(self) -> dict[str, Any]:
        """Checkpoints × layers in the shape of an experiment result (a JSON-ready dict)."""
        spec = self.spec()
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        run = RunResult(
            index=0,
            status="succeeded",
            n_analysis=int(self.inputs.shape[0]),
            layer_names=self.layers,
            history=self.history,
            checkpoints=self.checkpoints,
            analysis_seconds=self.analysis_seconds,
        )
        environment = Environment(
            seed=torch.initial_seed(),
            torch=torch.__version__,
            device=str(self.options.get("device", "cpu")),
            dfp_version=__version__,
            spec_hash=digest,
            python=platform.python_version(),
            numpy=np.__version__,
        )
        document = ExperimentResult(
            spec=spec, status="succeeded", environment=environment, runs=[run]
        )
        return document.model_dump(mode="json")

    def save(self, path: str | Path) -> Path:
        """Write `result()` as JSON."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.result(), indent=1))
        return target

    def to_frame(self) -> pd.DataFrame:
        """One row per checkpoint, layer and δ (pandas)."""
        import pandas as pd

        from dfp_engine.model_analysis import layer_frame

        frames = [layer_frame(c.layers, epoch=c.epoch, step=c.step) for c in self.checkpoints]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def plot(self, path: str | Path | None = None) -> Figure:
        """RDF against 1/δ, one panel per checkpoint, one line per layer."""
        from dfp_engine.plots import rdf_by_layer

        fig = rdf_by_layer(self.checkpoints, f"RDF of each layer's effective target ({self.name})")
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def _concat(parts: list[Any]) -> Any:
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    return np.concatenate([np.asarray(p) for p in parts])


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
