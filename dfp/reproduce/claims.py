"""The paper's claims as dfp re-runs them: statement, figure, reported numbers, and the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dfp_engine.results import ExperimentResult, Outcome, Verdict

Scale = Literal["smoke", "laptop", "paper"]
SCALES: tuple[Scale, ...] = ("laptop", "paper", "smoke")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Overrides that turn a laptop spec into a seconds-long one: it checks the machinery only.
SMOKE: dict[str, list[str]] = {
    "deeper_is_faster": [
        "training.epochs=300",
        "training.target_loss=0.05",
        "sweep.values=[2, 3, 4]",
        "analysis.checkpoints={every: 150}",
    ],
    "lower_frequency_is_faster": [
        "training.epochs=300",
        "training.target_loss=0.05",
        'sweep.values=["sin(x)", "sin(2*x)", "sin(3*x)"]',
        "analysis.checkpoints={every: 150}",
    ],
    "within_network_depth_ordering": [
        "dataset.n_samples=400",
        "training.epochs=4",
        "analysis.checkpoints=[0, 4]",
        "analysis.n_samples=300",
        "model.width=32",
    ],
    "across_network_depth_ordering": [
        "dataset.max_train_samples=300",
        "training.epochs=2",
        "analysis.checkpoints=[0, 2]",
        "training.lr_schedule={milestones: []}",
        "analysis.n_samples=200",
        "model.base_width=4",
        "sweep.values=[0, 2, 3]",
    ],
    "low_frequency_first": ["training.epochs=6", "analysis.checkpoints={every: 2}"],
    "fourier_low_frequency_first": ["training.epochs=60", "analysis.checkpoints={every: 20}"],
}

FOURIER_SPEC: dict[str, Any] = {
    "name": "fourier-low-frequency-first",
    "dataset": {
        "kind": "synthetic_1d",
        "expression": "sin(x) + sin(3*x) + sin(5*x)",
        "n_points": 101,
        "interval": [-3.14159265, 3.14159265],
    },
    "model": {"kind": "mlp", "depth": 3, "width": 50, "activation": "tanh"},
    "training": {"optimizer": "adam", "lr": 0.002, "batch_size": None, "epochs": 600, "seed": 0},
    "analysis": {"layers": "all", "checkpoints": {"every": 20}, "deltas": {"auto": 8},
                 "fourier": True},
}  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims: what it says, what it reported, and how dfp tests it."""

    id: str
    paper: str
    figure: str
    reported: str
    # The spec file (under examples/) or mapping run at each scale; None: not an experiment.
    specs: dict[str, str | dict[str, Any]] = field(default_factory=dict)
    verdict_claim: str | None = None
    # Which of the result's verdicts decide the claim (default: the sweep's or every one).
    pick: Callable[[list[Verdict]], list[Verdict]] | None = None
    differs: str = ""


def last_checkpoint(verdicts: list[Verdict]) -> list[Verdict]:
    """Per run, the verdict at its last analysed checkpoint."""
    last: dict[Any, Verdict] = {}
    for verdict in verdicts:
        key = verdict.scope.get("run")
        epoch = verdict.scope.get("epoch", 0)
        if key not in last or epoch >= last[key].scope.get("epoch", 0):
            last[key] = verdict
    return list(last.values())


def combined(verdicts: list[Verdict]) -> Outcome:
    """Holds if every verdict holds; does not hold if any does not; else inconclusive."""
    outcomes = {v.outcome for v in verdicts}
    if not outcomes:
        return "inconclusive"
    if outcomes == {"holds"}:
        return "holds"
    return "does_not_hold" if "does_not_hold" in outcomes else "inconclusive"


def decisive(result: ExperimentResult, claim: Claim) -> list[Verdict]:
    """The verdicts of `result` that decide `claim` (across seeds when there are seeds)."""
    mine = [v for v in result.verdicts if v.claim == claim.verdict_claim]
    seeds = [v for v in mine if "seeds" in v.scope]
    chosen = seeds or [v for v in mine if "seed" not in v.scope]
    return claim.pick(chosen) if claim.pick is not None else chosen


