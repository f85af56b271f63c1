"""Running an experiment: train each sweep value's network and analyse its layers at checkpoints.

`run_one` trains one run (one sweep value) and analyses the effective target function
{(h^[l](x_i), y_i)} of every requested layer on a fixed, seeded subset of the training inputs
at each checkpoint (docs/method.md §1-§4). `run_experiment` runs them all and assembles the result.
Training problems never raise: a diverged run is `failed` with code `diverged`, a cancelled
one `cancelled`, both with everything recorded so far. Bad specs or data raise ValueError.
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dfp_engine.capture import capture_representations
from dfp_engine.captured import AnalysisCancelledError
from dfp_engine.datasets import Dataset, load_dataset
from dfp_engine.fanout import ExactSums
from dfp_engine.frequency import analyze_frequency
from dfp_engine.models import Network, build_model
from dfp_engine.results import (
    Checkpoint,
    Environment,
    ErrorInfo,
    ExperimentResult,
    FourierAnalysis,
    HistoryPoint,
    LayerAnalysis,
    RunResult,
    SummaryRow,
)
from dfp_engine.spec import (
    AnalysisSpec,
    AutoDeltas,
    EveryEpochs,
    ExperimentSpec,
    InverseDeltas,
)
from dfp_engine.status import Status, aggregate_status
from dfp_engine.thresholds import VerdictThresholds
from dfp_engine.training import (
    SMALL_ANALYSIS_WORK,
    StopReason,
    Trainer,
    resolve_device,
    seeded,
)
from dfp_engine.verdicts import compute_verdicts
from dfp_engine.version import __version__

# With history_every unset, log about this many points per run (plus checkpoints and the end).
HISTORY_POINTS = 1000
AUTO_GRID_SIZE = 20


@dataclass(frozen=True)
class Progress:
    """Where a run stands; `fraction` is the share of the whole experiment done (0 to 1)."""

    run_index: int
    n_runs: int
    epoch: int
    epochs: int
    step: int
    train_loss: float | None
    fraction: float
    message: str


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]
CheckpointCallback = Callable[[int, Checkpoint], None]


class _DivergedError(Exception):
    """Raised inside a run when the network's state stops being finite."""


def checkpoint_epochs(spec: AnalysisSpec, epochs: int) -> list[int]:
    """Epochs to analyse: the schedule plus 0 and the last epoch, ascending."""
    if isinstance(spec.checkpoints, EveryEpochs):
        chosen = set(range(0, epochs + 1, spec.checkpoints.every))
    else:
        chosen = {e for e in spec.checkpoints if e <= epochs}
    return sorted(chosen | {0, epochs})


def grid_arguments(spec: AnalysisSpec) -> dict[str, Any]:
    """The δ grid of the analysis spec as keyword arguments of analyze_frequency."""
    if spec.deltas == "auto":
        return {"auto_deltas": AUTO_GRID_SIZE}
    if isinstance(spec.deltas, AutoDeltas):
        return {"auto_deltas": spec.deltas.auto}
    if isinstance(spec.deltas, InverseDeltas):
        return {"inverse_deltas": list(spec.deltas.inverse)}
    return {"deltas": list(spec.deltas)}


def analysis_subset(data: Dataset, n_samples: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded subset of the training inputs, fixed for the whole run."""
    n = len(data.x_train)
    if n <= n_samples:
        return torch.arange(n)
    rng = np.random.default_rng(seed)
    return torch.as_tensor(np.sort(rng.choice(n, size=n_samples, replace=False)))


class _Run:
    """State of one training run while it is recorded (history, checkpoints, timings)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        run: ExperimentSpec,
        index: int,
        on_progress: ProgressCallback | None,
        on_checkpoint: CheckpointCallback | None,
        exact_sums: ExactSums | None = None,
    ) -> None:
        self.spec, self.run, self.index = spec, run, index
        self.exact_sums = exact_sums
        self.n_runs = len(spec.run_values())
        self.on_progress, self.on_checkpoint = on_progress, on_checkpoint
        self.history: list[HistoryPoint] = []
        self.checkpoints: list[Checkpoint] = []
        self.fourier: list[FourierAnalysis] = []
        self.analysis_seconds = 0.0
        self.steps_to_target: int | None = None
        self.epochs_to_target: int | None = None
        self.stop_reason: str | None = None
        value = spec.run_values()[index]
        # Runs are numbered from 0 everywhere: the API's `run` filter, figure names, messages.
        self.label = f"run {index} of {self.n_runs}" + (
            f" ({spec.sweep.field}={value})" if spec.sweep is not None else ""
        )
        if spec.repeats > 1:
            self.label += f" (seed {run.training.seed})"

    def progress(self, epoch: int, step: int, loss: float | None, message: str) -> None:
        if self.on_progress is None:
            return
        epochs = self.run.training.epochs
        fraction = (self.index + min(epoch / epochs, 1.0)) / self.n_runs
        self.on_progress(
            Progress(self.index, self.n_runs, epoch, epochs, step, loss, fraction, message)
        )

    def reached_target(self, loss: float, step: int, epoch: int) -> None:
        target = self.run.training.target_loss
        if self.steps_to_target is None and target is not None and loss <= target:
            self.steps_to_target, self.epochs_to_target = step, epoch


