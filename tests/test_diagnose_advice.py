"""diagnose's advice reads the model's settings (issue 11, item 6): it never recommends what is
already in place — before the fix it advised Xavier to a model already on Xavier. Tested on the
deep-mlp variants, with the settings read from the model alone (modules and initial weights)."""

from __future__ import annotations

import json

import pytest
import torch

from optimlab.cli import main
from optimlab.diagnose.gradflow import advise, describe_architecture, gradient_flow, infer_init
from optimlab.optim import create
from optimlab.problems import get_problem


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DEEP = "deep-mlp:depth=10:width=32"

#: variant → the fixes that are in place in it and so must never be recommended
VARIANTS = {
    "activation=sigmoid:init=xavier": {"xavier_init"},
    "activation=tanh:init=xavier": {"xavier_init"},
    "activation=sigmoid:init=default": set(),
    "activation=relu:init=he": {"he_init", "relu"},
    "activation=leaky_relu:init=he": {"he_init", "relu", "leaky_relu"},
    "activation=relu:init=default": {"relu"},
    "activation=sigmoid:init=xavier:batchnorm=true": {"xavier_init", "batchnorm"},
    "activation=relu:init=he:batchnorm=true": {"he_init", "relu", "batchnorm"},
    "activation=sigmoid:init=xavier:residual=true": {"xavier_init", "residual"},
    "activation=relu:init=he:batchnorm=true:residual=true": {
        "he_init", "relu", "batchnorm", "residual",
    },
}  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_the_init_is_recognised_from_the_weights(variant, seed):
    """The init the problem was built with (the independent truth), read back from the initial
    weights alone: Xavier, He and PyTorch's default differ by √2 to √3 in standard deviation."""
    problem = get_problem(f"{DEEP}:{variant}")
    assert infer_init(problem.build_model(seed)) == problem.options["init"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_advice_never_recommends_what_is_in_place(variant):
    """Every advice branch forced on (vanishing, exploding, dead ReLUs), settings read from the
    model only: the fixes in place are never recommended, every other applicable one is."""
    problem = get_problem(f"{DEEP}:{variant}")
    model = problem.build_model(0)
    result = gradient_flow(model, problem.train, problem.loss_fn,
                           create("adam", model.parameters()), batch_size=problem.batch_size)  # fmt: skip
    result.vanishing = result.exploding = result.dead_relu = True
    advice = advise(result, model, describe_architecture(model))
    in_place = VARIANTS[variant]
    assert not in_place & set(result.fixes), (variant, result.fixes)
    wanted = {"batchnorm", "residual", "smaller_lr"} - in_place
    assert wanted <= set(result.fixes)
    text = " ".join(advice)
    if "xavier_init" in in_place:
        assert "Initialize for the activation: Xavier" not in text
        assert "Already in place, so not the fix: Xavier (Glorot) init" in text
    if "he_init" in in_place:
        assert "He init" not in text.replace("He (Kaiming) init", "")
    if "batchnorm" in in_place:
        assert "Add batch normalization" not in text and "Batch normalization bounds" not in text
    if "residual" in in_place:
        assert "Add residual" not in text


def test_the_issue_case_deep_sigmoid_on_xavier_is_not_told_to_use_xavier():
    problem = get_problem("deep-mlp:depth=10:activation=sigmoid:init=xavier")
    model = problem.build_model(0)
    result = gradient_flow(model, problem.train, problem.loss_fn,
                           create("adam", model.parameters()), batch_size=problem.batch_size)  # fmt: skip
    assert result.vanishing
    assert result.fixes == ["relu", "batchnorm", "residual"]
    assert result.architecture["init"] == "xavier" and result.in_place == ["Xavier (Glorot) init"]
    assert not any("Xavier (Glorot) for" in line for line in result.advice)


def test_a_default_init_sigmoid_net_is_told_to_use_xavier():
    problem = get_problem("deep-mlp:depth=10:activation=sigmoid")
    model = problem.build_model(0)
    result = gradient_flow(model, problem.train, problem.loss_fn,
                           create("adam", model.parameters()), batch_size=problem.batch_size)  # fmt: skip
    assert result.vanishing and "xavier_init" in result.fixes
    assert any("this model's init: PyTorch's default" in line for line in result.advice)


def test_diagnose_cli_reports_the_settings_it_read(capsys, tmp_path):
    code = main(["diagnose", "--problem", "deep-mlp:depth=10:activation=sigmoid:init=xavier",
                 "--checks", "gradflow", "--out", str(tmp_path), "--json"])  # fmt: skip
    assert code == 0
    flow = json.loads(capsys.readouterr().out)["gradflow"]
    assert flow["architecture"]["init"] == "xavier" and flow["architecture"]["saturating"]
    assert "xavier_init" not in flow["fixes"]
    assert not any("Initialize for the activation" in line for line in flow["advice"])
