"""Muon against torch.optim.Muon (+ torch.optim.AdamW for the non-matrices) and Keras 3 Muon:
float64, 120 steps, 0-D/1-D/2-D/4-D parameters in two groups, a state_dict round trip mid-run
(tests/modern_harness.py); the conv-kernel scale; the whole-network helper."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch
from torch import nn

from optimlab.optim.muon import Muon, muon_for, newton_schulz, split_for_muon
from tests import modern_harness as harness
from tests.keras_quirks import keras_float64_kept_float64
from tests.test_keras_parity import keras_floatx

keras = pytest.importorskip("keras")

ADAMW = {"lr": 1e-2, "weight_decay": 0.05}
#: the same, as an optimlab Muon group (its AdamW tensors decay with adamw_weight_decay)
ADAMW_GROUP = {"lr": 1e-2, "adamw_weight_decay": 0.05}


class TorchMuonAndAdamW:
    """The reference: torch.optim.Muon on the 2-D weight and on the conv kernel as the 2-D
    matrix (out, in·kh·kw) (a view sharing its storage), torch.optim.AdamW on gain and bias."""

    def __init__(self, params: list[torch.Tensor], muon: dict, adamw: dict) -> None:
        gain, bias, weight, conv = params
        self.conv = conv
        self.conv_matrix = conv.detach().view(conv.shape[0], -1)
        self.muon = torch.optim.Muon([weight, self.conv_matrix], **muon)
        self.adamw = torch.optim.AdamW([gain, bias], **adamw)

    def step(self) -> None:
        self.conv_matrix.grad = self.conv.grad.reshape(self.conv_matrix.shape)
        self.muon.step()
        self.adamw.step()


OPTIONS = [
    {},
    {"adjust_lr_fn": "match_rms_adamw", "nesterov": False, "momentum": 0.8, "weight_decay": 0.2},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_torch_muon_bfloat16_iteration_included(options: dict) -> None:
    def ours(params):
        groups = [{"params": params[:2], **ADAMW_GROUP}, {"params": params[2:]}]
        return Muon(groups, lr=2e-2, **options)

    def theirs(params):
        return TorchMuonAndAdamW(params, {"lr": 2e-2, **options}, ADAMW)

    mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-1
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


@pytest.mark.parametrize(
    "options", [{}, {"nesterov": False, "momentum": 0.8}], ids=lambda o: ",".join(o) or "defaults"
)
def test_matches_keras_muon(options: dict) -> None:
    """Keras sends the 4-D kernel to AdamW (it takes exactly-2-D tensors only): use_muon=False
    there.  Keras's float32 promotion quirk (tests/keras_quirks.py) is worked around."""

    def ours(params):
        groups = [{"params": params[:3]}, {"params": params[3:], "use_muon": False}]
        return Muon(groups, lr=2e-2, convention="keras", **options)

    def theirs(params):
        return harness.KerasGroups([(params, keras.optimizers.Muon(learning_rate=2e-2, **options))])

    with keras_floatx(torch.float64), keras_float64_kept_float64():
        mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-1
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def test_full_precision_iteration_is_an_option_and_differs_from_bfloat16() -> None:
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(6, 10, generator=generator, dtype=torch.float64)
    exact = newton_schulz(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7, bfloat16=False)
    rounded = newton_schulz(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7, bfloat16=True)
    assert exact.dtype == torch.float64 and rounded.dtype == torch.bfloat16
    assert 1e-4 < float((exact - rounded.double()).abs().max()) < 0.1
    # the quintic pushes every singular value into roughly [0.7, 1.2] (not exactly 1)
    singular = torch.linalg.svdvals(exact)
    assert float(singular.min()) > 0.6 and float(singular.max()) < 1.25


@pytest.mark.parametrize("adjust_lr_fn", ["original", "match_rms_adamw"])
def test_conv_kernel_update_is_that_of_the_same_matrix(adjust_lr_fn: str) -> None:
    """The scale bug class timm shipped: a 4-D kernel must get exactly the update of the 2-D
    matrix (out, in·kh·kw); with match_rms_adamw its RMS is about 0.2·η (0.1–0.3: the
    iteration's singular values lie in about [0.7, 1.2]), not 5.7×–512× smaller."""
    generator = torch.Generator().manual_seed(1)
    kernel = torch.randn(16, 8, 3, 3, generator=generator, dtype=torch.float64)
    grad = torch.randn(16, 8, 3, 3, generator=generator, dtype=torch.float64)
    updates = []
    for start, gradient in ((kernel, grad), (kernel.reshape(16, 72), grad.reshape(16, 72))):
        param = start.clone().requires_grad_()
        optimizer = Muon(
            [param], lr=1.0, weight_decay=0.0, ns_bfloat16=False, adjust_lr_fn=adjust_lr_fn
        )
        param.grad = gradient.clone()
        optimizer.step()
        updates.append((param.detach() - start).reshape(16, 72))
    conv_update, matrix_update = updates
    torch.testing.assert_close(conv_update, matrix_update, rtol=0, atol=1e-15)
    rms = float(conv_update.square().mean().sqrt())
    if adjust_lr_fn == "match_rms_adamw":
        assert 0.1 < rms < 0.3
    else:  # "original": s = √max(1, 16/72) = 1, RMS ≈ 1/√72
        assert 0.5 / 72**0.5 < rms < 1.5 / 72**0.5


