"""Golden values: three steps of every optimizer under each convention, worked out by hand.

In the style of Keras's own optimizer tests: a tiny problem whose trajectory is written down as
literal numbers, derived from the published update rules, independently of optimlab and torch.

Problem: p0 = [1, -2], loss sum(p^2), so the gradient is g = 2p at the current point (set by
hand, no autograd).  Below, each comment works the first coordinate (p0 = 1); the second one
follows the same formulas with g = -4 at the start.  Numbers with many digits were carried with
50-digit decimal arithmetic and rounded to 17 significant digits; the first step of every rule
has a closed form, given in the comment, that can be checked on paper.

Hyperparameters not named in a case are the convention's defaults, so the values also pin down
where each library puts ε, its default ε, ρ/α and β, AdaGrad's initial accumulator and NAdam's
momentum schedule.  Tolerances are a few float64 (or float32) roundings, far below every ε
effect checked here in float64 (the smallest, torch AdaGrad's 5e-12, is ~5e-12 relative).
"""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.registry import REGISTRY

TOLERANCE = {torch.float64: 1e-13, torch.float32: 2e-6}

GOLDEN = [
    # --- gradient descent: p <- p - 0.1 * 2p = 0.8 p; both conventions.
    ("sgd", "torch", {"lr": 0.1}, [(0.8, -1.6), (0.64, -1.28), (0.512, -1.024)]),
    ("sgd", "keras", {"lr": 0.1}, [(0.8, -1.6), (0.64, -1.28), (0.512, -1.024)]),
    # L2 weight decay 0.5 adds 0.5 p to g: p <- p - 0.1 (2p + 0.5p) = 0.75 p.
    (
        "sgd",
        "torch",
        {"lr": 0.1, "weight_decay": 0.5},
        [(0.75, -1.5), (0.5625, -1.125), (0.421875, -0.84375)],
    ),
    # maximize climbs: p <- p + 0.1 * 2p = 1.2 p.
    ("sgd", "torch", {"lr": 0.1, "maximize": True}, [(1.2, -2.4), (1.44, -2.88), (1.728, -3.456)]),
    # --- Momentum, mu = 0.9 (default), lr 0.1.  torch: b1 = g1 = 2, p1 = 1 - 0.2 = 0.8;
    # g2 = 1.6, b2 = 0.9*2 + 1.6 = 3.4, p2 = 0.8 - 0.34 = 0.46;
    # g3 = 0.92, b3 = 0.9*3.4 + 0.92 = 3.98, p3 = 0.46 - 0.398 = 0.062.  Linear: p[1] = -2 p[0].
    ("momentum", "torch", {"lr": 0.1}, [(0.8, -1.6), (0.46, -0.92), (0.062, -0.124)]),
    # Keras: v = 0.9 v - 0.1 g, p <- p + v: v1 = -0.2, v2 = -0.18 - 0.16 = -0.34,
    # v3 = -0.306 - 0.092 = -0.398 = -lr * b_t: the same trajectory at a constant lr.
    ("momentum", "keras", {"lr": 0.1}, [(0.8, -1.6), (0.46, -0.92), (0.062, -0.124)]),
    # --- NAG.  torch: d = g + mu b.  b1 = 2, d1 = 2 + 1.8 = 3.8, p1 = 0.62;
    # g2 = 1.24, b2 = 1.8 + 1.24 = 3.04, d2 = 1.24 + 2.736 = 3.976, p2 = 0.2224;
    # g3 = 0.4448, b3 = 2.736 + 0.4448 = 3.1808, d3 = 0.4448 + 2.86272, p3 = -0.108352.
    ("nag", "torch", {"lr": 0.1}, [(0.62, -1.24), (0.2224, -0.4448), (-0.108352, 0.216704)]),
    # Keras: v = 0.9 v - 0.1 g, p <- p + 0.9 v - 0.1 g: v1 = -0.2, p1 = 1 - 0.18 - 0.2 = 0.62;
    # v2 = -0.18 - 0.124 = -0.304, p2 = 0.62 - 0.2736 - 0.124 = 0.2224; the same trajectory.
    ("nag", "keras", {"lr": 0.1}, [(0.62, -1.24), (0.2224, -0.4448), (-0.108352, 0.216704)]),
    # --- AdaGrad, lr 0.1.  torch (s0 = 0, eps 1e-10 outside the root): first step
    # lr g / (|g| + eps): p1 = 1 - 0.2 / (2 + 1e-10) = 0.9 + 5e-12, p1[1] = -1.9 - 2.5e-12;
    # s2 = 4 + 1.8^2 = 7.24, p2 = 0.9 - 0.18 / sqrt(7.24) = 0.8331035...; s3 = 10.01624...
    (
        "adagrad",
        "torch",
        {"lr": 0.1},
        [
            (0.90000000000500000, -1.9000000000025000),
            (0.83310352684503589, -1.8311250538122314),
            (0.78045618135680982, -1.7758215150130631),
        ],
    ),
    # Keras (s0 = 0.1, eps 1e-7 inside the root): p1 = 1 - 0.2 / sqrt(4.1 + 1e-7)
    # = 1 - 0.0987729585 = 0.9012270415; g2 = 1.80245408, s2 = 7.3488407; s3 = 10.135986.
    (
        "adagrad",
        "keras",
        {"lr": 0.1},
        [
            (0.90122704153958931, -1.9003110430537477),
            (0.83473727779903588, -1.8315430176398596),
            (0.78229919548684916, -1.7762966389287440),
        ],
    ),
    # --- RMSProp, lr 0.01.  torch (alpha 0.99, eps 1e-8 outside): v1 = 0.01 g^2, first step
    # lr g / (sqrt(1 - alpha) |g| + eps) = 0.01 * 2 / (0.2 + 1e-8): p1 = 0.9 + 5e-9;
    # v2 = 0.99 * 0.04 + 0.01 * 1.8^2 = 0.072, p2 = p1 - 0.018 / sqrt(0.072); v3 = 0.0990301.
    (
        "rmsprop",
        "torch",
        {"lr": 0.01},
        [
            (0.90000000499999975, -1.9000000024999999),
            (0.83291796797003308, -1.8309433291098638),
            (0.77998227324363502, -1.7753494456014601),
        ],
    ),
    # Keras (alpha = rho 0.9, eps 1e-7 inside): v1 = 0.1 * 4 = 0.4,
    # p1 = 1 - 0.02 / sqrt(0.4 + 1e-7) = 1 - 0.0316227727 = 0.9683772273;
    # g2 = 1.93675445, v2 = 0.36 + 0.1 g2^2 = 0.7351018; v3 = 1.0193976.
    (
        "rmsprop",
        "keras",
        {"lr": 0.01},
        [
            (0.96837722735116254, -1.9683772243865279),
            (0.94578803017450264, -1.9456096380352628),
            (0.92705310410336432, -1.9266336834807259),
        ],
    ),
    # --- AdaDelta, lr 1 (the paper's).  torch (rho 0.9, eps 1e-6): v1 = 0.1 * 4 = 0.4,
    # delta1 = sqrt(0 + 1e-6) / sqrt(0.4 + 1e-6) * 2 = 0.0031622737, p1 = 0.9968377263;
    # u1 = 0.1 delta1^2 = 9.99997e-7; v2 = 0.7574742, u2 = 1.949467e-6; v3 = 1.0766217.
    (
        "adadelta",
        "torch",
        {"lr": 1.0},
        [
            (0.99683772629267128, -1.9968377233280429),
            (0.99359817407830563, -1.9935957289299030),
            (0.99030904565805804, -1.9903007524197170),
        ],
    ),
    # Keras (rho 0.95, eps 1e-7): v1 = 0.05 * 4 = 0.2,
    # delta1 = sqrt(1e-7) / sqrt(0.2 + 1e-7) * 2 = 0.0014142132, p1 = 0.9985857868;
    # u1 = 0.05 delta1^2 = 9.999995e-8; v2 = 0.3894347, u2 = 1.974226e-7; v3 = 0.5688264.
    (
        "adadelta",
        "keras",
        {"lr": 1.0},
        [
            (0.99858578679118016, -1.9985857865260152),
            (0.99715454525146692, -1.9971540505228805),
            (0.99571246472238496, -1.9957108012187816),
        ],
    ),
    # --- Adam, lr 0.1, betas (0.9, 0.999).  First step: m1 = 0.1 g, v1 = 0.001 g^2, so the
    # bias-corrected m_hat / sqrt(v_hat) = sign(g): p moves by lr up to eps.
    # torch (eps 1e-8 on the corrected root): p1 = 1 - 0.1 * 2 / (2 + 1e-8) = 0.9 + 5e-10;
    # m2 = 0.36, v2 = 0.007236, p2 = p1 - 0.1/0.19 * 0.36 / (sqrt(0.007236/0.001999) + 1e-8).
    (
        "adam",
        "torch",
        {"lr": 0.1},
        [
            (0.90000000050000000, -1.9000000002500000),
            (0.80041222869179215, -1.8001664861157004),
            (0.70158627294602955, -1.7006233920464645),
        ],
    ),
    # Keras (eps-hat 1e-7 on the raw root): alpha1 = 0.1 sqrt(0.001) / 0.1 = 0.0316227766,
    # p1 = 1 - alpha1 * 0.2 / (sqrt(0.004) + 1e-7) = 1 - 0.1 * 0.0632456 / 0.0632457
    # = 0.9 + 1.58e-7: eps-hat = eps / sqrt(1 - beta2) acts 316 times more than torch's eps.
    (
        "adam",
        "keras",
        {"lr": 0.1},
        [
            (0.90000015811363301, -1.9000000790568790),
            (0.80041250194377462, -1.8001666217414725),
            (0.70158664312671618, -1.7006235748250945),
        ],
    ),
    # AdamW (decoupled weight decay 0.5): p <- p (1 - 0.1 * 0.5) first, then Adam with the
    # gradient taken before the shrink: p1 = 0.95 - 0.1 * 2 / (2 + 1e-8) = 0.85 + 5e-10.
    (
        "adam",
        "torch",
        {"lr": 0.1, "weight_decay": 0.5, "decoupled_weight_decay": True},
        [
            (0.85000000050000000, -1.8000000002500000),
            (0.70824844335974468, -1.6104122281697421),
            (0.57497393074159612, -1.4310252436661582),
        ],
    ),
    # --- AdaMax, lr 0.1, betas (0.9, 0.999).  torch (u = max(beta2 u, |g| + eps)):
    # u1 = 2 + 1e-8, p1 = 1 - 0.1/0.1 * 0.2 / (2 + 1e-8) = 0.9 + 5e-10;
    # g2 = 1.8, m2 = 0.36, u2 = max(0.999 u1, 1.8) = 1.99800001, p2 = p1 - 0.1/0.19 * 0.36/u2.
    (
        "adamax",
        "torch",
        {"lr": 0.1},
        [
            (0.90000000050000000, -1.9000000002500000),
            (0.80516832716877403, -1.8025341135475080),
            (0.71549947339232833, -1.7076482355530212),
        ],
    ),
    # Keras (u = max(beta2 u, |g|), eps added after): u1 = 2,
    # p1 = 1 - 0.1 * 0.2 / (0.1 * (2 + 1e-7)) = 0.9 + 5e-9; u2 = 1.998, u3 = 1.996002.
    (
        "adamax",
        "keras",
        {"lr": 0.1},
        [
            (0.90000000499999975, -1.9000000024999999),
            (0.80516833570386604, -1.8025341179336597),
            (0.71549948550617422, -1.7076482419603326),
        ],
    ),
    # --- NAdam, lr 0.1, betas (0.9, 0.999); mu_t = 0.9 (1 - 0.5 * 0.96^(t psi)).
    # Step 1: v_hat1 = g^2, m1 = 0.1 g, and
    # p1 = p0 - lr (mu2 m1 / (1 - mu1 mu2) + (1 - mu1) g / (1 - mu1)) / (|g| + eps).
    # torch psi = 0.004: mu1 = 0.450073474, mu2 = 0.450146935,
    # p1 = 1 - 0.1 (0.090029387 / 0.797400805 + 2) / (2 + 1e-8) = 0.8943548227.
    (
        "nadam",
        "torch",
        {"lr": 0.1},
        [
            (0.89435482269268706, -1.8943548224285741),
            (0.81997307063291893, -1.8178975308053852),
            (0.75272926638057080, -1.7475085012701725),
        ],
    ),
    # Keras psi = 1 (0.96^t hard-coded): mu1 = 0.9 * 0.52 = 0.468, mu2 = 0.9 * 0.5392 = 0.48528,
    # mu3 = 0.9 * 0.557632 = 0.5018688; m_hat1 = 0.097056 / (1 - 0.22711104) + 2 = 2.1255756,
    # p1 = 1 - 0.1 * 2.1255756 / (2 + 1e-7) = 0.8937212250.
    (
        "nadam",
        "keras",
        {"lr": 0.1},
        [
            (0.89372122498306173, -1.8937212223260924),
            (0.82024503837839480, -1.8182224606417752),
            (0.75467428170447220, -1.7497213259928009),
        ],
    ),
]


