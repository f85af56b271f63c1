"""The reproduction report: report.json and a self-contained report.html (figures embedded)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from dfp.reproduce.suite import ClaimOutcome

OUTCOME_COLOURS = {"holds": "#1a7f37", "does_not_hold": "#b42318", "inconclusive": "#9a6700"}
STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #1f2328; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.outcome { font-weight: 600; white-space: nowrap; }
section { border-top: 1px solid #d0d7de; margin-top: 2em; padding-top: 1em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code, pre { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
.quote { border-left: 4px solid #d0d7de; padding-left: 1em; color: #57606a; }
"""


def report_document(
    outcomes: list[ClaimOutcome], environment: dict[str, Any], elapsed: float
) -> dict[str, Any]:
    """report.json: one entry per claim, the environment and the suite's run time."""
    return {
        "claims": [
            {
                "id": o.claim.id,
                "paper": {
                    "statement": o.claim.paper,
                    "figure": o.claim.figure,
                    "reported": o.claim.reported,
                },
                "outcome": o.outcome,
                "measured": o.measured,
                "spec": o.spec,
                "figures": [f"{o.claim.id}/{name}.png" for name in o.figures],
                "verdicts": [v.model_dump(mode="json") for v in o.verdicts],
                "elapsed_seconds": round(o.seconds, 2),
            }
            for o in outcomes
        ],
        "environment": environment,
        "elapsed_seconds": round(elapsed, 2),
    }


def _e(text: object) -> str:
    return html.escape(str(text))


def _outcome(outcome: str) -> str:
    colour = OUTCOME_COLOURS.get(outcome, "#57606a")
    return f'<span class="outcome" style="color:{colour}">{_e(outcome.replace("_", " "))}</span>'


def _section(o: ClaimOutcome) -> str:
    spec_json = json.dumps(o.spec, indent=1)
    spec_uri = "data:application/json;base64," + base64.b64encode(spec_json.encode()).decode()
    figures = "".join(
        f'<figure><img alt="{_e(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{_e(name)}</figcaption></figure>'
        for name, png in o.figures.items()
    )
    verdicts = "".join(
        f"<tr><td>{_outcome(v.outcome)}</td><td>{_e(json.dumps(v.scope))}</td>"
        f"<td>{_e(v.statistic)}</td><td>{_e('—' if v.value is None else f'{v.value:.3g}')}</td>"
        f"<td>{_e(f'{v.threshold:g}')}</td><td>{_e(v.detail)}</td></tr>"
        for v in o.verdicts
    )
    differs = (
        f"<p><b>Where this setup differs:</b> {_e(o.claim.differs)}</p>" if o.claim.differs else ""
    )
    return f"""
<section id="{_e(o.claim.id)}">
<h2>{_e(o.claim.id)}: {_outcome(o.outcome)}</h2>
<p class="quote">{_e(o.claim.paper)} ({_e(o.claim.figure)})</p>
<p><b>The paper reports:</b> {_e(o.claim.reported)}</p>
{differs}
{figures}
<table><tr><th>outcome</th><th>scope</th><th>statistic</th><th>value</th><th>threshold</th>
<th>what was seen</th></tr>{verdicts}</table>
<p><a download="{_e(o.claim.id)}-spec.json" href="{spec_uri}">The spec that was run</a>
({o.seconds:.0f} s)</p>
<details><summary>spec</summary><pre>{_e(spec_json)}</pre></details>
</section>"""


def report_html(document: dict[str, Any], outcomes: list[ClaimOutcome]) -> str:
    """One HTML page with no external scripts, styles, fonts or images."""
    rows = "".join(
        f'<tr><td><a href="#{_e(o.claim.id)}">{_e(o.claim.id)}</a></td><td>{_e(o.claim.figure)}'
        f"</td><td>{_outcome(o.outcome)}</td><td>{_e('; '.join(o.measured.get('detail', [])))}"
        "</td></tr>"
        for o in outcomes
    )
    env = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in document["environment"].items()
    )
    sections = "".join(_section(o) for o in outcomes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>dfp: the Deep Frequency Principle, re-run</title><style>{STYLE}</style></head>
<body>
<h1>The Deep Frequency Principle, re-run</h1>
<p>Xu &amp; Zhou, <i>Deep frequency principle towards understanding why deeper learning is
faster</i> (AAAI 2021), and the filtering test of the F-principle paper, re-run by dfp at
<b>{_e(document["environment"]["scale"])}</b> scale in {document["elapsed_seconds"]:.0f} s.
Each verdict is computed from the stored result (definitions: dfp's docs/method.md).</p>
<table><tr><th>claim</th><th>paper</th><th>outcome</th><th>measured</th></tr>{rows}</table>
{sections}
<section><h2>Environment</h2><table>{env}</table></section>
</body></html>
"""


def write_report(
    out: Path, outcomes: list[ClaimOutcome], environment: dict[str, Any], elapsed: float
) -> tuple[Path, Path]:
    """Write `out/report.json` and `out/report.html`."""
    document = report_document(outcomes, environment, elapsed)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    html_path.write_text(report_html(document, outcomes), encoding="utf-8")
    return json_path, html_path
