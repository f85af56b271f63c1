"""`dfp reproduce --submit` and `--from-service`: the suite run by workers, reported locally."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_support import Backend, start_worker, stop_process, wait_for

from dfp.cli import main
from dfp.reproduce.suite import run_suite
from dfp_engine.thresholds import VerdictThresholds

CLAIMS = ["lower_frequency_is_faster", "fourier_low_frequency_first"]


@pytest.fixture(scope="module")
def worker(pg_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_worker(pg_backend.settings, log)
    wait_for(lambda: "ready." in log.read_text(), timeout=90, what="the worker to start")
    yield log
    stop_process(process)


def test_a_submitted_batch_gives_the_report_a_local_run_gives(
    worker: Path,
    pg: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DFP_URL", pg.url)
    monkeypatch.setenv("DFP_API_KEY", pg.key("lab"))
    only = [arg for claim in CLAIMS for arg in ("--only", claim)]
    assert main(["reproduce", "--submit", "--scale", "smoke", *only]) == 0
    captured = capsys.readouterr()
    batch = captured.out.strip()
    assert len(batch) == 12 and all(claim in captured.err for claim in CLAIMS)
    out = tmp_path / "service"
    args = ["reproduce", "--from-service", batch, "--out", str(out), "--timeout", "300"]
    assert main([*args, "--quiet"]) == 0
    document = json.loads((out / "report.json").read_text())
    assert [c["id"] for c in document["claims"]] == ["sin_lfr_figure", *CLAIMS]
    assert document["environment"]["service"]["batch"] == batch
    for claim in document["claims"][1:]:
        assert claim["figures"] and claim["measured"]["experiment_id"]
        for figure in claim["figures"]:
            assert (out / figure).read_bytes().startswith(b"\x89PNG")
    # The same claims run here give the same verdicts: the service judges what the engine does.
    local = run_suite(
        CLAIMS, "smoke", 1, VerdictThresholds(), tmp_path / "local", lambda f, t: None
    )
    for claim, here in zip(document["claims"][1:], local, strict=True):
        assert claim["outcome"] == here.outcome
        assert claim["verdicts"] == [v.model_dump(mode="json") for v in here.verdicts]
    assert main(["reproduce", "--from-service", "000000000000", "--out", str(out)]) == 2
    assert "no experiments are tagged reproduction:000000000000" in capsys.readouterr().err
