"""Does the quick suite's answer agree with the full suite's?

Reads two finished comparison directories (their summary.json) — a full-suite run and a quick
(or any candidate) suite run of the same optimizers — and prints:

- the two overall rankings side by side (rank, with ties as compare reports them), and
  Kendall's τ-b between them over the optimizers ranked in both (tied ranks count as ties);
- per problem that both ran: τ-b of the two per-problem rankings and whether the winner is the
  same (a winner tied with others counts as the same when the other run's winner is among them);
- both runs' wall clock and summed trial CPU seconds.

    .venv/bin/python benchmarks/suite_agreement.py FULL_DIR QUICK_DIR [--json PATH]
    .venv/bin/python benchmarks/suite_agreement.py FULL_DIR --split-half

``--split-half``: how reproducible is one run's own ranking? Its seed reruns are split into two
halves (seeds 0 … N/2−1 and N/2 … N−1, at the same tuned rates: the grid is seed 0's), each
half is summarized as a run of its own, and the two halves' rankings are compared the same way.
A quick suite cannot agree with the full suite better than the full suite agrees with itself.

Issue 14 asks the quick suite for τ ≥ 0.8 against the full suite's overall ranking with
`make demo` at ≤ 3 minutes; docs/compare.md reports this script's output for the two real runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from halving_agreement import kendall_tau


def load(directory: Path) -> dict[str, Any]:
    path = directory / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no summary.json (is the run finished?)")
    return json.loads(path.read_text())


def overall_ranks(summary: dict[str, Any]) -> dict[str, float]:
    """Optimizer → overall rank (ties share a rank, as compare prints them)."""
    return {entry["optimizer"]: float(entry["rank"]) for entry in summary["ranking"]}


def problem_ranks(summary: dict[str, Any], problem: str) -> dict[str, float]:
    """Optimizer → rank on one problem (ties share a rank); unranked ones are left out."""
    entries = summary["problems"][problem]
    return {
        name: float(entry["rank"])
        for name, entry in entries.items()
        if isinstance(entry, dict) and entry.get("rank") is not None
    }


def tau(a: dict[str, float], b: dict[str, float]) -> tuple[float, int]:
    """τ-b over the optimizers both rank, and how many those are."""
    names = sorted(set(a) & set(b))
    if len(names) < 2:
        return float("nan"), len(names)
    return kendall_tau([a[n] for n in names], [b[n] for n in names]), len(names)


def winners(ranks: dict[str, float]) -> set[str]:
    best = min(ranks.values(), default=None)
    return {n for n, r in ranks.items() if r == best}


def agreement(full: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    a, b = overall_ranks(full), overall_ranks(quick)
    overall_tau, count = tau(a, b)
    per_problem = {}
    for problem in full["problems"]:
        if problem not in quick["problems"]:
            continue
        pa, pb = problem_ranks(full, problem), problem_ranks(quick, problem)
        t, n = tau(pa, pb)
        per_problem[problem] = {
            "tau": t,
            "optimizers": n,
            "same_winner": bool(winners(pa) & winners(pb)),
        }
    return {
        "overall": {"tau": overall_tau, "optimizers": count, "full": a, "quick": b},
        "per_problem": per_problem,
        "times": {
            name: {
                "suite": s["run"]["suite"],
                "problems": len(s["run"]["problems"]),
                "trials": s["run"]["trials"],
                "wall_seconds": s["run"]["seconds"],
                "trial_cpu_seconds": s["run"]["trial_cpu_seconds"],
            }
            for name, s in (("full", full), ("quick", quick))
        },
    }


def table(result: dict[str, Any]) -> str:
    overall = result["overall"]
    full, quick = overall["full"], overall["quick"]
    lines = ["| optimizer | full-suite rank | quick-suite rank |", "| --- | ---: | ---: |"]
    for name in sorted(set(full) | set(quick), key=lambda n: (full.get(n, 99), n)):
        lines.append(f"| {name} | {full.get(name, '—'):g} | {quick.get(name, '—'):g} |")
    lines.append("")
    lines.append(
        f"overall Kendall τ-b = {overall['tau']:.3f} over {overall['optimizers']} optimizers"
    )
    lines.append("")
    lines.append("| problem | τ-b | same winner |")
    lines.append("| --- | ---: | --- |")
    for problem, row in result["per_problem"].items():
        same = "yes" if row["same_winner"] else "no"
        lines.append(f"| {problem} | {row['tau']:.3f} | {same} |")
    lines.append("")
    lines.append("| run | suite | problems | trials | wall s | trial CPU s |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, t in result["times"].items():
        wall, cpu = (
            "—" if v is None else f"{v:.0f}" for v in (t["wall_seconds"], t["trial_cpu_seconds"])
        )
        lines.append(
            f"| {name} | {t['suite']} | {t['problems']} | {t['trials']} | {wall} | {cpu} |"
        )
    return "\n".join(lines)


def rebuilt_comparison(run: dict[str, Any]) -> Any:
    """The `Comparison` a finished run planned, from its summary's ``run`` block."""
    from optimlab.cli.compare import build_comparison

    return build_comparison(
        run["suite"],
        ",".join(p["problem"] for p in run["problems"]),
        ",".join(run["optimizers"]),
        run["seeds"],
        run["schedule"],
        None,
        evals=run["evals"],
    )


def half_summaries(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's summary recomputed twice from its store: once over the first half of its seed
    reruns, once over the second (same grid, so the same tuned rates)."""
    from optimlab.lab.protocol import Comparison
    from optimlab.lab.store import ResultStore
    from optimlab.lab.summary import summarize_store

    run = load(directory)["run"]
    comparison = rebuilt_comparison(run)
    seed_trials = Comparison.seed_trials
    seeds = run["seeds"]
    halves = []
    for chosen in (range(seeds // 2), range(seeds // 2, seeds)):

        def some_seeds(self, problem, steps, c, lr, chosen=chosen):
            return [t for t in seed_trials(self, problem, steps, c, lr) if t.seed in chosen]

        Comparison.seed_trials = some_seeds  # type: ignore[method-assign]
        try:
            halves.append(summarize_store(comparison, ResultStore(directory, create=False)))
        finally:
            Comparison.seed_trials = seed_trials  # type: ignore[method-assign]
    return halves[0], halves[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", type=Path, help="the full suite's output directory")
    parser.add_argument("quick", type=Path, nargs="?", help="the quick suite's output directory")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    parser.add_argument(
        "--split-half",
        action="store_true",
        help="compare the first half of FULL_DIR's seeds with the second half instead",
    )
    args = parser.parse_args(argv)
    if args.split_half:
        result = agreement(*half_summaries(args.full))
    elif args.quick is None:
        parser.error("QUICK_DIR is required (or --split-half)")
    else:
        result = agreement(load(args.full), load(args.quick))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
