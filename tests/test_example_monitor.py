"""The example that trains a user-defined network under a FrequencyMonitor runs as shipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dfp_engine.results import ExperimentResult

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "monitor_own_network.py"


def test_example_trains_and_writes_a_monitor_result(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "2", "--probe", "200", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("RDF peak 1/δ") == 3  # epochs 0, 1 and 2
    result = ExperimentResult.model_validate(json.loads((tmp_path / "result.json").read_text()))
    run = result.runs[0]
    assert [c.epoch for c in run.checkpoints] == [0, 1, 2]
    assert run.layer_names == ["stem", "blocks.0", "blocks.2", "head"]
    assert all(la.n_samples == 200 for c in run.checkpoints for la in c.layers)
    assert (tmp_path / "rdf_layers.png").read_bytes().startswith(b"\x89PNG")
