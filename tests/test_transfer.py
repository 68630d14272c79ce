"""The transfer-learning problem `mnist1d-transfer` (optimlab.problems.transfer): fine-tuning a
network pretrained on MNIST-1D's digits 0-4 beats the same network trained from scratch on
digits 5-9 at equal steps (seeds); the pretrained backbone is computed once and reused; freezing
freezes; the backbone's learning-rate factor is what its param group gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from optimlab.lab.train import train
from optimlab.lab.trial import TrialSpec
from optimlab.optim.registry import create
from optimlab.problems import data, get_problem, transfer

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
STEPS = 150
TARGET = 0.45  # validation accuracy on 5 classes (chance: 0.2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One pretraining for the module, in a directory of its own (never the user's cache)."""
    return str(tmp_path_factory.mktemp("pretrained"))


def spec(cache: str, options: str = "", seed: int = 0, lr: float = 3e-3, **kw) -> TrialSpec:
    problem = f"mnist1d-transfer:cache={cache}{options}"
    return TrialSpec(problem, "adam", {"lr": lr}, seed=seed, steps=kw.get("steps", STEPS), evals=10)


def steps_to(curve: dict, target: float) -> float:
    """The first evaluated step whose validation accuracy reaches `target` (inf: never)."""
    hits = [s for s, a in zip(curve["step"], curve["val_accuracy"]) if a >= target]
    return hits[0] if hits else float("inf")


def test_fine_tuning_beats_training_from_scratch_at_equal_steps(cache: str) -> None:
    for seed in SEEDS:
        tuned = train(spec(cache, seed=seed))
        scratch = train(spec(cache, ":pretrained=false", seed=seed))
        assert tuned.status == scratch.status == "ok", (tuned.reason, scratch.reason)
        # the same network, data and head initialization: only the backbone's start differs
        assert (
            tuned.metrics["curve"]["val_accuracy"][0] != scratch.metrics["curve"]["val_accuracy"][0]
        )
        fine, base = tuned.metrics["curve"], scratch.metrics["curve"]
        assert steps_to(fine, TARGET) < steps_to(base, TARGET), (seed, fine, base)
        assert tuned.metrics["test_accuracy"] > scratch.metrics["test_accuracy"] + 0.05, seed


def test_the_backbone_is_pretrained_once_deterministically_and_reused(
    cache: str, tmp_path: Path, monkeypatch
) -> None:
    calls = []
    real = transfer.pretrain
    monkeypatch.setattr(transfer, "pretrain", lambda *a: calls.append(a) or real(*a))
    directory = tmp_path / "cache"
    first = get_problem(f"mnist1d-transfer:cache={directory}:pretrain_steps=300")
    assert len(calls) == 1
    files = [p.name for p in directory.iterdir() if not p.name.endswith(".lock")]
    assert len(files) == 1 and files[0].startswith("mnist1d-transfer-mlp-")  # no temporary left
    stored = torch.load(directory / files[0], weights_only=True)
    assert stored["key"]["steps"] == 300 and stored["source_test_accuracy"] > 0.5  # chance: 0.2
    # this process remembers it; so does the cache handed to the workers
    get_problem(f"mnist1d-transfer:cache={directory}:pretrain_steps=300:freeze=true")
    assert len(calls) == 1 and files[0] in data.export_cache()
    # a new process (memory empty): read from the file, not pretrained again
    monkeypatch.setattr(data, "_IMPORTED", {})
    again = get_problem(f"mnist1d-transfer:cache={directory}:pretrain_steps=300")
    assert len(calls) == 1
    a, b = first.build_model(0), again.build_model(0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # deterministic: a second pretraining gives the same weights to the bit
    repeat = real("mlp", 100, 300)["backbone"]
    assert all(torch.equal(repeat[k], v) for k, v in stored["backbone"].items())
    # anything that determines it is in the key: another budget is another file
    get_problem(f"mnist1d-transfer:cache={directory}:pretrain_steps=301")
    assert len(calls) == 2
    # a damaged file is a cache miss, recomputed and replaced
    monkeypatch.setattr(data, "_IMPORTED", {})
    (directory / files[0]).write_bytes(b"not a checkpoint")
    get_problem(f"mnist1d-transfer:cache={directory}:pretrain_steps=300")
    assert len(calls) == 3
    assert torch.load(directory / files[0], weights_only=True)["key"] == stored["key"]


def test_freeze_trains_the_head_only(cache: str) -> None:
    """Through the training loop: the backbone ends where pretraining left it."""
    problem = get_problem(f"mnist1d-transfer:cache={cache}:freeze=true")
    built = []

    def build(seed: int) -> torch.nn.Module:
        built.append(original(seed))
        return built[-1]

    original, problem.build_model = problem.build_model, build
    start = {k: v.clone() for k, v in original(0).state_dict().items()}
    result = train(spec(cache, ":freeze=true", steps=30), problem)
    assert result.status == "ok"
    (model,) = built
    end = model.state_dict()
    backbone = [k for k in end if k.startswith("backbone.")]
    assert backbone and all(torch.equal(end[k], start[k]) for k in backbone)
    assert not torch.equal(end["head.weight"], start["head.weight"])
    # the optimizer is given the head only
    optimizer = problem.build_optimizer(model, lambda p: create("adam", p, lr=0.1))
    assert [len(g["params"]) for g in optimizer.param_groups] == [2]
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_backbone_lr_is_the_factor_of_its_param_group(cache: str) -> None:
    """One SGD step moves the backbone by factor × the step it takes at factor 1."""
    moves = {}
    for factor in (1.0, 0.1):
        problem = get_problem(f"mnist1d-transfer:cache={cache}:backbone_lr={factor}")
        model = problem.build_model(0)
        optimizer = problem.build_optimizer(model, lambda p: create("sgd", p, lr=0.5))
        assert [g["lr"] for g in optimizer.param_groups] == [0.5 * factor, 0.5]
        before = [p.detach().clone() for p in model.parameters()]
        x, y = problem.train
        problem.loss_fn(model(x[:50]), y[:50]).backward()
        optimizer.step()
        moves[factor] = [p.detach() - b for p, b in zip(model.parameters(), before)]
    names = [n for n, _ in model.named_parameters()]
    for name, full, scaled in zip(names, moves[1.0], moves[0.1]):
        expected = full * 0.1 if name.startswith("backbone.") else full
        torch.testing.assert_close(scaled, expected, rtol=1e-4, atol=1e-7)


def test_bad_options_are_clear(cache: str) -> None:
    with pytest.raises(ValueError, match=r"backbone_lr=0\.1 with freeze=true"):
        get_problem(f"mnist1d-transfer:cache={cache}:freeze=true:backbone_lr=0.1")
    with pytest.raises(ValueError, match=r"option arch='vit' is not allowed; allowed: mlp, cnn"):
        get_problem("mnist1d-transfer:arch=vit")
    with pytest.raises(ValueError, match=r"backbone_lr=-1 is not allowed; allowed: a number in"):
        get_problem("mnist1d-transfer:backbone_lr=-1")