def _analyse(
    run: ExperimentSpec,
    model: Network,
    x: torch.Tensor,
    labels: torch.Tensor,
    layers: list[str],
    data: Dataset,
    device: torch.device,
    exact_sums: ExactSums | None = None,
) -> list[LayerAnalysis]:
    """Frequency content of each layer's effective target {(h_l(x_i), y_i)} with TRUE labels."""
    spec = run.analysis
    reps, outputs = capture_representations(model, x, layers)
    predictions = None
    if spec.filtering_test:
        # The filtering test compares the network's outputs with the labels (docs/method.md §4).
        predictions = (
            torch.softmax(outputs, dim=1) if run.training.loss == "cross_entropy" else outputs
        ).cpu()
    out: list[LayerAnalysis] = []
    for name in layers:
        features = reps[name]
        if not torch.isfinite(features).all():
            raise _DivergedError(f"layer {name} holds NaN or inf values")
        n, d = features.shape
        work = n * n * (d + AUTO_GRID_SIZE)
        result = analyze_frequency(
            features,
            labels,
            normalization=spec.normalize,
            # The filtering test filters in input space only, as in the F-principle paper.
            predictions=predictions if name == "input" else None,
            block_size=spec.block_size,
            device=device,
            threads=1 if device.type == "cpu" and work < SMALL_ANALYSIS_WORK else None,
            n_classes=data.n_classes,
            ci=spec.ci,
            exact_sums=exact_sums,
            **grid_arguments(spec),
        )
        out.append(LayerAnalysis.from_frequency(name, result))
    return out


def _fourier(
    run: ExperimentSpec, model: Network, data: Dataset, device: torch.device, epoch: int
) -> FourierAnalysis:
    """Spectra of the target and the output over the whole train split (docs/method.md)."""
    from dfp_engine.fourier import compare

    if data.task != "regression" or data.n_outputs != 1 or len(data.input_shape) != 1:
        raise ValueError(
            "analysis.fourier: needs one real-valued target on vector inputs; this dataset has "
            f"{data.task} targets with {data.n_outputs} output(s) on inputs of shape "
            f"{data.input_shape}"
        )
    model.eval()
    with torch.no_grad():
        output = model(data.x_train.to(device)).cpu().numpy()[:, 0]
    model.train()
    if not np.isfinite(output).all():
        raise _DivergedError("the output holds NaN or inf values")
    x = data.x_train.numpy().astype(np.float64)
    spec = run.analysis
    f, h, found, errors = compare(
        x,
        data.y_train.numpy()[:, 0].astype(np.float64),
        output.astype(np.float64),
        direction=spec.fourier_direction,
        floor=spec.fourier_peak_floor,
    )
    return FourierAnalysis(
        epoch=epoch,
        method="dft" if f.method == "dft" else "nudft",
        direction=f.direction.tolist(),
        frequencies=f.frequencies.tolist(),
        target_amplitude=f.amplitude.tolist(),
        output_amplitude=h.amplitude.tolist(),
        peaks=f.frequencies[found].tolist(),
        peak_indices=found.tolist(),
        relative_error_at_peaks=errors.tolist(),
    )


def run_one(
    spec: ExperimentSpec,
    index: int,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    exact_sums: ExactSums | None = None,
) -> RunResult:
    """Train and analyse run `index` (sweep value `spec.run_values()[index]`).

    `exact_sums` computes each checkpoint's exact low-pass sums instead of `lowpass_sums`
    (a service fans them out over its workers; dfp_engine.fanout)."""
    values = spec.run_values()
    if not 0 <= index < len(values):
        raise ValueError(f"run index {index} is out of range: the spec has {len(values)} run(s)")
    started = time.perf_counter()
    run = spec.run_specs[index]
    state = _Run(spec, run, index, on_progress, on_checkpoint, exact_sums)
    cancelled = should_cancel if should_cancel is not None else lambda: False
    if cancelled():
        return _finish(state, Status.CANCELLED, _cancel_error(state, 0), started, base={})
    device = resolve_device(run.training.device)
    data = load_dataset(run.dataset)
    layers = run.analysis_layers()
    with seeded(run.training.seed, device):
        model = build_model(run.model, data.input_shape, data.n_outputs).to(device)
        trainer = Trainer(model, data, run.training, device)
        subset = analysis_subset(data, run.analysis.n_samples, run.dataset.seed)
        x_a, y_a = data.x_train[subset].to(device), data.y_train[subset]
        if data.task == "regression" and not bool((y_a != 0).any()):
            raise ValueError("dataset: the targets are all zero, so frequency ratios are undefined")
        base = {
            "n_train": len(data.x_train),
            "n_test": len(data.x_test),
            "n_analysis": len(subset),
            "layer_names": layers,
            "analysis_subset_sha256": _digest(subset),
        }
        status, error = _train(state, trainer, model, data, layers, x_a, y_a, device, cancelled)
    return _finish(state, status, error, started, base)