CLAIMS: list[Claim] = [
    Claim(
        id="sin_lfr_figure",
        paper="For the target sin(kπx) the RDF peak moves to higher frequency (1/δ) as k grows.",
        figure="Fig. 2",
        reported="RDF peaks at 1/δ ≈ 0, 250, 500, 1000 for k = 1, 5, 9, 13 (max-normalised "
        "curves, 1/δ from 0 to 2500); LFR at 1/δ = 2500 ≈ 0.907, 0.728, 0.516 for k = 5, 9, 13 "
        "on 2001 points of [-5, 5].",
    ),
    Claim(
        id="deeper_is_faster",
        paper="Fitting cos(3x) + cos(5x), deeper networks reach the target loss in fewer steps.",
        figure="Fig. 1(a)",
        reported="Steps to the designated loss ≈ 13 500, 10 000, 8 200, 7 100, 6 000 for 3 … 7 "
        "hidden layers (monotone; width, optimiser and loss value not stated).",
        specs={"laptop": "deeper_is_faster_1d.yaml", "paper": "deeper_is_faster_1d.yaml"},
        verdict_claim="deeper_is_faster",
        differs="Width 50, Adam at 5e-4, full batch, train loss 1e-3 on 61 points.",
    ),
    Claim(
        id="lower_frequency_is_faster",
        paper="One fixed network needs more steps for higher-frequency targets.",
        figure="Fig. 1(b)",
        reported="Steps to the target loss grow with the frequency of the target.",
        specs={
            "laptop": "lower_frequency_is_faster_1d.yaml",
            "paper": "lower_frequency_is_faster_1d.yaml",
        },
        verdict_claim="lower_frequency_is_faster",
        differs="sin(kx) for k = 1 … 5, a 4 × 100 tanh MLP, train loss 1e-3.",
    ),
    Claim(
        id="within_network_depth_ordering",
        paper="Within one network, deeper hidden layers' effective targets are lower-frequency "
        "after training (at initialisation slightly the reverse).",
        figure="Fig. 5 (MNIST, 5 hidden layers)",
        reported="RDF peak 1/δ by layer 1 … 5: epoch 0: 0.26, 0.27, 0.29, 0.31, 0.32; epoch 800: "
        "≈ 0.2, 0.12, 0.09, 0.075, 0.075.",
        specs={"laptop": "within_network_mnist1d.yaml", "paper": "within_network_mnist.yaml"},
        verdict_claim="within_network_depth_ordering",
        pick=last_checkpoint,
        differs="MNIST-1D (generated locally) instead of MNIST at laptop scale, 400 epochs.",
    ),
    Claim(
        id="across_network_depth_ordering",
        paper="Across ResNet18 variants with a shared head, deeper variants' S[-3] is "
        "lower-frequency after the first epochs.",
        figure="Fig. 4 (CIFAR-10)",
        reported="RDF peak 1/δ at epoch 80, variant 1 (deepest) … 4: ≈ 1.2–1.5, 3–3.5, 6–15, 12.",
        specs={"laptop": "resnet_variants_digits.yaml", "paper": "resnet_variants_cifar10.yaml"},
        verdict_claim="across_network_depth_ordering",
        differs="8x8 digits and base width 8 at laptop scale, 20 epochs; CIFAR-10 at paper scale.",
    ),
    Claim(
        id="low_frequency_first",
        paper="Filtering in input space, the low-frequency part of the error falls well before "
        "the high-frequency part.",
        figure="F-principle paper, Fig. 3",
        reported="e_low falls well before e_high at δ = 3, 7, 10 (MNIST, CIFAR-10).",
        specs={"laptop": "filtering_test_digits.yaml", "paper": "filtering_test_digits.yaml"},
        verdict_claim="low_frequency_first",
        differs="8x8 digits (pixel range 0–1, so δ from 0.3 to 2), a 3 × 200 ReLU MLP.",
    ),
    Claim(
        id="fourier_low_frequency_first",
        paper="In the DFT of the output, the target's peak frequencies converge in increasing "
        "order of frequency.",
        figure="F-principle paper, 1-D demonstration",
        reported="The relative error at low peaks falls first (the 'hot' heat map).",
        specs={"laptop": FOURIER_SPEC, "paper": FOURIER_SPEC},
        verdict_claim="fourier_low_frequency_first",
        differs="sin(x) + sin(3x) + sin(5x) on 101 points, a 3 × 50 tanh MLP.",
    ),
]
CLAIM_IDS = [claim.id for claim in CLAIMS]
