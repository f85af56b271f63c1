"""`dfp analyze`: output shape and every bad-input path (one line, exit status 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfp.cli import main

JSON_KEYS = {
    "deltas",
    "inverse_deltas",
    "lfr",
    "rdf_inverse_deltas",
    "rdf",
    "peak_inverse_delta",
    "mean_inverse_delta",
    "normalization",
    "n_samples",
    "dim",
}


@pytest.fixture
def arrays(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_has_the_documented_keys(
    arrays: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = arrays
    code, out, _ = run(["analyze", str(x), str(y), "--deltas", "0.5,1,2", "--json"], capsys)
    assert code == 0
    payload = json.loads(out)
    assert payload.keys() >= JSON_KEYS
    assert payload["deltas"] == [2.0, 1.0, 0.5]
    assert payload["inverse_deltas"] == [0.5, 1.0, 2.0]
    assert payload["n_samples"] == 60 and payload["dim"] == 3
    assert payload["normalization"] == "max_abs_per_dim"
    assert len(payload["rdf"]) == 2


def test_table_out_file_and_plot(
    arrays: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = arrays
    out_file, plot = tmp_path / "res" / "r.json", tmp_path / "fig.png"
    args = ["analyze", str(x), str(y), "--auto-deltas", "8", "--out", str(out_file)]
    code, out, _ = run([*args, "--plot", str(plot), "--normalize", "none"], capsys)
    assert code == 0
    assert "RDF peak at 1/delta" in out and "LFR" in out
    assert json.loads(out_file.read_text())["normalization"] == "none"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inverse_deltas_and_predictions(
    arrays: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = arrays
    labels = np.load(y)
    np.save(tmp_path / "p.npy", np.eye(3)[labels] * 0.5)
    args = ["analyze", str(x), str(y), "--inverse-deltas", "1,3", "--json"]
    code, out, _ = run([*args, "--predictions", str(tmp_path / "p.npy")], capsys)
    assert code == 0
    payload = json.loads(out)
    assert payload["inverse_deltas"] == [1.0, 3.0]
    assert payload["e_low"] == pytest.approx([0.5, 0.5])


def test_csv_and_npz_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2))
    (tmp_path / "x.csv").write_text("a,b\n" + "\n".join(f"{r[0]},{r[1]}" for r in x))
    (tmp_path / "y.csv").write_text("\n".join(str(i % 2) for i in range(30)))
    np.savez(tmp_path / "both.npz", x=x, y=np.arange(30) % 2)
    code, out, _ = run(
        ["analyze", str(tmp_path / "x.csv"), str(tmp_path / "y.csv"), "--json"], capsys
    )
    assert code == 0
    from_csv = json.loads(out)
    assert from_csv["n_samples"] == 30
    npz = str(tmp_path / "both.npz")
    code, out, _ = run(["analyze", npz, npz, "--json"], capsys)
    assert code == 0
    assert json.loads(out)["lfr"] == pytest.approx(from_csv["lfr"], abs=1e-6)


def test_float_labels_are_real_targets(
    arrays: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, _ = arrays
    np.save(tmp_path / "t.npy", np.linspace(0, 1, 60))
    code, out, _ = run(["analyze", str(x), str(tmp_path / "t.npy"), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["n_outputs"] == 1


def write_bad(tmp_path: Path, kind: str) -> list[str]:
    """Arguments for one bad-input case, with the files it needs written to tmp_path."""
    x = np.random.default_rng(0).normal(size=(10, 2))
    good_x, good_y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(good_x, x)
    np.save(good_y, np.arange(10) % 2)
    if kind == "rows":
        np.save(tmp_path / "short.npy", np.arange(9) % 2)
        return [str(good_x), str(tmp_path / "short.npy")]
    if kind == "nan":
        x[3, 1] = np.nan
        np.save(tmp_path / "nan.npy", x)
        return [str(tmp_path / "nan.npy"), str(good_y)]
    if kind == "one-sample":
        np.save(tmp_path / "one.npy", x[:1])
        np.save(tmp_path / "one_y.npy", np.array([1]))
        return [str(tmp_path / "one.npy"), str(tmp_path / "one_y.npy")]
    if kind == "empty-file":
        (tmp_path / "empty.npy").write_bytes(b"")
        return [str(tmp_path / "empty.npy"), str(good_y)]
    if kind == "empty-array":
        np.save(tmp_path / "none.npy", np.zeros((0, 2)))
        return [str(tmp_path / "none.npy"), str(good_y)]
    if kind == "negative-delta":
        return [str(good_x), str(good_y), "--deltas", "0.5,-1"]
    if kind == "zero-delta":
        return [str(good_x), str(good_y), "--deltas", "0,1"]
    if kind == "not-numbers":
        return [str(good_x), str(good_y), "--deltas", "a,b"]
    if kind == "unknown-option":
        return [str(good_x), str(good_y), "--frobnicate"]
    if kind == "unreadable":
        (tmp_path / "junk.npy").write_bytes(b"this is not numpy")
        return [str(tmp_path / "junk.npy"), str(good_y)]
    if kind == "missing":
        return [str(tmp_path / "nowhere.npy"), str(good_y)]
    if kind == "two-grids":
        return [str(good_x), str(good_y), "--deltas", "1,2", "--auto-deltas", "5"]
    if kind == "bad-mode":
        return [str(good_x), str(good_y), "--normalize", "l2"]
    if kind == "ci-range":
        return [str(good_x), str(good_y), "--ci", "0"]
    if kind == "ci-predictions":
        np.save(tmp_path / "p.npy", np.zeros((10, 2)))
        return [str(good_x), str(good_y), "--ci", "0.01", "--predictions", str(tmp_path / "p.npy")]
    if kind == "truncated":
        np.save(tmp_path / "big.npy", np.zeros((100, 4)))
        data = (tmp_path / "big.npy").read_bytes()
        (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
        return [str(tmp_path / "cut.npy"), str(good_y)]
    if kind == "suffix":
        (tmp_path / "x.txt").write_text("1,2")
        return [str(tmp_path / "x.txt"), str(good_y)]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("rows", "10 rows but labels have 9"),
        ("nan", "NaN"),
        ("one-sample", "at least 2 samples"),
        ("empty-file", "is empty"),
        ("empty-array", "empty array"),
        ("negative-delta", "positive"),
        ("zero-delta", "positive"),
        ("not-numbers", "--deltas"),
        ("unknown-option", "--frobnicate"),
        ("unreadable", "cannot read"),
        ("missing", "does not exist"),
        ("two-grids", "only one of"),
        ("bad-mode", "--normalize"),
        ("suffix", ".npy, .npz or .csv"),
        ("ci-range", "--ci must lie strictly between 0 and 1"),
        ("ci-predictions", "--ci: the row-sampled estimator"),
        ("truncated", "cannot read features"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    code, out, err = run(["analyze", *write_bad(tmp_path, kind)], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0]


def test_ci_estimates_from_sampled_rows_of_a_mapped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=3000)
    x = (rng.normal(size=(3, 6))[labels] + rng.normal(scale=1.5, size=(3000, 6))).astype("f4")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    args = ["analyze", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--deltas", "0.05,0.5"]
    code, out, _ = run([*args, "--ci", "0.02", "--json"], capsys)
    assert code == 0
    sampled = json.loads(out)
    assert sampled["estimator"] == "row_sampled"
    assert 0 < sampled["rows_evaluated"] < 1500
    assert len(sampled["lfr_ci_half_width"]) == 2 and max(sampled["lfr_ci_half_width"]) <= 0.02
    assert len(sampled["rdf_ci_half_width"]) == 1
    code, out, _ = run([*args, "--json"], capsys)
    exact = json.loads(out)
    assert exact["estimator"] == "exact" and exact["lfr_ci_half_width"] is None
    for value, truth, half in zip(
        sampled["lfr"], exact["lfr"], sampled["lfr_ci_half_width"], strict=True
    ):
        assert abs(value - truth) <= 3 * half
    code, out, _ = run([*args, "--ci", "0.02"], capsys)
    assert code == 0 and "+-95%" in out and "estimator row_sampled" in out


def test_installed_entry_point_reports_without_traceback(tmp_path: Path) -> None:
    """The real console script: exit status 2 and no traceback on a bad file."""
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    script = Path(sys.executable).parent / "dfp"
    proc = subprocess.run(
        [str(script), "analyze", str(tmp_path / "bad.npy"), str(tmp_path / "bad.npy")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
