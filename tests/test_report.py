"""The report: its content (ranking, per-problem sections, figures, what ran), that it is
self-contained, summary.json's schema, and that Chromium renders it offline without errors."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from optimlab.cli import main

ARGS = [
    "compare",
    "--problems",
    "quadratic-deep,digits-logreg",
    "--optimizers",
    "sgd,adam,adagrad",
    "--steps",
    "20",
    "--seeds",
    "2",
    "--grid-points",
    "4",
    "--workers",
    "1",
]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def test_summary_schema(report: Path) -> None:
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary) >= {"problems", "ranking", "run", "performance_profile", "curves"}
    digits = summary["problems"]["digits-logreg"]
    for name in ("sgd", "adam", "adagrad"):
        entry = digits[name]
        for key in (
            "best_lr",
            "test_accuracy_mean",
            "test_accuracy_std",
            "final_train_loss_mean",
            "final_test_loss_mean",
            "ensemble_test_accuracy",
            "steps_to_target",
            "seconds_per_step_mean",
            "lr_sensitivity",
            "default",
            "rank",
        ):
            assert key in entry, key
        assert 0 <= entry["test_accuracy_mean"] <= 1
    assert "test_accuracy_mean" not in summary["problems"]["quadratic-deep"]["sgd"]
    ranking = summary["ranking"]
    # ranks follow the scores, ties where the bootstrap over seeds cannot separate them
    ranks = [row["rank"] for row in ranking]
    assert ranks[0] == 1 and ranks == sorted(ranks)
    for row in ranking:
        assert row["tied_with"] == [
            r["optimizer"] for r in ranking if r is not row and r["rank"] == row["rank"]
        ]
    assert summary["ranking_ties"]["replicates"] == 1000
    html = (report / "index.html").read_text()
    table = html[html.index('id="overall-ranking"') :].split("</table>")[0]
    for row in ranking:
        if row["tied_with"]:
            assert f"(tied with {', '.join(row['tied_with'])})" in table
    assert {row["optimizer"] for row in ranking} == {"sgd", "adam", "adagrad"}
    scores = [row["profile_score"] for row in ranking]
    assert scores == sorted(scores, reverse=True)
    # the winner of each problem (by steps to target) has ρ(1) > 0
    assert max(row["solved_within_best"] for row in ranking) > 0
    # Moré & Wild at three tolerances, ranked by 1e-2: a tighter target is a lower loss,
    # reached no sooner, and the ranking's score is the 1e-2 profile's
    assert summary["target_tolerance"] == 0.01
    assert set(summary["performance_profiles"]) == {"0.1", "0.01", "0.001"}
    assert summary["performance_profiles"]["0.01"] == summary["performance_profile"]
    for problem, info in summary["problem_info"].items():
        targets = info["target_train_losses"]
        assert targets["0.1"] > targets["0.01"] > targets["0.001"]
        assert info["target_train_loss"] == targets["0.01"]
        for entry in summary["problems"][problem].values():
            steps = entry["steps_to_targets"]
            assert entry["steps_to_target"] == steps["0.01"]
            for looser, tighter in (("0.1", "0.01"), ("0.01", "0.001")):
                if steps[tighter] is not None:
                    assert steps[looser] is not None and steps[looser] <= steps[tighter]
    for row in ranking:
        assert row["profile_scores"]["0.01"] == row["profile_score"]


def test_report_content(report: Path) -> None:
    html = (report / "index.html").read_text()
    summary = json.loads((report / "summary.json").read_text())
    assert "Overall ranking" in html
    for problem in ("quadratic-deep", "digits-logreg"):
        assert f">{problem}</h2>" in html
    for row in summary["ranking"]:
        assert f'<td class="name">{row["optimizer"]}</td>' in html
    # figures: one profile, and curves + sensitivity per problem, all embedded SVG
    images = re.findall(r'<img alt="([^"]+)" src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(images) == 1 + 2 * 2
    for _, payload in images:
        assert base64.b64decode(payload).lstrip().startswith((b"<?xml", b"<svg"))
    assert "What ran" in html and "learning-rate grid" in html
    assert "profile score (tol 0.01)" in html
    assert "score at tol 0.1" in html and "score at tol 0.001" in html


def test_a_tuned_rate_at_the_grids_end_is_marked_in_words_not_only_colour(report: Path) -> None:
    """The terminal's ⇥ and its caption, in the report: the mark beside the rate and a sentence
    under the problem's table naming the optimizers (a newcomer reading the report without
    colour, or printed, saw nothing)."""
    html = (report / "index.html").read_text()
    summary = json.loads((report / "summary.json").read_text())
    edges = 0
    for problem, entries in summary["problems"].items():
        section = html.split(f">{problem}</h2>", 1)[1].split("<h2", 1)[0]
        edge = [label for label, e in entries.items() if e.get("best_lr_at_grid_edge")]
        edges += len(edge)
        for label, e in entries.items():
            if e.get("best_lr") is not None:
                row = next(r for r in section.split("<tr>") if f'"name">{label}</td>' in r)
                marked = f"{e['best_lr']:g} ⇥</td>" in row
                assert marked == (label in edge), (problem, label)
        sentence = "⇥ tuned rate at the end of the rates searched: " + ", ".join(edge)
        assert (sentence in section) == bool(edge), problem
    assert edges, "this run's 4-point grid leaves some tuned rate at its end"


def test_report_is_self_contained(report: Path) -> None:
    html = (report / "index.html").read_text()
    # no reference to anything outside the file: no http(s), no src/href to other files
    assert not re.search(r"https?://(?!www\.w3\.org/)", html)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert all(s.startswith(("data:", "#")) for s in sources), sources
    for payload in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html):
        svg = base64.b64decode(payload).decode()
        assert 'xlink:href="http' not in svg and "<image" not in svg


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_chromium_renders_the_report_offline(report: Path, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    console_errors: list[str] = []
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        page = browser.new_page()
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((report / "index.html").resolve().as_uri(), wait_until="load")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        sizes = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])"
        )
        rows = page.eval_on_selector_all("#overall-ranking tr", "rows => rows.length")
        browser.close()
    assert console_errors == []
    network = [u for u in requests if not u.startswith(("file://", "data:"))]
    assert network == []
    assert len(sizes) == 5 and all(complete and width > 0 for complete, width in sizes)
    assert rows == 1 + 3
    assert shot.stat().st_size > 10_000
