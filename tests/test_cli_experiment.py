"""`dfp run`, `dfp validate`, `dfp spec-schema`: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_specs import EXAMPLES

from dfp.cli import main

TINY = {
    "name": "cli-tiny",
    "dataset": {"kind": "synthetic_1d", "expression": "sin(2*x)", "n_points": 21},
    "model": {"depth": 2, "width": 8},
    "training": {"epochs": 6, "target_loss": 0.3, "lr": 0.01},
    "analysis": {"checkpoints": {"every": 3}, "deltas": {"auto": 6}},
    "sweep": {"field": "model.depth", "values": [1, 2]},
}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, data: dict[str, object], name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_validate_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", str(EXAMPLES / "deeper_is_faster_1d.yaml")], capsys)
    assert code == 0
    assert out.startswith("ok: 'deeper-is-faster-1d'") and "model.depth over 5 values" in out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"model": {"depth": 0}}, "model.depth: Input should be greater than or equal to 1"),
        (
            {"dataset": {"kind": "synthetic_1d", "expression": "os.system(1)"}},
            "dataset.expression: only plain function calls",
        ),
        (
            {"sweep": {"field": "model.depth", "values": [1, -1]}},
            "sweep.values[1]: model.depth = -1 is invalid",
        ),
        (
            {"model": {"kind": "mlp", "depht": 3}},
            "model.depht: Extra inputs are not permitted; did you mean 'depth'?",
        ),
        (
            {"training": {"epoch": 3}},
            "training.epoch: Extra inputs are not permitted; did you mean 'epochs'?",
        ),
    ],
)
def test_validate_errors_are_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], expected: str
) -> None:
    path = write(tmp_path, {**TINY, **change})
    code, out, err = run(["validate", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err


def test_missing_or_broken_spec_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "bad.yaml").write_text("model: {depth: [")
    code, _, err = run(["run", str(tmp_path / "bad.yaml")], capsys)
    assert code == 2 and "not valid yaml" in err and err.count("\n") == 1


def test_spec_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["spec-schema"], capsys)
    assert code == 0 and "dataset" in json.loads(out)["properties"]


def test_run_writes_result_and_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TINY)
    out_dir = tmp_path / "out"
    code, out, _ = run(
        ["run", str(path), "--out", str(out_dir), "--set", "training.epochs=4"], capsys
    )
    assert code == 0
    result = json.loads((out_dir / "result.json").read_text())
    assert result["status"] == "succeeded" and result["spec"]["training"]["epochs"] == 4
    assert [r["sweep_value"] for r in result["runs"]] == [1, 2]
    assert {"loss_curves.png", "rdf_across_runs.png", "rdf_layers_run_0.png"} <= {
        p.name for p in out_dir.glob("*.png")
    }
    assert "model.depth" in out and "wrote" in out


def test_run_with_missing_data_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        {
            "dataset": {"kind": "cifar10", "root": str(tmp_path / "nothing")},
            "model": {"kind": "cnn"},
        },
    )
    code, _, err = run(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2 and "no cifar10 data at" in err and err.count("\n") == 1


def test_a_diverged_run_still_writes_its_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        {
            "dataset": {"expression": "1000 * cos(3*x)", "n_points": 21},
            "training": {"optimizer": "sgd", "lr": 10.0, "epochs": 30},
        },
    )
    code, _, err = run(["run", str(path), "--out", str(tmp_path / "o"), "--no-figures"], capsys)
    assert code == 1 and "diverged" in err
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["status"] == "failed" and result["error"]["code"] == "diverged"


def test_validate_does_not_import_torch(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    code = (
        "import sys; from dfp.cli import main; "
        f"rc = main(['validate', {str(path)!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False"
