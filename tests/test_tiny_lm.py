"""``tiny-lm``: the data are the same bytes everywhere, the model is deterministic per seed, it
learns (validation loss well below log(vocab), the uniform guess), every optimizer runs on it,
and bad options are clear errors (exit 2 from the command line)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from optimlab.cli import main
from optimlab.lab.train import train
from optimlab.lab.trial import TrialSpec
from optimlab.optim.registry import list_optimizers
from optimlab.problems import get_problem, list_problems, tiny_lm

#: a small configuration that still has to attend to the two previous tokens
SMALL = "tiny-lm:width=16:depth=1:heads=2:context=8:vocab=8:branching=2:batch_size=32"


def test_registered_with_its_options():
    assert "tiny-lm" in list_problems()
    problem = get_problem("tiny-lm")
    assert problem.task == "language-model"
    assert {"width", "depth", "heads", "context", "vocab", "branching", "dropout"} <= set(
        problem.options
    )
    x, y = problem.train
    assert x.shape == y.shape == (2048, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one


def test_the_data_are_the_same_bytes_everywhere():
    """numpy's PCG64 stream is stable across versions and platforms: a golden digest."""
    x, y = get_problem("tiny-lm").train
    digest = hashlib.sha256(x.numpy().astype("<i8").tobytes()).hexdigest()[:16]
    assert digest == GOLDEN_TRAIN_DIGEST
    # the chain: every transition is one of the allowed ones
    next_tokens, probabilities = tiny_lm.language(16, 4)
    a, b, c = x[:, :-1].numpy(), x[:, 1:].numpy(), y[:, 1:].numpy()
    assert (next_tokens[a, b] == c[..., None]).any(-1).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0)


GOLDEN_TRAIN_DIGEST = "5abcbdb0511fc50b"


def test_model_is_deterministic_per_seed_and_causal():
    problem = get_problem(SMALL)
    first, again, other = (problem.build_model(s) for s in (0, 0, 1))
    for p, q in zip(first.parameters(), again.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(first.parameters(), other.parameters()))
    first.eval()
    x = problem.val[0][:4]
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 8
    with torch.no_grad():  # the last token cannot change the predictions before it
        torch.testing.assert_close(first(x)[:, :-1], first(changed)[:, :-1])
    # every hidden weight of the blocks is a plain 2-D matrix (Muon's layout)
    block = first.blocks[0]
    assert all(m.weight.dim() == 2 for m in (block.query, block.key, block.value, block.out))


def test_it_learns_well_below_the_uniform_guess():
    spec = TrialSpec(SMALL, "adam", {"lr": 0.01}, steps=150, evals=2)
    result = train(spec)
    assert result.status == "ok", result.reason
    m = result.metrics
    uniform = math.log(8)
    oracle = tiny_lm.oracle_loss(8, 2, get_problem(SMALL).val)
    assert m["curve"]["val_loss"][0] > uniform - 0.1  # starts at the uniform guess
    assert m["final_val_loss"] < uniform - 0.8  # and learns the chain
    assert m["final_val_loss"] > oracle - 0.05  # no model beats the chain itself
    assert m["val_perplexity"] == pytest.approx(math.exp(m["final_val_loss"]))
    # deterministic per seed
    assert train(spec).metrics["final_val_loss"] == m["final_val_loss"]


@pytest.mark.parametrize("optimizer", list_optimizers())
def test_every_optimizer_runs_on_it(optimizer):
    result = train(TrialSpec(SMALL, optimizer, {"lr": 1e-3}, steps=3, evals=1))
    assert result.status == "ok", result.reason


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("heads=3", "width=16 is not divisible by heads=3"),
        ("context=2", "option context=2 is not allowed; allowed: an integer >= 3"),
        ("branching=9", "branching=9 is larger than vocab=8"),
        ("dropout=1.0", "option dropout=1.0 is not allowed"),
        ("layers=2", "unknown option 'layers' for problem 'tiny-lm'"),
    ],
)
def test_bad_options_are_clear_errors(option, message):
    with pytest.raises(ValueError, match=message):
        get_problem(f"tiny-lm:width=16:vocab=8:{option}")


def test_bad_option_exits_2_from_the_command_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    code = main(["compare", "--problems", "tiny-lm:heads=5", "--optimizers", "adam", "--out", out])
    assert code == 2
    err = capsys.readouterr().err
    assert "width=32 is not divisible by heads=5" in " ".join(err.split())
    assert "Traceback" not in err


def test_a_finite_loss_too_large_for_its_perplexity_is_stored_not_failed(monkeypatch):
    # adam at lr 10 reached a finite loss above 709.8 nats: math.exp raised OverflowError and
    # the trial was stored as failed with no metrics
    import optimlab.lab.train as train_module

    real = train_module.evaluate

    def exploded(model, problem, split, *args, **kwargs):
        _, accuracy, outputs = real(model, problem, split, *args, **kwargs)
        return 800.0, accuracy, outputs

    monkeypatch.setattr(train_module, "evaluate", exploded)
    result = train(TrialSpec(SMALL, "adam", {"lr": 1e-3}, steps=2, evals=1))
    assert result.status != "failed", result.reason
    assert result.metrics["final_test_loss"] == 800.0
    assert result.metrics["test_perplexity"] is None  # inf, stored as null (jsonable)