def _case_id(name: str, convention: str, options: dict) -> str:
    extra = [k for k in options if k != "lr"]
    return "-".join([name, convention, *extra])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    ("name", "convention", "options", "expected"),
    [pytest.param(*case, id=_case_id(*case[:3])) for case in GOLDEN],
)
def test_three_steps_match_hand_computed_values(
    name: str,
    convention: str,
    options: dict,
    expected: list[tuple[float, float]],
    dtype: torch.dtype,
) -> None:
    param = torch.tensor([1.0, -2.0], dtype=dtype, requires_grad=True)
    optimizer = REGISTRY[name].cls([param], convention=convention, **options)
    for step, values in enumerate(expected, start=1):
        param.grad = 2 * param.detach()  # d/dp sum(p^2)
        optimizer.step()
        want = torch.tensor(values, dtype=torch.float64)
        got = param.detach().double()
        error = float(((got - want).abs() / want.abs()).max())
        assert error <= TOLERANCE[dtype], f"step {step}: got {got.tolist()}, want {values}"


def test_the_nine_classic_optimizers_have_golden_values_under_both_conventions() -> None:
    # The nine; a later optimizer is welcome here but not required by this test.
    nine = ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam", "adamax", "nadam")
    covered = {(name, convention) for name, convention, _, _ in GOLDEN}
    assert covered >= {(n, c) for n in nine for c in ("torch", "keras")}


def test_golden_values_tell_the_conventions_apart() -> None:
    """Where the conventions differ in ε placement, the tolerance must be able to see it."""
    first_steps = {(n, c): values[0] for n, c, options, values in GOLDEN if set(options) == {"lr"}}
    for name in ("adagrad", "rmsprop", "adam", "adamax", "nadam"):
        torch_p1, keras_p1 = first_steps[name, "torch"], first_steps[name, "keras"]
        gap = abs(torch_p1[0] - keras_p1[0]) / abs(keras_p1[0])
        assert gap > 100 * TOLERANCE[torch.float64], name
