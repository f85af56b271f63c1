"""`dfp reproduce` at smoke scale: the report's structure, its verdicts, and bad options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dfp.cli import main
from dfp.reproduce.claims import CLAIM_IDS, CLAIMS, combined, decisive
from dfp_engine.results import ExperimentResult
from dfp_engine.verdicts import compute_verdicts

KEYS = {"id", "paper", "outcome", "measured", "spec", "figures"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    assert main(["reproduce", "--out", str(out), "--scale", "smoke", "--quiet"]) == 0
    return out


def test_the_report_has_every_claim_with_its_evidence(report: Path) -> None:
    document = json.loads((report / "report.json").read_text())
    assert set(document) == {"claims", "environment", "elapsed_seconds"}
    assert [c["id"] for c in document["claims"]] == CLAIM_IDS
    assert document["environment"]["scale"] == "smoke" and document["elapsed_seconds"] > 0
    for claim in document["claims"]:
        assert set(claim) >= KEYS
        assert claim["outcome"] in {"holds", "does_not_hold", "inconclusive"}
        assert claim["paper"]["statement"] and claim["paper"]["figure"]
        assert claim["figures"], claim["id"]
        for figure in claim["figures"]:
            assert (report / figure).read_bytes().startswith(b"\x89PNG")
        assert claim["measured"]["detail"]


def test_fig2_is_reproduced_exactly_and_holds(report: Path) -> None:
    document = json.loads((report / "report.json").read_text())
    sin = document["claims"][0]
    assert sin["id"] == "sin_lfr_figure" and sin["outcome"] == "holds"
    peaks = sin["measured"]["peak_inverse_delta"]
    assert peaks["5"] < peaks["9"] < peaks["13"]
    lfr = sin["measured"]["lfr_at_inverse_delta_2500"]
    # The paper's exactly reproducible numbers (2 001 points of [-5, 5], 1/δ = 2500).
    assert lfr["5"] == pytest.approx(0.907, abs=0.005)
    assert lfr["9"] == pytest.approx(0.728, abs=0.005)
    assert lfr["13"] == pytest.approx(0.516, abs=0.005)


def test_each_outcome_is_the_verdict_of_the_stored_result(report: Path) -> None:
    document = json.loads((report / "report.json").read_text())
    by_id = {c["id"]: c for c in document["claims"]}
    for claim in CLAIMS[1:]:
        result = ExperimentResult.model_validate_json(
            (report / claim.id / "result.json").read_text()
        )
        assert compute_verdicts(result) == result.verdicts
        chosen = decisive(result, claim)
        assert chosen, claim.id
        assert by_id[claim.id]["outcome"] == combined(chosen)
        assert by_id[claim.id]["verdicts"] == [v.model_dump(mode="json") for v in chosen]
        spec = json.loads((report / claim.id / "spec.json").read_text())
        assert spec == by_id[claim.id]["spec"] == result.spec


def test_the_html_is_self_contained(report: Path) -> None:
    page = (report / "report.html").read_text()
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    document = json.loads((report / "report.json").read_text())
    n_figures = sum(len(c["figures"]) for c in document["claims"])
    assert page.count('src="data:image/png;base64,') == n_figures
    assert page.count('href="data:application/json;base64,') == len(CLAIM_IDS)
    for claim_id in CLAIM_IDS:
        assert f'href="#{claim_id}"' in page


def test_seeds_judge_each_claim_across_seeds(tmp_path: Path) -> None:
    args = ["reproduce", "--out", str(tmp_path), "--scale", "smoke", "--quiet", "--seeds", "2"]
    assert main([*args, "--only", "fourier_low_frequency_first"]) == 0
    (claim,) = json.loads((tmp_path / "report.json").read_text())["claims"]
    assert [v["scope"] for v in claim["verdicts"]] == [{"seeds": 2}]
    assert "of 2 seeds" in claim["verdicts"][0]["detail"]
    assert claim["spec"]["repeats"] == 2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--only", "bogus"], "error: --only: unknown claim 'bogus'"),
        (["--scale", "huge"], "error: --scale: 'huge' is not one of laptop, paper, smoke"),
        (["--seeds", "0"], "error: --seeds: 0 must be between 1 and 100"),
    ],
)
def test_bad_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    assert main(["reproduce", "--out", str(tmp_path), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
