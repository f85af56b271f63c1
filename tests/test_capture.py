"""Hook capture: hooks are gone afterwards (also after an error), modes and grads restored."""

from __future__ import annotations

import pytest
import torch

from dfp_engine.capture import capture_hooks, capture_representations
from dfp_engine.models import build_model
from dfp_engine.spec import MLPModel


def small_model() -> torch.nn.Module:
    return build_model(MLPModel(depth=2, width=6), (3,), 2)


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_on_exit_and_on_error() -> None:
    model = small_model()
    with capture_hooks(model, ["hidden.1", "output"]) as store:
        assert hook_count(model) == 2
        model(torch.randn(4, 3))
        assert [t.shape for t in store["hidden.1"]] == [(4, 6)]
    assert hook_count(model) == 0

    def fail_inside() -> None:
        with capture_hooks(model, ["hidden.2"]):
            assert hook_count(model) == 1
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert hook_count(model) == 0


def test_unknown_capture_points_register_nothing() -> None:
    model = small_model()
    with pytest.raises(ValueError, match="no capture point"), capture_hooks(model, ["hidden.9"]):
        pass
    assert hook_count(model) == 0


def test_capture_runs_in_eval_mode_without_grad_and_restores_the_mode() -> None:
    model = small_model()
    model.train()
    x = torch.randn(7, 3)
    reps, out = capture_representations(model, x, ["input", "hidden.2"], batch_size=3)
    assert model.training and hook_count(model) == 0
    assert not out.requires_grad and not reps["hidden.2"].requires_grad
    expected = model.hidden[1](model.hidden[0](x))
    torch.testing.assert_close(reps["hidden.2"], expected.detach())
    assert torch.equal(reps["input"], x)
    model.eval()
    capture_representations(model, x, ["hidden.1"])
    assert not model.training


def test_batch_norm_statistics_are_not_updated_by_capture() -> None:
    from dfp_engine.spec import CNNModel

    model = build_model(
        CNNModel(channels=[2], convs_per_stage=1, head_widths=[3], batch_norm=True), (1, 4, 4), 2
    )
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    capture_representations(model, torch.randn(5, 1, 4, 4) + 3, ["stage.1"])
    assert torch.equal(bn.running_mean, before)