def _digest(indices: torch.Tensor) -> str:
    return hashlib.sha256(indices.numpy().astype(np.int64).tobytes()).hexdigest()


def _train(
    state: _Run,
    trainer: Trainer,
    model: Network,
    data: Dataset,
    layers: list[str],
    x_a: torch.Tensor,
    y_a: torch.Tensor,
    device: torch.device,
    cancelled: CancelCheck,
) -> tuple[Status, ErrorInfo | None]:
    run = state.run
    epochs = run.training.epochs
    schedule = set(checkpoint_epochs(run.analysis, epochs))
    every = run.training.history_every or max(1, math.ceil(epochs / HISTORY_POINTS))

    def analyse(epoch: int) -> tuple[Status, ErrorInfo] | None:
        t0 = time.perf_counter()
        try:
            layer_results = _analyse(run, model, x_a, y_a, layers, data, device, state.exact_sums)
            if run.analysis.fourier:
                state.fourier.append(_fourier(run, model, data, device, epoch))
        except _DivergedError as exc:
            return Status.FAILED, ErrorInfo(code="diverged", message=f"at epoch {epoch}: {exc}")
        except AnalysisCancelledError:  # raised by a fanned-out analysis that saw the cancel
            return Status.CANCELLED, _cancel_error(state, epoch)
        finally:
            state.analysis_seconds += time.perf_counter() - t0
        checkpoint = Checkpoint(epoch=epoch, step=trainer.step, layers=layer_results)
        state.checkpoints.append(checkpoint)
        if state.on_checkpoint is not None:
            state.on_checkpoint(state.index, checkpoint)
        return None

    def log(epoch: int, train_loss: float, train_accuracy: float | None) -> None:
        test_loss, test_accuracy = trainer.evaluate(trainer.x_test, trainer.y_test)
        state.history.append(
            HistoryPoint(
                epoch=epoch,
                step=trainer.step,
                train_loss=train_loss,
                test_loss=test_loss,
                train_accuracy=train_accuracy,
                test_accuracy=test_accuracy,
            )
        )

    initial_loss, initial_accuracy = trainer.evaluate(trainer.x, trainer.y)
    if initial_loss is None:  # pragma: no cover - datasets guarantee two training samples
        raise ValueError("dataset: the train split is empty")
    if not math.isfinite(initial_loss):
        return Status.FAILED, ErrorInfo(
            code="diverged", message="the loss at initialisation is not finite"
        )
    log(0, initial_loss, initial_accuracy)
    state.reached_target(initial_loss, 0, 0)
    state.progress(0, 0, initial_loss, f"{state.label}: analysing epoch 0")
    if (outcome := analyse(0)) is not None:
        return outcome

    stop: StopReason | None = None
    if run.training.stop_at_target and state.steps_to_target is not None:
        stop = "target_reached"
    epoch = 0
    current = (initial_loss, initial_accuracy)  # train loss and accuracy of the latest state
    while stop is None and epoch < epochs:
        if cancelled():
            stop = "cancelled"
            break
        if run.training.max_steps is not None and trainer.step >= run.training.max_steps:
            stop = "max_steps"
            break
        stats = trainer.train_epoch(should_cancel=cancelled)
        if stats.stop == "diverged":
            message = f"train loss became {stats.loss} at epoch {epoch + 1} (step {trainer.step})"
            return Status.FAILED, ErrorInfo(code="diverged", message=message)
        if trainer.full_batch and stats.target_step is not None and state.steps_to_target is None:
            state.steps_to_target = state.epochs_to_target = stats.target_step
        if stats.stop == "cancelled" or stats.batches == 0:
            # A cancelled epoch is left unrecorded: its numbers would describe half an epoch.
            stop = stats.stop
            break
        if stats.stop == "target_reached" and trainer.full_batch:
            # The loss met the target before this epoch's update, so the model is still the
            # one after `epoch` epochs, and the loss just computed is exactly its loss.
            stop, current = "target_reached", (stats.loss, stats.accuracy)
            break
        epoch += 1
        stop, current = stats.stop, (stats.loss, stats.accuracy)
        if not trainer.full_batch:
            state.reached_target(stats.loss, trainer.step, epoch)
        if run.training.stop_at_target and state.steps_to_target is not None:
            stop = stop or "target_reached"
        if epoch % every == 0 or epoch in schedule:
            log(epoch, *current)
        if epoch in schedule:
            state.progress(
                epoch, trainer.step, stats.loss, f"{state.label}: analysing epoch {epoch}"
            )
            if (outcome := analyse(epoch)) is not None:
                return outcome
        state.progress(epoch, trainer.step, stats.loss, f"{state.label}: epoch {epoch}/{epochs}")
    if stop == "cancelled":
        return Status.CANCELLED, _cancel_error(state, epoch)
    # A run that ended early (target reached, step limit) is recorded in the state it ended in.
    if state.history[-1].epoch != epoch:
        log(epoch, *current)
    if state.checkpoints[-1].epoch != epoch and (outcome := analyse(epoch)) is not None:
        return outcome
    state.stop_reason = stop or "epochs"
    return Status.SUCCEEDED, None


