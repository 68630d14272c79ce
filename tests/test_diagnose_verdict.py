"""How far to trust lr-find (issue 11, item 5): the curve's verdict on the issue's cases —
random labels, NaN inputs and a 10-layer sigmoid net are flagged and get no number, digits-mlp
with Adam is reliable — fastai's rules and options, in the Python API, the CLI's text and JSON,
and the plot."""

from __future__ import annotations

import json
import math

import pytest
import torch

from optimlab.cli import main
from optimlab.diagnose.lr_find import FLAT_DROP, curve_verdict, lr_find, lr_schedule, suggest_lr
from optimlab.diagnose.plots import lr_find_figure
from optimlab.diagnose.run import problem_loss
from optimlab.optim import create
from optimlab.problems import get_problem


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def range_test(spec: str, optimizer: str = "adam", *, labels=None, inputs=None, seed=0, **kw):
    problem = get_problem(spec)
    model = problem.build_model(seed)
    x, y = problem.train
    data = (x if inputs is None else inputs(x), y if labels is None else labels(y))
    return lr_find(model, data, problem_loss(problem, model),
                   create(optimizer, model.parameters()), batch_size=problem.batch_size,
                   seed=seed, **kw)  # fmt: skip


def shuffled(y: torch.Tensor) -> torch.Tensor:
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_labels_are_flat_and_get_no_number(seed):
    result = range_test("digits-mlp", labels=shuffled, seed=seed)
    verdict = result.suggestion.verdict
    assert verdict.verdict == "flat" and result.suggestion.lr is None
    assert verdict.drop < FLAT_DROP
    assert f"did not fall by more than {FLAT_DROP:.0%}" in verdict.reason


def test_nan_inputs_are_nonfinite_from_the_start():
    result = range_test("digits-mlp", inputs=lambda x: torch.full_like(x, math.nan))
    assert result.stop_reason == "nonfinite" and len(result.losses) == 1
    assert result.suggestion.verdict.verdict == "nonfinite"
    assert result.suggestion.lr is None
    assert "non-finite from the start" in result.suggestion.verdict.reason


@pytest.mark.parametrize("init", ["xavier", "default"])
def test_the_ten_layer_sigmoid_net_is_flat(init):
    """The issue's example answered 0.00242 for this curve, whose loss barely moves."""
    result = range_test(f"deep-mlp:depth=10:activation=sigmoid:init={init}")
    assert result.suggestion.verdict.verdict == "flat" and result.suggestion.lr is None


@pytest.mark.parametrize("seed", [0, 1])
def test_digits_mlp_with_adam_is_reliable(seed):
    result = range_test("digits-mlp", seed=seed)
    s = result.suggestion
    assert s.verdict.verdict == "reliable" and s.reliable
    assert s.rule == "valley" and s.valley_range[0] <= s.lr <= s.valley_range[1]
    assert s.verdict.drop > 0.5 and s.verdict.noise < 0.05


def test_drop_is_the_fall_of_the_trend_over_the_starting_level():
    """A noiseless curve: flat at 2, a straight fall to a floor of 0.5 (ten points), then a
    steep rise. The trend (running median, then mean, of 5) of the floor is the floor, so
    drop = (2 − 0.5)/2 = 0.75 exactly."""
    losses = [2.0] * 30 + [2.0 - 1.5 * i / 40 for i in range(1, 41)] + [0.5] * 10
    losses += [0.5 + i for i in range(1, 20)]
    lrs = lr_schedule(1e-7, 10.0, len(losses))
    verdict = curve_verdict(lrs, losses)
    assert verdict.verdict == "reliable"
    assert verdict.drop == pytest.approx(0.75, rel=1e-12)
    assert verdict.noise == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(("sigma", "expected"), [(0.01, "reliable"), (0.5, "noisy")])
