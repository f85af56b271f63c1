"""Verdicts as a person reads them: one line each, outcome first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dfp_engine.results import Verdict

OUTCOME_LABELS = {
    "holds": "holds",
    "does_not_hold": "does not hold",
    "inconclusive": "inconclusive",
}


def scope_text(scope: dict[str, object]) -> str:
    """`run 0, epoch 40` from a verdict's scope."""
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in scope.items())


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """The verdicts under a heading, or a line saying none applies."""
    if not verdicts:
        return "verdicts: no claim applies to this experiment"
    lines = ["verdicts:"]
    for v in verdicts:
        outcome = OUTCOME_LABELS.get(v.outcome, v.outcome)
        lines.append(f"  {outcome:>13}  {v.claim} [{scope_text(v.scope)}]: {v.detail}")
    return "\n".join(lines)
