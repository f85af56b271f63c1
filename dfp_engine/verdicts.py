"""Verdicts: whether the paper's claims hold in a stored result, with the statistic behind each.

Every verdict is a pure function of an ExperimentResult and the thresholds, so a result read
back from disk or the database gives the same verdicts as the run that wrote it. The exact
definitions are in docs/method.md ("Verdicts").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dfp_engine.results import ExperimentResult, LayerAnalysis, Outcome, RunResult, Verdict
from dfp_engine.thresholds import VerdictThresholds

CLAIMS = (
    "within_network_depth_ordering",
    "deeper_is_faster",
    "lower_frequency_is_faster",
    "across_network_depth_ordering",
    "low_frequency_first",
    "fourier_low_frequency_first",
)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# Layers that are not hidden layers of the network (the within-network ordering skips them).
NOT_HIDDEN = frozenset({"input", "output"})
# Residual stages of the CIFAR ResNet18 (a variant k keeps 4 - k of them).
RESNET_STAGES = 4


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (ties get their average rank); None when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    sx, sy = rx.std(), ry.std()
    if sx == 0 or sy == 0:
        return None
    return float(((rx - rx.mean()) * (ry - ry.mean())).mean() / (sx * sy))


def _ranks(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for value in np.unique(a):  # average rank of ties (inf included: "never" ranks last)
        tied = a == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def bootstrap_interval(
    values: Sequence[float], thresholds: VerdictThresholds
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampled with a fixed seed)."""
    a = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(0)
    # (B, k) resampled indices -> (B,) means
    means = a[rng.integers(0, len(a), size=(thresholds.bootstrap_samples, len(a)))].mean(axis=1)
    tail = (1 - thresholds.confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _verdict(
    claim: str,
    scope: dict[str, Any],
    statistic: str,
    value: float | None,
    threshold: float,
    outcome: Outcome,
    detail: str,
) -> Verdict:
    return Verdict(
        claim=claim,
        scope=scope,
        statistic=statistic,
        value=None if value is None else round(value, 6),
        threshold=threshold,
        outcome=outcome,
        detail=detail,
    )


def _below(value: float, threshold: float) -> Outcome:
    return "holds" if value <= threshold else "does_not_hold"


def _above(value: float, threshold: float) -> Outcome:
    return "holds" if value >= threshold else "does_not_hold"


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


# ------------------------------------------------------------------ per-run claims


def _hidden_layers(run: RunResult, layers: list[LayerAnalysis]) -> list[LayerAnalysis]:
    """The checkpoint's hidden layers in model order."""
    order = {name: i for i, name in enumerate(run.layer_names)}
    hidden = [la for la in layers if la.layer not in NOT_HIDDEN and not la.layer.startswith("-")]
    return sorted(hidden, key=lambda la: order.get(la.layer, len(order)))


def within_network(run: RunResult, thresholds: VerdictThresholds) -> list[Verdict]:
    """Per checkpoint: ρ(hidden-layer position, mean 1/δ) ≤ −threshold holds."""
    out: list[Verdict] = []
    claim, statistic = "within_network_depth_ordering", "spearman_rho(layer position, mean 1/δ)"
    threshold = -thresholds.rho
    for checkpoint in run.checkpoints:
        scope = {"run": run.index, "epoch": checkpoint.epoch}
        hidden = _hidden_layers(run, checkpoint.layers)
        if not hidden:
            continue  # nothing was measured about hidden layers
        means = [la.mean_inverse_delta for la in hidden]
        if len(hidden) < 3 or any(m is None or not math.isfinite(m) for m in means):
            reason = (
                f"only {len(hidden)} hidden layer(s) analysed (three needed)"
                if len(hidden) < 3
                else "a layer has no mean 1/δ"
            )
            out.append(_verdict(claim, scope, statistic, None, threshold, "inconclusive", reason))
            continue
        values = [float(m) for m in means if m is not None]
        rho = spearman(list(range(len(values))), values)
        first, last = hidden[0].layer, hidden[-1].layer
        seen = f"mean 1/δ goes from {values[0]:.3g} at {first} to {values[-1]:.3g} at {last}"
        if rho is None:
            detail = f"{seen}; every layer has the same mean 1/δ, so no order"
            out.append(_verdict(claim, scope, statistic, None, threshold, "inconclusive", detail))
            continue
        note = (
            " (at initialisation the paper sees the reverse order)" if checkpoint.epoch == 0 else ""
        )
        detail = f"{seen}, ρ = {rho:.2f}{note}"
        out.append(
            _verdict(claim, scope, statistic, rho, threshold, _below(rho, threshold), detail)
        )
    return out


def _first_epoch_below(
    epochs: list[int], values: list[float | None], threshold: float
) -> int | None:
    for epoch, value in zip(epochs, values, strict=True):
        if value is not None and math.isfinite(value) and value <= threshold:
            return epoch
    return None


def low_frequency_first(run: RunResult, thresholds: VerdictThresholds) -> list[Verdict]:
    """Per δ of the filtering test: e_low reaches the threshold at an earlier checkpoint."""
    tests = [(c.epoch, la) for c in run.checkpoints for la in c.layers if la.e_low is not None]
    if not tests:
        return []
    claim = "low_frequency_first"
    statistic = "epochs from e_low ≤ threshold to e_high ≤ threshold"
    limit = thresholds.filter_error
    epochs = [epoch for epoch, _ in tests]
    out: list[Verdict] = []
    last = tests[-1][1]
    deltas = last.deltas[: len(last.e_low or [])]
    for j, delta in enumerate(deltas):
        lows = [la.e_low[j] if la.e_low and j < len(la.e_low) else None for _, la in tests]
        highs = [la.e_high[j] if la.e_high and j < len(la.e_high) else None for _, la in tests]
        t_low = _first_epoch_below(epochs, lows, limit)
        t_high = _first_epoch_below(epochs, highs, limit)
        scope = {"run": run.index, "delta": delta}
        if t_low is None:
            detail = f"e_low never reaches {limit:g} (last {_fmt(lows[-1])}) at δ = {delta:.3g}"
            outcome: Outcome = "inconclusive" if t_high is None else "does_not_hold"
            value = None
        elif t_high is None:
            detail = (
                f"at δ = {delta:.3g} e_low reaches {limit:g} at epoch {t_low}; e_high never "
                f"does (last {_fmt(highs[-1])})"
            )
            outcome, value = "holds", None
        else:
            value = float(t_high - t_low)
            detail = (
                f"at δ = {delta:.3g} e_low reaches {limit:g} at epoch {t_low}, e_high at "
                f"epoch {t_high}"
            )
            outcome = "holds" if t_low < t_high else "does_not_hold"
            if t_low == t_high:
                outcome = "inconclusive"
                detail += " (the same checkpoint: analyse more epochs)"
        out.append(_verdict(claim, scope, statistic, value, limit, outcome, detail))
    return out


def fourier_low_frequency_first(run: RunResult, thresholds: VerdictThresholds) -> list[Verdict]:
    """ρ(peak frequency, first epoch its relative error ≤ threshold) ≥ threshold holds."""
    entries = [(f.epoch, f) for f in run.fourier]
    if not entries:
        return []
    claim = "fourier_low_frequency_first"
    statistic = "spearman_rho(peak frequency, epoch of convergence)"
    peaks = entries[-1][1].peaks
    scope = {"run": run.index}
    limit = thresholds.fourier_error
    if len(peaks) < 2:
        detail = f"the target has {len(peaks)} peak(s) above the floor (two needed)"
        return [_verdict(claim, scope, statistic, None, thresholds.rho, "inconclusive", detail)]
    converged: list[float] = []
    for k in range(len(peaks)):
        errors: list[float | None] = [
            f.relative_error_at_peaks[k] if k < len(f.relative_error_at_peaks) else None
            for _, f in entries
        ]
        epoch = _first_epoch_below([e for e, _ in entries], errors, limit)
        converged.append(math.inf if epoch is None else float(epoch))
    seen = ", ".join(
        f"k = {p:.3g} at epoch {'never' if math.isinf(t) else int(t)}"
        for p, t in zip(peaks, converged, strict=True)
    )
    if all(math.isinf(t) for t in converged):
        detail = f"no peak's relative error reaches {limit:g}"
        return [_verdict(claim, scope, statistic, None, thresholds.rho, "inconclusive", detail)]
    rho = spearman(peaks, converged)
    if rho is None:
        detail = f"every peak converges at the same checkpoint ({seen}): analyse more epochs"
        return [_verdict(claim, scope, statistic, None, thresholds.rho, "inconclusive", detail)]
    detail = f"relative error ≤ {limit:g}: {seen}; ρ = {rho:.2f}"
    outcome = _above(rho, thresholds.rho)
    return [_verdict(claim, scope, statistic, rho, thresholds.rho, outcome, detail)]


# ------------------------------------------------------------------ sweep claims


def depth_of(field: str, value: Any) -> float | None:
    """How deep a sweep value makes the network, for depth-like fields; None otherwise."""
    if field == "model.depth" and isinstance(value, int):
        return float(value)
    if field == "model.variant" and isinstance(value, int):
        return float(RESNET_STAGES - value)  # stages kept
    if field in {"model.width", "model.channels", "model.head_widths"} and isinstance(value, list):
        return float(len(value))
    if field == "model.blocks_per_stage" and isinstance(value, list):
        return float(sum(v for v in value if isinstance(v, int)))
    return None


def frequency_of(spec: dict[str, Any], field: str, value: Any) -> float | None:
    """The target frequency a sweep value sets, for frequency-like fields; None otherwise.

    `dataset.frequency` is read as given; for `dataset.expression` on a 1-D dataset it is the
    frequency of the target's largest spectral peak (docs/method.md, Fourier view)."""
    if field == "dataset.frequency" and isinstance(value, int | float):
        return float(value)
    if field != "dataset.expression" or not isinstance(value, str):
        return None
    dataset = dict(spec.get("dataset") or {})
    if dataset.get("kind", "synthetic_1d") != "synthetic_1d":
        return None
    from dfp_engine.datasets.synthetic import synthetic_1d
    from dfp_engine.fourier import dominant_frequency
    from dfp_engine.spec import Synthetic1DDataset

    try:
        x, y = synthetic_1d(Synthetic1DDataset.model_validate({**dataset, "expression": value}))
    except ValueError:
        return None
    return dominant_frequency(x, y)


def _steps(run: RunResult) -> float:
    """Steps to the target loss; a run that never reached it ranks last (inf)."""
    return math.inf if run.steps_to_target is None else float(run.steps_to_target)


def _sweep_claim(
    claim: str,
    runs: list[RunResult],
    xs: list[float],
    ys: list[float],
    x_name: str,
    y_name: str,
    scope: dict[str, Any],
    thresholds: VerdictThresholds,
) -> Verdict:
    statistic = f"spearman_rho({x_name}, {y_name})"
    threshold = -thresholds.rho
    pairs = ", ".join(
        f"{x:g}: {'never' if math.isinf(y) else f'{y:.4g}'}" for x, y in zip(xs, ys, strict=True)
    )
    if len(runs) < 3:
        detail = f"{len(runs)} finished run(s) in the sweep (three needed)"
        return _verdict(claim, scope, statistic, None, threshold, "inconclusive", detail)
    if all(math.isinf(y) for y in ys):
        detail = f"no run has a {y_name} ({pairs})"
        return _verdict(claim, scope, statistic, None, threshold, "inconclusive", detail)
    rho = spearman(xs, ys)
    if rho is None:
        detail = f"{y_name} is the same for every run ({pairs})"
        return _verdict(claim, scope, statistic, None, threshold, "inconclusive", detail)
    detail = f"{y_name} by {x_name}: {pairs}; ρ = {rho:.2f}"
    return _verdict(claim, scope, statistic, rho, threshold, _below(rho, threshold), detail)


def _last_mean(run: RunResult, layer: str | None) -> float:
    if not run.checkpoints:
        return math.inf
    match = next((la for la in run.checkpoints[-1].layers if la.layer == layer), None)
    if match is None or match.mean_inverse_delta is None:
        return math.inf
    return float(match.mean_inverse_delta)


def _deepest(run: RunResult) -> str | None:
    return run.layer_names[-1] if run.layer_names else None


def sweep_claims(
    result: ExperimentResult, runs: list[RunResult], scope: dict[str, Any], t: VerdictThresholds
) -> list[Verdict]:
    """The sweep's claims over `runs` (one seed's runs, one per sweep value)."""
    sweep = result.spec.get("sweep") or {}
    field = str(sweep.get("field", ""))
    target = (result.spec.get("training") or {}).get("target_loss")
    out: list[Verdict] = []
    depths = [depth_of(field, run.sweep_value) for run in runs]
    if runs and all(d is not None for d in depths):
        xs = [float(d) for d in depths if d is not None]
        if target is not None:
            ys = [_steps(run) for run in runs]
            out.append(
                _sweep_claim("deeper_is_faster", runs, xs, ys, "depth", "steps to target", scope, t)
            )
        layers = {repr(row.sweep_value): row.layer for row in result.summary}
        means = [_last_mean(run, layers.get(repr(run.sweep_value), _deepest(run))) for run in runs]
        out.append(
            _sweep_claim(
                "across_network_depth_ordering",
                runs,
                xs,
                means,
                "depth",
                "mean 1/δ of the summary layer at the last checkpoint",
                {**scope, "epoch": "last"},
                t,
            )
        )
    if target is not None and runs:
        freqs = [frequency_of(result.spec, field, run.sweep_value) for run in runs]
        if all(f is not None for f in freqs):
            xs = [float(f) for f in freqs if f is not None]
            ys = [_steps(run) for run in runs]
            verdict = _sweep_claim(
                "lower_frequency_is_faster", runs, xs, ys, "frequency", "steps to target", scope, t
            )
            # Higher frequency, more steps: the claim holds for a positive ρ.
            if verdict.value is not None:
                rho = verdict.value
                verdict = verdict.model_copy(
                    update={"threshold": t.rho, "outcome": _above(rho, t.rho)}
                )
            else:
                verdict = verdict.model_copy(update={"threshold": t.rho})
            out.append(verdict)
    return out


# ------------------------------------------------------------------ across seeds


def across_seeds(
    claim: str, scope: dict[str, Any], verdicts: list[Verdict], t: VerdictThresholds
) -> Verdict:
    """One claim over seeds: the fraction holding and a bootstrap interval of the mean value."""
    k = len(verdicts)
    holding = sum(v.outcome == "holds" for v in verdicts)
    values = [v.value for v in verdicts if v.value is not None]
    threshold = verdicts[0].threshold
    statistic = verdicts[0].statistic
    seeds = f"holds for {holding} of {k} seeds"
    scope = {**scope, "seeds": k}
    rho_claim = statistic.startswith("spearman_rho")
    if not rho_claim:
        fraction = holding / k
        low, high = bootstrap_interval([v.outcome == "holds" for v in verdicts], t)
        detail = (
            f"{seeds}; {t.confidence:.0%} bootstrap interval of the fraction "
            f"[{low:.2f}, {high:.2f}]"
        )
        outcome: Outcome = (
            "holds" if low > 0.5 else "does_not_hold" if high < 0.5 else "inconclusive"
        )
        return _verdict(
            claim, scope, "fraction of seeds where it holds", fraction, 0.5, outcome, detail
        )
    if len(values) < 2:
        detail = f"{seeds}; ρ is defined for {len(values)} seed(s) (two needed for an interval)"
        return _verdict(claim, scope, f"mean {statistic}", None, threshold, "inconclusive", detail)
    low, high = bootstrap_interval(values, t)
    mean = float(np.mean(values))
    expects_negative = threshold < 0
    if expects_negative:
        outcome = (
            "holds" if high <= threshold else "does_not_hold" if low > threshold else "inconclusive"
        )
    else:
        outcome = (
            "holds" if low >= threshold else "does_not_hold" if high < threshold else "inconclusive"
        )
    detail = (
        f"{seeds}; mean ρ = {mean:.2f}, {t.confidence:.0%} bootstrap interval "
        f"[{low:.2f}, {high:.2f}] against {threshold:g}"
    )
    return _verdict(claim, scope, f"mean {statistic}", mean, threshold, outcome, detail)


def _group_by_seed(
    verdicts: list[Verdict], key: Callable[[Verdict], tuple[Any, ...]]
) -> dict[tuple[Any, ...], list[Verdict]]:
    groups: dict[tuple[Any, ...], list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        groups[(verdict.claim, *key(verdict))].append(verdict)
    return groups


# ------------------------------------------------------------------ all of them


def compute_verdicts(
    result: ExperimentResult, thresholds: VerdictThresholds | None = None
) -> list[Verdict]:
    """Every claim that applies to the result, per run and checkpoint, sweep and seeds."""
    t = thresholds or VerdictThresholds()
    repeats = int(result.spec.get("repeats", 1) or 1)
    runs = [run for run in result.runs if run.status in FINISHED]
    per_run: list[Verdict] = []
    for run in runs:
        per_run += within_network(run, t)
        per_run += low_frequency_first(run, t)
        per_run += fourier_low_frequency_first(run, t)
    out = list(per_run)
    if repeats > 1 and per_run:
        value_of = {run.index: repr(run.sweep_value) for run in runs}

        def key(v: Verdict) -> tuple[Any, ...]:
            index = v.scope["run"]
            rest = tuple(sorted((k, repr(x)) for k, x in v.scope.items() if k != "run"))
            return (value_of[index], rest)

        for (claim, *_), group in _group_by_seed(per_run, key).items():
            if len(group) > 1:
                scope = {k: v for k, v in group[0].scope.items() if k != "run"}
                if result.spec.get("sweep"):
                    scope["sweep_value"] = result.runs[group[0].scope["run"]].sweep_value
                out.append(across_seeds(claim, scope, group, t))
    if result.spec.get("sweep"):
        out += _sweep_verdicts(result, runs, repeats, t)
    return out


def _sweep_verdicts(
    result: ExperimentResult, runs: list[RunResult], repeats: int, t: VerdictThresholds
) -> list[Verdict]:
    field = str((result.spec.get("sweep") or {}).get("field", ""))
    unfinished = len(result.runs) - len(runs)
    out: list[Verdict] = []
    per_seed: list[Verdict] = []
    for repeat in range(repeats):
        seed_runs = [run for run in runs if run.repeat == repeat]
        scope: dict[str, Any] = {"field": field}
        if repeats > 1:
            scope["seed"] = seed_runs[0].seed if seed_runs else None
        verdicts = sweep_claims(result, seed_runs, scope, t)
        if unfinished:
            verdicts = [
                v.model_copy(
                    update={
                        "outcome": "inconclusive",
                        "detail": f"{v.detail} ({unfinished} run(s) not finished)",
                    }
                )
                for v in verdicts
            ]
        per_seed += verdicts
    out += per_seed
    if repeats > 1:
        groups = _group_by_seed(per_seed, lambda v: ())
        for (claim,), group in groups.items():
            scope = {k: v for k, v in group[0].scope.items() if k != "seed"}
            out.append(across_seeds(claim, scope, group, t))
    return out
