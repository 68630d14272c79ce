"""benchmarks/suite_agreement.py: Kendall's τ-b between two runs' rankings, ties included,
checked on hand-computed examples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def agreement():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling halving_agreement
    try:
        import suite_agreement

        yield suite_agreement
    finally:
        sys.path.remove(str(BENCHMARKS))


def summary(overall: dict[str, int], problems: dict[str, dict[str, int]]) -> dict:
    return {
        "run": {
            "suite": "x",
            "problems": list(problems),
            "trials": 1,
            "seconds": 1.0,
            "trial_cpu_seconds": 1.0,
        },
        "ranking": [{"optimizer": n, "rank": r} for n, r in overall.items()],
        "problems": {
            p: {n: {"rank": r} for n, r in ranks.items()} for p, ranks in problems.items()
        },
    }


def test_tau_b_with_ties_matches_a_hand_count(agreement, tmp_path: Path) -> None:
    # full: a 1, b 2, c 3, d 4; quick: a 1, b 1 (tie), c 4, d 3.
    # pairs: (a,b) tie in quick only; (a,c) (a,d) (b,c) (b,d) concordant; (c,d) discordant.
    # τ-b = (C − D) / sqrt((C + D + T_full)(C + D + T_quick)) = (4 − 1) / sqrt(5 · 6)
    full = summary({"a": 1, "b": 2, "c": 3, "d": 4}, {"p": {"a": 1, "b": 2}})
    quick = summary({"a": 1, "b": 1, "c": 4, "d": 3}, {"p": {"a": 2, "b": 1}, "q": {"a": 1}})
    result = agreement.agreement(full, quick)
    assert result["overall"]["tau"] == pytest.approx(3 / 30**0.5)
    assert result["overall"]["optimizers"] == 4
    # a problem only one run has is left out; on p the order is reversed
    assert list(result["per_problem"]) == ["p"]
    assert result["per_problem"]["p"]["tau"] == pytest.approx(-1.0)
    assert result["per_problem"]["p"]["same_winner"] is False
    for name, data in (("full", full), ("quick", quick)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(data))
    out = tmp_path / "agreement.json"
    assert (
        agreement.main([str(tmp_path / "full"), str(tmp_path / "quick"), "--json", str(out)]) == 0
    )
    assert json.loads(out.read_text())["overall"]["tau"] == pytest.approx(3 / 30**0.5)


def test_a_missing_summary_is_a_clear_error(agreement, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no summary\.json"):
        agreement.main([str(tmp_path), str(tmp_path)])
