"""Issue 11 (landscape part): output paths checked first, null for non-finite numbers, starts
checked against the box, diverged vs left the plot, readable pictures, folder names, the theory
beside the practice, the one-way data flow and the registry as the default set."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from optimlab.cli import main
from optimlab.landscapes import run_landscape
from optimlab.landscapes.functions import get_function, list_functions
from optimlab.landscapes.output import write_json
from optimlab.landscapes.scenarios import list_scenarios, run_scenario
from optimlab.optim.registry import list_optimizers

ROOT = Path(__file__).resolve().parents[1]


# -- 1. output paths, non-finite numbers, starts ------------------------------------------------
@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda tmp: tmp / "afile", "it exists and is a file"),
        (lambda tmp: tmp / "afile" / "sub", "is a file, not a directory"),
        (lambda tmp: Path("/proc/nope"), "'/proc' is not writable"),
    ],
)
def test_bad_out_exits_2_before_computing(
    make, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    (tmp_path / "afile").write_text("")
    out = make(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("the run started before the output path was checked")

    monkeypatch.setattr("optimlab.landscapes.experiment.run_landscape", never)
    assert main(["landscape", "ravine", "--steps", "5", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(out) in err and why in err, err
    assert (tmp_path / "afile").read_text() == ""


@pytest.mark.parametrize("start", ["1e200,0", "1e308,1e308", "500,0"])
def test_far_starts_are_refused_naming_the_box(
    start: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["landscape", "ravine", "--steps", "5", f"--start={start}",
                 "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the plotting box [-10, 10]×[-5, 5]" in err, err
    assert not (tmp_path / "x").exists()


def test_a_start_outside_the_box_but_near_is_run_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x"
    assert main(["landscape", "ravine", "--optimizers", "sgd:lr=0.1", "--steps", "5",
                 "--start=15,0", "--out", str(out)]) == 0  # fmt: skip
    printed = " ".join(capsys.readouterr().out.split())
    assert "outside the plotting box [-10, 10]×[-5, 5]" in printed
    data = json.loads((out / "trajectories.json").read_text())
    assert data["runs"][0]["path"][0][:2] == [15.0, 0.0]


def test_non_finite_numbers_are_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    write_json({"a": math.inf, "b": [1.0, -math.inf, math.nan], "c": np.float64("inf")}, path)
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None, None], "c": None}


def test_an_overflowing_run_writes_valid_json(tmp_path: Path) -> None:
    # lr 1e200 throws the point to ~1e201 after one step: the loss overflows to inf.
    result = run_landscape("ravine", "sgd:lr=1e200", steps=3, starts=[(-7, 2)])
    run = result.runs[0]
    assert run.metrics["status"] == "diverged" and run.metrics["diverged_step"] == 1
    text = json.dumps(result.to_json(), allow_nan=False)  # raises on inf / nan
    assert json.loads(text)["runs"][0]["metrics"]["final_loss"] is None


# -- 2. diverged vs left the plot ---------------------------------------------------------------
def test_saddle_momentum_escapes_and_is_not_called_diverged() -> None:
    outcome = run_scenario("saddle")
    momentum = next(r for r in outcome.result.runs if r.optimizer == "momentum")
    assert momentum.metrics["status"] == "left"
    assert momentum.metrics["diverged"] is False and momentum.metrics["diverged_step"] is None
    assert momentum.metrics["left_step"] is not None
    # still descending when it left: f below its start value all the way
    assert momentum.losses[-1] < momentum.losses[0]
    assert outcome.passed, outcome.checks


def test_loss_growth_is_divergence() -> None:
    # lr 0.21 > 2/λmax = 0.2 on the κ=10 quadratic: the loss grows 1.21× per step, a million-fold
    # before step 100; lr 0.19 converges.
    quad = get_function("quadratic", condition=10, angle=30)
    result = run_landscape(quad, "sgd:lr=0.21,sgd:lr=0.19", steps=100, starts=[(-4, 3)])
    bad, good = result.runs
    assert bad.metrics["status"] == "diverged" and bad.metrics["left_step"] is not None
    # the path stops before the first point whose loss passed f(θ_0) + 1e6·(f(θ_0) − f*)
    assert bad.metrics["diverged_step"] == len(bad.path)
    assert 1.21**-2 * 1e6 < bad.losses[-1] / bad.losses[0] <= 1e6 + 1
    assert good.metrics["status"] == "inside"


def test_left_runs_are_drawn_solid_with_an_edge_arrow() -> None:
    from matplotlib.text import Annotation

    from optimlab.landscapes.plots import contour_figure

    outcome = run_scenario("saddle")
    figure = contour_figure(outcome.result)
    axes = figure.axes[0]
    styles = {line.get_label(): line.get_linestyle() for line in axes.lines}
    assert "--" not in styles.values()  # nothing diverged, nothing dashed
    arrows = [a for a in axes.texts if isinstance(a, Annotation)]
    assert len(arrows) == 4  # each of the four runs leaves the plot, each gets its arrow
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert "momentum:lr=0.05 — left the plot" in legend
    assert not any("diverged" in text for text in legend)


# -- 3. readable pictures -----------------------------------------------------------------------
def test_legends_carry_the_lr_and_titles_the_noise_and_options() -> None:
    from optimlab.landscapes.plots import figures

    quad = get_function("quadratic", condition=100, angle=30)
    result = run_landscape(quad, "sgd:lr=0.1,sgd:lr=0.01,adam", steps=20, noise=0.5)
    contour = figures(result)["landscape"]
    legend = [t.get_text() for t in contour.axes[0].get_legend().get_texts()]
    assert legend[0].startswith("sgd:lr=0.1") and legend[1].startswith("sgd:lr=0.01")
    assert legend[2].startswith("adam (lr 0.001, default)")
    title = contour.axes[0].get_title()
    assert "noise σ=0.5" in title and "condition=100" in title and "angle=30" in title


@pytest.mark.slow  # renders a GIF
def test_gif_is_at_least_800_px_wide(tmp_path: Path) -> None:
    from PIL import Image

    from optimlab.landscapes.plots import save_animation

    result = run_landscape("ravine", "sgd:lr=0.95,adam:lr=0.3", steps=10, starts=[(-7, 2)])
    save_animation(result, tmp_path / "a.gif")
    assert Image.open(tmp_path / "a.gif").size[0] >= 800


def test_the_view_contains_the_tuned_rosenbrock_paths() -> None:
    from optimlab.landscapes.plots import VIEW_LIMIT, edge_exit, view_box

    result = run_landscape("rosenbrock", "adam:lr=1.58,adadelta:lr=15.8", steps=500)
    box = result.landscape.box
    assert any(  # the tuned paths leave the plotting box...
        not ((box[0] <= x <= box[1]) and (box[2] <= y <= box[3]))
        for run in result.runs
        for x, y in run.path
    )
    view = view_box(result)
    cx, cy = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2
    hx, hy = VIEW_LIMIT * (box[1] - box[0]) / 2, VIEW_LIMIT * (box[3] - box[2]) / 2
    limit = (cx - hx, cx + hx, cy - hy, cy + hy)
    for run in result.runs:  # ...and the view holds every point within its limit
        clipped = np.clip(run.path, [limit[0], limit[2]], [limit[1], limit[3]])
        assert (clipped[:, 0] >= view[0] - 1e-9).all() and (clipped[:, 0] <= view[1] + 1e-9).all()
        assert (clipped[:, 1] >= view[2] - 1e-9).all() and (clipped[:, 1] <= view[3] + 1e-9).all()
        assert run.metrics["status"] == "inside" and edge_exit(run.path, view) is None


def test_output_folders_carry_the_function_options() -> None:
    from optimlab.landscapes.output import default_directory

    plain = default_directory(get_function("quadratic"))
    conditioned = default_directory(get_function("quadratic", condition=100))
    assert plain != conditioned
    assert conditioned == "landscape-quadratic-condition=100-angle=30"
    assert default_directory(get_function("ravine")) == "landscape-ravine"


# -- 4. the theory beside the practice ----------------------------------------------------------
def test_closed_forms_of_the_ravine() -> None:
    from optimlab.landscapes.theory import quadratic_theory

    theory = quadratic_theory(get_function("ravine"))  # x²/20 + y²: λ = 0.1 and 2
    kappa = 20.0
    assert theory.lambda_min == pytest.approx(0.1) and theory.lambda_max == pytest.approx(2.0)
    assert theory.gd_lr == pytest.approx(2 / 2.1)
    assert theory.gd_rate == pytest.approx(19 / 21)
    assert theory.stability_limit == pytest.approx(1.0)
    assert theory.heavy_ball_lr == pytest.approx((2 / (math.sqrt(0.1) + math.sqrt(2))) ** 2)
    r = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    assert theory.heavy_ball_momentum == pytest.approx(r * r)
    assert theory.heavy_ball_rate == pytest.approx(r)
    assert theory.steps_to(theory.gd_rate) == pytest.approx(138.04, abs=0.01)
    assert theory.steps_to(theory.heavy_ball_rate) == pytest.approx(30.37, abs=0.01)


def test_heavy_ball_is_optimlab_momentum_with_lr_alpha_and_momentum_beta() -> None:
    # θ_{t+1} = θ_t − α∇f(θ_t) + β(θ_t − θ_{t−1}) by hand, against optimlab's Momentum.
    quad = get_function("quadratic", condition=7, angle=20)
    alpha, beta, steps = 0.2, 0.5, 40
    result = run_landscape(quad, f"momentum:lr={alpha}:momentum={beta}", steps=steps,
                           starts=[(-4, 3)])  # fmt: skip
    H = quad.hessian().numpy()
    previous = current = np.array([-4.0, 3.0])
    for t in range(steps):
        previous, current = current, current - alpha * H @ current + beta * (current - previous)
        assert np.allclose(result.runs[0].path[t + 1], current, atol=1e-12)


def test_predicted_rate_is_the_worst_eigen_direction() -> None:
    from optimlab.landscapes.theory import predicted_rate, quadratic_theory

    theory = quadratic_theory(get_function("ravine"))
    assert predicted_rate(theory, "sgd", {"lr": 0.5}) == pytest.approx(max(0.95, 0.0))
    assert predicted_rate(theory, "sgd", {"lr": 1.2}) == pytest.approx(1.4)  # past 2/λmax
    assert predicted_rate(theory, "adam", {"lr": 0.1}) is None


def test_optimal_momentum_scenario_measures_the_formulas_within_5_percent() -> None:
    outcome = run_scenario("optimal-momentum")
    theory = outcome.result.theory
    rows = {row["role"]: row for row in theory["runs"]}
    gd = rows["theory: gradient descent at 2/(λmin+λmax)"]
    hb = rows["theory: heavy ball at (α*, β*)"]
    assert theory["condition"] == pytest.approx(20)
    assert gd["achieved_rate"] == pytest.approx(19 / 21, rel=0.05)
    root = math.sqrt(20)
    assert hb["achieved_rate"] == pytest.approx((root - 1) / (root + 1), rel=0.05)
    assert 130 <= gd["steps_to_1e-6"] <= 145 and 25 <= hb["steps_to_1e-6"] <= 45
    assert outcome.passed, outcome.checks


@pytest.mark.slow  # writes every picture
def test_theory_flag_prints_predicted_vs_achieved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q"
    assert main(["landscape", "quadratic:condition=100", "--optimizers", "sgd:lr=0.01",
                 "--steps", "300", "--theory", "--out", str(out)]) == 0  # fmt: skip
    printed = " ".join(capsys.readouterr().out.split())
    assert "achieved" in printed and "heavy" in printed
    data = json.loads((out / "trajectories.json").read_text())
    labels = [row["label"] for row in data["theory"]["runs"]]
    assert labels[0] == "sgd:lr=0.01" and len(labels) == 3
    mine = data["theory"]["runs"][0]
    assert mine["predicted_rate"] == pytest.approx(0.99)  # 1 − 0.01·λmin, λmin = 1
    assert mine["achieved_rate"] == pytest.approx(0.99, rel=1e-6)


def test_theory_needs_a_quadratic(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["landscape", "rosenbrock", "--theory", "--out", str(tmp_path / "x")]) == 2
    assert "needs a quadratic surface" in " ".join(capsys.readouterr().err.split())


# -- 8. one-way data flow, the registry, the light CLI module ------------------------------------
def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_data_flows_one_way_no_module_imports_a_view() -> None:
    package = ROOT / "optimlab" / "landscapes"
    views = {"optimlab.landscapes.plots", "optimlab.landscapes.output"}
    for module in ("experiment", "results", "runner", "metrics", "tuning", "theory",
                   "scenarios", "functions"):  # fmt: skip
        imports = set()
        for node in ast.walk(ast.parse((package / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imports.add(node.module)
                imports |= {f"{node.module}.{alias.name}" for alias in node.names}
        assert not imports & views, f"{module} imports {imports & views}"


def test_cli_module_imports_nothing_heavy_and_help_lists_match() -> None:
    from optimlab.cli import landscape as cli
    from optimlab.landscapes.runner import MAX_STEPS

    imports = _top_level_imports(ROOT / "optimlab" / "cli" / "landscape.py")
    allowed = {"__future__", "math", "collections", "pathlib", "typing", "typer"}
    assert imports <= allowed | {"optimlab.cli._integers"}, imports  # _integers: typer alone
    assert ", ".join(list_functions()) == cli.FUNCTIONS_HELP
    assert ", ".join(list_scenarios()) == cli.SCENARIOS_HELP
    assert cli.MAX_STEPS == MAX_STEPS


def test_help_shows_flags_as_flags(capsys: pytest.CaptureFixture[str]) -> None:
    main(["landscape", "--help"])
    lines = capsys.readouterr().out.splitlines()
    for flag in ("--tune", "--theory", "--list"):
        line = next(line for line in lines if f"{flag} " in line)
        assert "<bool>" not in line, line


def test_the_default_set_is_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from optimlab.optim import registry

    result = run_landscape("ravine", steps=2)
    assert [run.optimizer for run in result.runs] == registry.preset_optimizers("classic")
    assert [run.optimizer for run in run_landscape("ravine", "all", steps=2).runs] == (
        list_optimizers()
    )
    # the lab reads the registry's declarations, not a copy of its names
    monkeypatch.setattr("optimlab.optim.registry.preset_optimizers", lambda preset: ["adam", "sgd"])
    assert [run.optimizer for run in run_landscape("ravine", steps=2).runs] == ["adam", "sgd"]


def test_python_api_refuses_far_starts_and_theory_off_quadratics() -> None:
    with pytest.raises(ValueError, match=r"plotting box \[-10, 10\]×\[-5, 5\] enlarged 10×"):
        run_landscape("ravine", "sgd", steps=2, starts=[(500, 0)])
    with pytest.raises(ValueError, match="needs a quadratic surface"):
        run_landscape("rosenbrock", "sgd", steps=2, theory=True)