class TinyLM(nn.Module):
    """Embedding, a hidden matrix, a conv kernel, a norm gain and bias, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.hidden = nn.Linear(6, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.norm = nn.LayerNorm(6)
        self.lm_head = nn.Linear(6, 11, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = x + torch.tanh(self.hidden(x))
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.lm_head(self.norm(x))


def _model(seed: int) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM().double()


def _train(model: TinyLM, optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        tokens = torch.randint(0, 11, (4, 7), generator=generator)
        optimizer.zero_grad()
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 11), tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()


def test_split_rule_hidden_matrices_to_muon_the_rest_to_adamw() -> None:
    muon, adamw = split_for_muon(_model(0))
    assert [n for n, _ in muon] == ["hidden.weight", "conv.weight"]
    assert [n for n, _ in adamw] == [
        "embed.weight",
        "hidden.bias",
        "conv.bias",
        "norm.weight",
        "norm.bias",
        "lm_head.weight",
    ]
    # overridable: a named head, exclusions by pattern, no head at all
    muon, _ = split_for_muon(_model(0), head="hidden", exclude=[r"^conv\."])
    assert [n for n, _ in muon] == ["lm_head.weight"]
    muon, _ = split_for_muon(_model(0), head=None)
    assert [n for n, _ in muon] == ["hidden.weight", "conv.weight", "lm_head.weight"]
    with pytest.raises(ValueError, match=r"muon_for: invalid head='decoder'"):
        split_for_muon(_model(0), head="decoder")


def test_helper_steps_like_torch_muon_plus_adamw_as_one_optimizer() -> None:
    """One call, one optimizer: equal to torch.optim.Muon on the hidden matrices (the conv
    kernel as its 2-D view) and torch.optim.AdamW on everything else, stepped side by side."""
    ours_model, twin = _model(0), _model(0)
    ours = muon_for(ours_model, lr=0.02, adamw_lr=3e-3, adamw_weight_decay=0.01)
    assert len(ours.param_groups) == 2

    conv_matrix = twin.conv.weight.detach().view(6, -1)
    muon = torch.optim.Muon([twin.hidden.weight, conv_matrix], lr=0.02)
    hidden = {id(twin.hidden.weight), id(twin.conv.weight)}
    rest = [p for p in twin.parameters() if id(p) not in hidden]
    adamw = torch.optim.AdamW(rest, lr=3e-3, weight_decay=0.01)

    class Both:
        def zero_grad(self) -> None:
            twin.zero_grad()

        def step(self) -> None:
            conv_matrix.grad = twin.conv.weight.grad.reshape(6, -1)
            muon.step()
            adamw.step()

    _train(ours_model, ours, range(30))
    _train(twin, Both(), range(30))
    assert harness.max_difference(list(ours_model.parameters()), list(twin.parameters())) == 0.0
    assert harness.max_difference(list(ours_model.parameters()), list(_model(0).parameters())) > 0


def test_helper_state_dict_round_trip_resumes_bit_for_bit() -> None:
    straight_model, resumed_model = _model(0), _model(0)
    straight = muon_for(straight_model, adjust_lr_fn="match_rms_adamw")
    _train(straight_model, straight, range(20))

    first = muon_for(resumed_model, adjust_lr_fn="match_rms_adamw")
    _train(resumed_model, first, range(10))
    resumed = harness.round_trip(  # through torch.save, into a new optimizer
        first, lambda: muon_for(resumed_model, adjust_lr_fn="match_rms_adamw")
    )
    names = resumed.state_dict()["param_groups"][0]["param_names"]
    assert names == ["hidden.weight", "conv.weight"]
    _train(resumed_model, resumed, range(10, 20))
    assert (
        harness.max_difference(list(straight_model.parameters()), list(resumed_model.parameters()))
        == 0.0
    )


def test_helper_groups_follow_an_lr_scheduler_and_a_closure() -> None:
    model = _model(0)
    optimizer = muon_for(model, lr=0.02, adamw_lr=3e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(tokens).logsumexp(-1).mean()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    scheduler.step()
    assert torch.isfinite(loss)
    assert [group["lr"] for group in optimizer.param_groups] == [0.01, 1.5e-4]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"adjust_lr_fn": "rms"}, r"Muon: invalid adjust_lr_fn='rms'; adjust_lr_fn must be one of"),
        ({"ns_steps": 0}, r"Muon: invalid ns_steps=0; ns_steps must be an integer in \[1, 99\]"),
        ({"momentum": -0.5}, r"Muon: invalid momentum=-0.5; momentum must be in \[0, inf\)"),
        ({"ns_coefficients": (1.0, 2.0)}, r"Muon: invalid ns_coefficients=\(1.0, 2.0\)"),
        ({"adamw_betas": (0.9, 1.0)}, r"Muon: invalid adamw_betas\[1\]=1.0"),
        ({"use_muon": True}, r"Muon: parameter 0 has shape \(2,\); use_muon=True needs"),
        ({"lr": torch.full((2, 1), 0.1)}, r"(?s)Muon: invalid lr=.*one-element tensor"),
    ],
)
def test_bad_hyperparameter_names_argument_value_and_range(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Muon([torch.zeros(2, requires_grad=True)], **options)


def test_compare_trains_muon_on_the_whole_network_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """compare's `muon` is the documented whole-network Muon: embeddings, head, biases and gains
    under AdamW at the defaults' rate ratio, hidden matrices under Muon — not Muon on every
    ≥ 2-D tensor (which put tiny-lm's embeddings and head under Muon)."""
    import dataclasses

    import optimlab.lab.train as train_module
    from optimlab.lab.trial import TrialSpec
    from optimlab.optim import muon as muon_module
    from optimlab.problems import get_problem

    built: list[torch.optim.Optimizer] = []

    def spy(model: torch.nn.Module, **hyperparameters: object) -> torch.optim.Optimizer:
        optimizer = muon_module.for_comparison(model, **hyperparameters)
        built.append(optimizer)
        return optimizer

    registry = dict(train_module.REGISTRY)
    registry["muon"] = dataclasses.replace(registry["muon"], whole_model=spy)
    monkeypatch.setattr(train_module, "REGISTRY", registry)
    problem = get_problem("tiny-lm:depth=1:width=16:heads=2")
    result = train_module.train(TrialSpec(problem.spec, "muon", {"lr": 0.05}, steps=2, evals=1))
    assert result.status == "ok", result.reason
    (optimizer,) = built
    muon_group, adamw_group = optimizer.param_groups
    assert muon_group["use_muon"] and not adamw_group["use_muon"]
    assert muon_group["lr"] == 0.05 and adamw_group["lr"] == pytest.approx(0.05 * 3e-4 / 0.02)
    model = problem.build_model(0)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    embeddings = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    assert all(p.ndim >= 2 for p in muon_group["params"])
    assert len(muon_group["params"]) + len(adamw_group["params"]) == len(shapes)
    n_embedding_params = sum(1 for n in shapes if n.rsplit(".", 1)[0] in embeddings)
    assert n_embedding_params >= 1
    assert sum(p.ndim >= 2 for p in adamw_group["params"]) >= n_embedding_params + 1  # + head


def test_a_bad_exclude_pattern_is_a_clear_error() -> None:
    from optimlab.optim.muon import muon_for

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"invalid exclude pattern '\('.*regular expressions"):
        muon_for(model, exclude=["("])


def test_compares_untuned_muon_runs_at_the_whole_network_builds_default() -> None:
    # the "default" runs used the class's torch default 1e-3 (AdamW part at 1.5e-5, 31.5 % on
    # digits-mlp) while the docs and muon_for say 0.02 / 3e-4
    import inspect

    from optimlab.lab.protocol import Comparison, contenders
    from optimlab.optim import muon as muon_module

    (muon,) = contenders("muon")
    assert muon.default_lr == 0.02 == inspect.signature(muon_for).parameters["lr"].default
    comparison = Comparison([("digits-mlp", 10)], [muon], [0.01], seeds=1)
    comparison.resolve()
    (default,) = comparison.default_trials("digits-mlp", 10, muon)
    assert default.hyperparameters == {"lr": 0.02}
    built = muon_module.for_comparison(
        torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    )
    assert [g["lr"] for g in built.param_groups] == [0.02, pytest.approx(3e-4)]
