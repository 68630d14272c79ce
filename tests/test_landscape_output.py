"""Pictures and files: the JSON schema, readable PNG/SVG/GIF, no pyplot, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

from optimlab.landscapes.experiment import run_landscape
from optimlab.landscapes.output import FILES, write_outputs


@pytest.fixture(scope="module")
def result():
    return run_landscape("ravine", "sgd:lr=0.95,adam:lr=0.3,sgd:lr=1.2", steps=30, starts=[(-7, 2)])


@pytest.mark.slow  # writes every picture (PNG, SVG, GIF): a few seconds
def test_files_and_json_schema(result, tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    paths = write_outputs(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)  # no temp files
    data = json.loads(paths["trajectories.json"].read_text())
    assert data["function"] == "ravine"
    assert [run["optimizer"] for run in data["runs"]] == ["sgd", "adam", "sgd"]
    for run, source in zip(data["runs"], result.runs):
        assert run["path"][0] == [-7.0, 2.0, pytest.approx(49 / 20 + 4)]  # start first
        assert len(run["path"]) == len(source.path)
        assert run["hyperparameters"]["lr"] == source.hyperparameters["lr"]
        assert set(run["metrics"]) >= {"final_loss", "distance_to_min", "steps_to_eps",
                                       "diverged", "zigzag", "minimum"}  # fmt: skip
    diverged = data["runs"][2]
    assert diverged["metrics"]["diverged"] is True and diverged["metrics"]["final_loss"] is None
    png = Image.open(paths["landscape.png"])
    assert png.size[0] > 400 and png.size[1] > 300
    assert Image.open(paths["loss.png"]).size[0] > 300
    gif = Image.open(paths["landscape.gif"])
    assert gif.n_frames > 10
    assert paths["landscape.svg"].read_text()[:200].lstrip().startswith("<?xml")
    assert matplotlib.get_backend() == backend  # the plots never switch the user's backend


def test_figures_from_python_have_a_legend_per_optimizer(result) -> None:
    from optimlab.landscapes.plots import figures as make_figures

    figures = make_figures(result)
    contour, loss = figures["landscape"], figures["loss"]
    legend = [t.get_text() for t in contour.axes[0].get_legend().get_texts()]
    assert legend[:3] == ["sgd:lr=0.95", "adam:lr=0.3", "sgd:lr=1.2 — diverged"]
    assert {"start", "end", "global minimum"} <= set(legend)
    assert "diverged (f non-finite or ×1e6)" in legend
    assert loss.axes[0].get_yscale() == "log"