def test_noise_around_the_trend_makes_a_curve_noisy(sigma, expected):
    """The same fall of 1.5 with Gaussian noise of σ = 1 % and 33 % of the fall."""
    generator = torch.Generator().manual_seed(0)
    losses = [2.0] * 30 + [2.0 - 1.5 * i / 40 for i in range(1, 41)] + [0.5 + i for i in range(30)]
    losses = [v + sigma * float(torch.randn((), generator=generator)) for v in losses]
    s = suggest_lr(lr_schedule(1e-7, 10.0, len(losses)), losses)
    assert s.verdict.verdict == expected
    # A noisy curve keeps its number, marked unreliable.
    assert s.lr is not None and s.reliable == (expected == "reliable")


def test_fastai_rules_minimum_is_a_tenth_of_the_lowest_loss_and_steepest_is_the_steepest():
    valley = range_test("digits-mlp", suggest="valley").suggestion
    minimum = range_test("digits-mlp", suggest="minimum").suggestion
    steepest = range_test("digits-mlp", suggest="steepest").suggestion
    assert minimum.rule == "minimum" and minimum.lr == pytest.approx(valley.minimum / 10)
    assert steepest.rule == "steepest" and steepest.lr == valley.steepest
    assert valley.lr == valley.valley


def test_cli_json_and_text_carry_the_verdict(capsys):
    flat = ["lr-find", "--problem", "deep-mlp:depth=10:activation=sigmoid:init=xavier",
            "--optimizer", "adam"]  # fmt: skip
    assert main([*flat, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["suggestion"] is None and result["verdict"] == "flat"
    assert result["reliable"] is False and "did not fall" in result["reason"]
    assert main(flat) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "no suggestion: flat — the loss did not fall by more than 10%" in text
    # its landmarks are not to be taken for an answer
    assert "steepest descent at:" in text and "(a landmark of the curve, not a suggestion)" in text
    assert main(["lr-find", "--problem", "digits-mlp", "--optimizer", "adam"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "suggested learning rate:" in text and "verdict: reliable" in text
    assert "not a suggestion" not in text


def test_cli_says_when_the_loss_was_lowest_at_the_end_of_the_range(capsys):
    # docs/diagnose.md's sgd example ends at lr 1, where digits-mlp's loss is still falling
    argv = ["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--start-lr", "1e-5",
            "--end-lr", "1", "--num-iter", "50", "--suggest", "steepest"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    at_end = result["stop_reason"] == "completed" and result["minimum"] >= result["lrs"][-1] * (
        1 - 1e-9
    )
    assert at_end  # the docs' example: the lowest loss is at the last rate tested
    assert "try a larger --end-lr" in text


def test_cli_ramp_and_rule_options_reach_the_test(capsys):
    argv = ["lr-find", "--problem", "digits-logreg", "--optimizer", "sgd", "--json",
            "--start-lr", "1e-4", "--end-lr", "1", "--num-iter", "30", "--suggest", "minimum"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lrs"][0] == pytest.approx(1e-4) and len(result["lrs"]) <= 30
    assert result["num_iter"] == 30 and result["end_lr"] == 1.0
    if result["stop_reason"] == "completed":
        assert result["lrs"][-1] == pytest.approx(1.0)
    assert result["rule"] == "minimum"
    assert result["suggestion"] == pytest.approx(result["minimum"] / 10)


def test_the_plot_shows_the_verdict():
    flat = range_test("digits-mlp", labels=shuffled)
    figure = lr_find_figure(flat)
    texts = " ".join(t.get_text().replace("\n", " ") for t in figure.axes[0].texts)
    assert "flat — the loss did not fall" in texts
    # No suggestion line for a flat curve; the reliable curve has one, in its legend.
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert not any(label.startswith("suggestion") for label in legend)
    good = lr_find_figure(range_test("digits-mlp"))
    legend = [t.get_text() for t in good.axes[0].get_legend().get_texts()]
    assert any(label.startswith("suggestion") for label in legend)
    assert "reliable" in " ".join(t.get_text() for t in good.axes[0].texts)
