"""Every scenario shows its phenomenon; the noise ball matches its closed form."""

from __future__ import annotations

import pytest

from optimlab.landscapes.scenarios import (
    SCENARIOS,
    get_scenario,
    list_scenarios,
    noise_ball,
    run_scenario,
)


def test_the_issue_scenarios_are_all_there() -> None:
    assert list_scenarios() == [
        "ravine", "saddle", "local-minimum", "lr-too-small", "lr-too-large", "adagrad-stall",
        "momentum-overshoot", "optimal-momentum", "noise", "bf16-stagnation",
    ]  # fmt: skip


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_shows_its_phenomenon(name: str) -> None:
    outcome = run_scenario(name)
    assert len(outcome.scenario.explanation) == 2 and all(outcome.scenario.explanation)
    assert len(outcome.checks) >= 2
    failed = [claim for claim, ok in outcome.checks if not ok]
    assert not failed, failed


def test_scenarios_are_reproducible() -> None:
    first, second = run_scenario("saddle"), run_scenario("saddle")
    assert [r.path.tolist() for r in first.result.runs] == [
        r.path.tolist() for r in second.result.runs
    ]


def test_noise_ball_closed_form() -> None:
    # η = 1 on ½θ² jumps straight to the minimum: what remains is the last step's noise,
    # E[f] = ½·2·(ησ)² = σ² for two coordinates.
    assert noise_ball(1.0, 2.0) == pytest.approx(4.0)
    assert noise_ball(0.1, 1.0) == pytest.approx(0.1 / 1.9)


def test_checks_can_fail() -> None:
    # The ravine checks flag a run where SGD does not zigzag (lr 0.4 damps the y axis).
    scenario = get_scenario("ravine")
    from optimlab.landscapes.experiment import run_landscape

    calm = run_landscape(
        "ravine", "sgd:lr=0.4,momentum:lr=0.1,adagrad:lr=1.5,adam:lr=0.3", steps=30,
        starts=[(-7, 2)],
    )  # fmt: skip
    assert not all(ok for _, ok in scenario.checks(calm))


def test_unknown_scenario_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown scenario 'nope'; valid scenarios: ravine, saddle"
    ):
        get_scenario("nope")