def _cancel_error(state: _Run, epoch: int) -> ErrorInfo:
    return ErrorInfo(code="cancelled", message=f"{state.label} cancelled at epoch {epoch}")


def _finish(
    state: _Run,
    status: Status,
    error: ErrorInfo | None,
    started: float,
    base: dict[str, Any],
) -> RunResult:
    return RunResult(
        index=state.index,
        sweep_value=state.spec.run_values()[state.index],
        status=status,
        error=error,
        steps_to_target=state.steps_to_target,
        epochs_to_target=state.epochs_to_target,
        history=state.history,
        checkpoints=state.checkpoints,
        fourier=state.fourier,
        elapsed_seconds=time.perf_counter() - started,
        analysis_seconds=state.analysis_seconds,
        stop_reason=state.stop_reason,
        repeat=state.index % state.spec.repeats,
        seed=state.run.training.seed,
        **base,
    )


def summarize(spec: ExperimentSpec, runs: list[RunResult]) -> list[SummaryRow]:
    """Per run: sweep value, time to target, final loss and the summary layer's RDF peaks."""
    rows: list[SummaryRow] = []
    for run in runs:
        layer = spec.run_specs[run.index].summary_layer()
        peaks: dict[str, float | None] = {}
        for checkpoint in run.checkpoints:
            match = next((la for la in checkpoint.layers if la.layer == layer), None)
            if match is not None:
                peaks[str(checkpoint.epoch)] = match.peak_inverse_delta
        rows.append(
            SummaryRow(
                sweep_value=run.sweep_value,
                status=run.status,
                steps_to_target=run.steps_to_target,
                epochs_to_target=run.epochs_to_target,
                final_train_loss=run.history[-1].train_loss if run.history else None,
                layer=layer,
                peak_inverse_delta_by_checkpoint=peaks,
            )
        )
    return rows


def environment(spec: ExperimentSpec, device: str) -> Environment:
    """Reproducibility metadata: seed, versions, device, spec hash."""
    return Environment(
        seed=spec.training.seed,
        torch=torch.__version__,
        device=device,
        dfp_version=__version__,
        spec_hash=spec.spec_hash(),
        python=platform.python_version(),
        numpy=np.__version__,
    )


def assemble(
    spec: ExperimentSpec,
    runs: list[RunResult],
    environment: Environment,
    thresholds: VerdictThresholds | None = None,
) -> ExperimentResult:
    """The experiment's result: its status follows from the runs' (`aggregate_status`)."""
    status = aggregate_status([run.status for run in runs])
    culprit = next((r for r in runs if r.status == status != Status.SUCCEEDED), None)
    error = None
    if culprit is not None and culprit.error is not None:
        error = ErrorInfo(
            code=culprit.error.code, message=f"run {culprit.index}: {culprit.error.message}"
        )
    result = ExperimentResult(
        spec=spec.model_dump(mode="json"),
        status=status,
        error=error,
        environment=environment,
        runs=runs,
        summary=summarize(spec, runs),
    )
    return result.model_copy(update={"verdicts": compute_verdicts(result, thresholds)})


def run_experiment(
    spec: ExperimentSpec,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    thresholds: VerdictThresholds | None = None,
) -> ExperimentResult:
    """Every run of the spec, one after another, assembled into one result with its verdicts."""
    device = str(resolve_device(spec.training.device))
    runs = [
        run_one(
            spec,
            i,
            on_progress=on_progress,
            should_cancel=should_cancel,
            on_checkpoint=on_checkpoint,
        )
        for i in range(len(spec.run_values()))
    ]
    return assemble(spec, runs, environment(spec, device), thresholds)
