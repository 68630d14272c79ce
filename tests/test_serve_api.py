"""The JSON API of `optimlab serve`, through FastAPI's test client: every endpoint, every class of
bad input (422 with the CLI's message), the caps, the file root (404 outside it), the read-only
store, and a registry entry added at run time appearing with no front-end edit."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from optimlab.cli import main
from optimlab.lab.store import DB_NAME, ResultStore
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.landscapes import get_function, run_landscape
from optimlab.optim.registry import REGISTRY, OptimizerInfo, list_optimizers
from optimlab.serve import files, landscape
from optimlab.serve.app import create_app

ROOT = Path(__file__).resolve().parents[1]


def _curve(scale: float) -> dict:
    return {"step": [0, 5, 10], "train_loss": [scale, scale / 2, scale / 4], "val_loss": [1, 1, 1],
            "val_accuracy": [0.1, 0.2, 0.3]}  # fmt: skip


def store_trial(
    directory: Path, optimizer: str, seed: int, scale: float = 1.0, steps: int = 10
) -> None:
    spec = TrialSpec("quadratic", optimizer, {"lr": 0.1}, seed=seed, steps=steps, evals=2,
                     problem_label="quad")  # fmt: skip
    metrics = {"curve": _curve(scale), "final_train_loss": scale / 4, "test_accuracy": None}
    ResultStore(directory).put(spec, TrialResult("ok", metrics))


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    store_trial(results / "cmp", "sgd", 0, 1.0)
    store_trial(results / "cmp", "sgd", 1, 3.0)
    store_trial(results / "cmp", "adam", 0, 2.0)
    (results / "cmp" / "summary.json").write_text(json.dumps({"recommendation": "adam"}))
    diagnosis = results / "diag"
    diagnosis.mkdir()
    # the layout optimlab.diagnose.run writes (the problem under "meta"; a fixture with a
    # top-level "problem" hid that the API answered null for every real diagnosis)
    meta = {"problem": "quadratic:dim=2", "problem_label": "quadratic", "optimizer": "adam"}
    (diagnosis / "diagnosis.json").write_text(json.dumps({"lr": {}, "meta": meta}))
    (diagnosis / "index.html").write_text("<html>diagnosis</html>")
    return results


@pytest.fixture()
def client(root: Path) -> TestClient:
    return TestClient(create_app(root))


# ---- the playground ------------------------------------------------------------------------
def test_landscape_matches_the_python_api(client: TestClient) -> None:
    body = {"function": "quadratic:condition=50:angle=20", "optimizers": "sgd:lr=0.03,adam:lr=0.1",
            "steps": 40, "start": [1.5, -2], "noise": 0.3, "seed": 4}  # fmt: skip
    answer = client.post("/api/landscape", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    # the server runs the fused kernels (impl="auto"): the Python API's numbers with the same
    # choice bit for bit, and the CLI's (the reference rules) within rounding
    direct, reference = (
        run_landscape(get_function("quadratic", condition=50, angle=20),
                      "sgd:lr=0.03,adam:lr=0.1", steps=40, starts=[(1.5, -2)], noise=0.3,
                      seeds=(4,), impl=impl)
        for impl in ("auto", "reference")
    )  # fmt: skip
    assert [r["label"] for r in data["runs"]] == [r.label for r in direct.runs]
    for got, run, slow in zip(data["runs"], direct.runs, reference.runs):
        np.testing.assert_array_equal(got["x"], run.path[:, 0])
        np.testing.assert_array_equal(got["y"], run.path[:, 1])
        np.testing.assert_array_equal(got["loss"], run.losses)
        assert got["status"] == run.metrics["status"]
        np.testing.assert_allclose(run.path, slow.path, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(run.losses, slow.losses, rtol=1e-12, atol=1e-14)
    assert data["function"]["options"] == {"condition": 50, "angle": 20}
    assert data["impl"] == "auto"


def test_the_server_loads_its_kernels_in_the_background_at_startup(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmed = threading.Event()
    monkeypatch.setattr(landscape, "warm_up", warmed.set)
    assert not warmed.is_set()
    with TestClient(create_app(root)):  # the context runs the app's startup
        assert warmed.wait(10)
    # and the warm-up itself: every registered optimizer, the way requests run them
    monkeypatch.undo()
    landscape.warm_up()


def test_landscape_statuses_tell_diverged_from_left(client: TestClient) -> None:
    # ravine x²/20 + y²: lr 1.2 > 2/λmax = 1 diverges; the saddle's escape leaves the box
    diverged = client.post("/api/landscape", json={"function": "ravine", "optimizers": "sgd:lr=1.2",
                                                   "steps": 300}).json()  # fmt: skip
    assert diverged["runs"][0]["status"] == "diverged"
    left = client.post("/api/landscape", json={"function": "saddle", "optimizers": "sgd:lr=0.1",
                                               "steps": 200}).json()  # fmt: skip
    assert left["runs"][0]["status"] == "left"


def test_landscape_theory_on_quadratics(client: TestClient) -> None:
    data = client.post("/api/landscape", json={"function": "ravine", "optimizers": "adam:lr=0.3",
                                               "steps": 100, "theory": True}).json()  # fmt: skip
    # ravine: λ = 0.1 and 2, so GD's best rate is 2/(λmin+λmax) = 2/2.1
    assert data["theory"]["gd_lr"] == pytest.approx(2 / 2.1)
    assert len(data["runs"]) == 3
    roles = [row["role"] for row in data["theory"]["runs"]]
    assert roles[0] == "yours" and roles[1].startswith("theory")


def test_surface_is_f_on_the_grid(client: TestClient) -> None:
    data = client.get("/api/surface", params={"function": "himmelblau", "points": 7}).json()
    land = get_function("himmelblau")
    assert len(data["x"]) == 7 and len(data["z"]) == 7
    assert data["z"][2][5] == pytest.approx(land.value(data["x"][5], data["y"][2]))


def test_registry_lists_every_optimizer_with_defaults_and_ranges(client: TestClient) -> None:
    data = client.get("/api/registry").json()
    assert [o["name"] for o in data] == list_optimizers()
    adam = {h["name"]: h for h in data[list_optimizers().index("adam")]["hyperparameters"]}
    assert adam["lr"]["default"] == 1e-3 and adam["lr"]["slider"]["log"] is True
    assert adam["eps"]["range"]["low_closed"] is False
    assert adam["betas"]["kind"] == "pair" and adam["betas"]["default"] == [0.9, 0.999]
    assert adam["amsgrad"]["kind"] == "flag"
    rmsprop = {h["name"]: h for h in data[list_optimizers().index("rmsprop")]["hyperparameters"]}
    assert rmsprop["alpha"]["range"]["high"] == 1.0


def test_a_newly_registered_optimizer_appears_and_runs(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimlab.optim.sgd import SGD

    class Slow(SGD):
        name = "slow"

    info = OptimizerInfo("slow", Slow, "Slow GD", "none", "θ ← θ − η·g", "SGD", "SGD")
    monkeypatch.setitem(REGISTRY, "slow", info)
    names = [o["name"] for o in client.get("/api/registry").json()]
    assert names[-1] == "slow"
    answer = client.post("/api/landscape", json={"function": "ravine", "optimizers": "slow:lr=0.5",
                                                 "steps": 5})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["runs"][0]["optimizer"] == "slow"


def test_functions_and_scenarios(client: TestClient) -> None:
    functions = client.get("/api/functions").json()
    assert functions[1]["name"] == "quadratic" and functions[1]["takes_options"] == [
        "angle",
        "condition",
    ]
    scenarios = client.get("/api/scenarios").json()
    assert scenarios[0]["name"] == "ravine" and len(scenarios[0]["explanation"]) == 2
    outcome = client.get("/api/scenarios/ravine").json()
    assert outcome["checks"] and all(check["holds"] for check in outcome["checks"])


# ---- bad input: 422 with the CLI's message ---------------------------------------------------
def cli_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return " ".join(capsys.readouterr().err.replace("│", " ").split())


BAD = [
    ({"function": "nope", "optimizers": "sgd"}, "function", ["landscape", "nope"]),
    ({"function": "quadratic:size=3", "optimizers": "sgd"}, "function",
     ["landscape", "quadratic:size=3"]),
    ({"function": "ravine", "optimizers": "sgdd"}, "optimizers",
     ["landscape", "ravine", "--optimizers", "sgdd"]),
    ({"function": "ravine", "optimizers": "adam:foo=1"}, "optimizers",
     ["landscape", "ravine", "--optimizers", "adam:foo=1"]),
    ({"function": "ravine", "optimizers": "sgd:lr=-1"}, "optimizers",
     ["landscape", "ravine", "--optimizers", "sgd:lr=-1"]),
    ({"function": "ravine", "optimizers": "adam:betas=0.9/1.5"}, "optimizers",
     ["landscape", "ravine", "--optimizers", "adam:betas=0.9/1.5"]),
    ({"function": "ravine", "optimizers": "sgd", "start": [500, 0]}, "start",
     ["landscape", "ravine", "--start=500,0"]),
    ({"function": "rosenbrock", "optimizers": "sgd", "theory": True}, "theory",
     ["landscape", "rosenbrock", "--theory"]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field", "argv"), BAD)
def test_bad_input_is_422_with_the_cli_message(
    client: TestClient, capsys: pytest.CaptureFixture[str], body: dict, field: str, argv: list[str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    answer = client.post("/api/landscape", json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == field
    assert answer.json()["detail"] in cli_message(argv, capsys)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"function": "ravine", "optimizers": "sgd", "steps": 0}, "steps", "integer in [1, 5000]"),
        ({"function": "ravine", "optimizers": "sgd", "steps": "9"}, "steps", "integer"),
        # the server's cap, not the CLI's 1e6 (a newcomer was told [1, 1000000])
        ({"function": "ravine", "optimizers": "sgd", "steps": "ten"}, "steps", "in [1, 5000]"),
        ({"function": "ravine", "optimizers": "sgd", "noise": -1}, "noise", "≥ 0"),
        ({"function": "ravine", "optimizers": "sgd", "start": [1]}, "start", "two finite numbers"),
        ({"function": "ravine", "optimizers": "sgd", "seed": -3}, "seed", "seed must be"),
        ({"function": "ravine", "optimizers": "sgd", "theory": "yes"}, "theory", "true or false"),
        ({"function": "ravine", "optimizers": 3}, "optimizers", "spec string"),
        ({"function": "ravine", "optimizers": "sgd", "file": "x.py"}, "file", "unknown field"),
        ({"function": "lion.py:Lion", "optimizers": "sgd"}, "function", "valid functions"),
        ({"function": "ravine,saddle", "optimizers": "sgd"}, "function", "2 functions given, one"),
        (
            {"function": "quadratic:condition=0", "optimizers": "sgd"},
            "function",
            "must be a number ≥ 1",
        ),
        ({"function": "ravine", "optimizers": "lion.py"}, "optimizers", "only registered"),
        # a class of the user's read as a registered name with a bad option 'Lion' before
        ({"function": "ravine", "optimizers": "lion.py:Lion"}, "optimizers", "only registered"),
    ],
)
def test_each_bad_field_is_named(client: TestClient, body: dict, field: str, words: str) -> None:
    answer = client.post("/api/landscape", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and words in answer.json()["detail"]


def test_without_the_serve_extra_the_command_says_what_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` raises ImportError
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "uvicorn is missing" in err and "optimlab[serve]" in err


def test_bad_bodies(client: TestClient) -> None:
    for content in (b"not json", b"[1, 2]", b'{"function": NaN}'):
        answer = client.post("/api/landscape", content=content,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 422 and answer.json()["field"] == "body", content


def test_caps_answer_422(client: TestClient) -> None:
    over = client.post("/api/landscape", json={"function": "ravine", "optimizers": "sgd",
                                               "steps": landscape.MAX_STEPS + 1})  # fmt: skip
    assert (
        over.status_code == 422 and f"at most {landscape.MAX_STEPS} steps" in over.json()["detail"]
    )
    many = ",".join(["sgd"] * (landscape.MAX_TRAJECTORIES - 1))
    ok = client.post("/api/landscape", json={"function": "ravine", "optimizers": many, "steps": 2})
    assert ok.status_code == 200
    # 15 optimizers + the two theory runs = 17 > 16
    theory = client.post("/api/landscape", json={"function": "ravine", "optimizers": many,
                                                 "steps": 2, "theory": True})  # fmt: skip
    assert theory.status_code == 422 and "at most 16" in theory.json()["detail"]
    grid = client.get(
        "/api/surface", params={"function": "ravine", "points": landscape.MAX_GRID + 1}
    )
    assert grid.status_code == 422 and grid.json()["field"] == "points"
    assert (
        client.get("/api/surface", params={"function": "ravine", "points": "x"}).status_code == 422
    )
    assert client.get("/api/scenarios/nope").status_code == 422
    # a misspelt parameter used to be ignored: the default function's surface came back
    typo = client.get("/api/surface", params={"functon": "himmelblau"})
    assert typo.status_code == 422 and typo.json()["field"] == "functon"
    assert "valid parameters: function, points" in typo.json()["detail"]
    since = client.get("/api/run/trials", params={"path": "cmp", "sinse": "0"})
    assert since.status_code == 422 and "valid parameters: path, since" in since.json()["detail"]


# ---- comparisons, diagnoses and files -------------------------------------------------------
def test_runs_listing_summary_trials_and_curves(client: TestClient, root: Path) -> None:
    runs = client.get("/api/runs").json()
    assert runs == [{"path": "cmp", "trials": 3, "last_trial_at": runs[0]["last_trial_at"],
                     "finished": True, "report": False}]  # fmt: skip
    run = client.get("/api/run", params={"path": "cmp"}).json()
    assert run["summary"] == {"recommendation": "adam"} and run["count"] == 3
    trials = client.get("/api/run/trials", params={"path": "cmp"}).json()
    assert trials["count"] == 3 and {t["optimizer"] for t in trials["trials"]} == {"sgd", "adam"}
    newest = max(t["finished_at"] for t in trials["trials"])
    assert (
        client.get("/api/run/trials", params={"path": "cmp", "since": newest}).json()["trials"]
        == []
    )
    store_trial(root / "cmp", "adam", 1, 4.0)
    fresh = client.get("/api/run/trials", params={"path": "cmp", "since": newest}).json()
    assert [t["seed"] for t in fresh["trials"]] == [1] and fresh["count"] == 4
    curves = client.get("/api/run/curves", params={"path": "cmp"}).json()
    sgd = next(s for s in curves["quad"] if s["label"].startswith("sgd"))
    # seeds with train losses 1, 1/2, 1/4 and 3, 3/2, 3/4: mean 2, 1, 1/2; band min…max
    assert sgd["seeds"] == 2 and sgd["mean"] == [2.0, 1.0, 0.5]
    assert sgd["low"] == [1.0, 0.5, 0.25] and sgd["high"] == [3.0, 1.5, 0.75]
    # another comparison in the same directory, 20 steps of the same rate: its own series (it
    # was averaged into the 10-step one)
    store_trial(root / "cmp", "sgd", 0, 8.0, steps=20)
    labels = [
        s["label"] for s in client.get("/api/run/curves", params={"path": "cmp"}).json()["quad"]
    ]
    assert labels == ["adam (lr 0.1)", "sgd (lr 0.1, 10 steps)", "sgd (lr 0.1, 20 steps)"]
    series = client.get("/api/run/curves", params={"path": "cmp"}).json()["quad"]
    assert series[1]["seeds"] == 2 and series[2]["seeds"] == 1 and series[2]["mean"][0] == 8.0


def test_diagnoses_listed_and_served(client: TestClient) -> None:
    assert client.get("/api/diagnoses").json() == [
        {"path": "diag", "problem": "quadratic", "page": "diag/index.html"}
    ]
    assert client.get("/files/diag/index.html").text == "<html>diagnosis</html>"


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "cmp/../../secret.txt", "%2e%2e/secret.txt", "..%2Fsecret.txt",
     "/etc/passwd", "%2Fetc%2Fpasswd", "link/secret.txt", "filelink", "missing.html",
     "cmp/..\\..\\secret.txt"],
)  # fmt: skip
def test_files_outside_the_root_are_404(client: TestClient, root: Path, path: str) -> None:
    secret = root.parent / "secret.txt"
    secret.write_text("secret")
    (root / "link").symlink_to(root.parent, target_is_directory=True)
    (root / "filelink").symlink_to(secret)
    answer = client.get(f"/files/{path}")
    assert answer.status_code == 404 and "secret" not in answer.text


def test_run_paths_outside_the_root_are_404(client: TestClient, root: Path) -> None:
    outside = root.parent / "other"
    store_trial(outside, "sgd", 0)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    for path in ("../other", str(outside), "escape", "diag", "nope"):
        for endpoint in ("/api/run", "/api/run/trials", "/api/run/curves"):
            assert client.get(endpoint, params={"path": path}).status_code == 404, (endpoint, path)
    assert [r["path"] for r in client.get("/api/runs").json()] == ["cmp"]  # the link not followed


def test_the_store_is_opened_read_only(root: Path) -> None:
    directory = root / "cmp"
    connection = files.connect_read_only(directory / DB_NAME)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        connection.execute("DELETE FROM trials")
    connection.close()
    assert files.DB_NAME == DB_NAME


def test_a_writer_is_never_locked_out_by_a_reader(root: Path) -> None:
    directory = root / "cmp"
    connection = files.connect_read_only(directory / DB_NAME)
    connection.execute("BEGIN")  # a reader holding a read transaction open
    assert connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 3
    store_trial(directory, "nadam", 0)  # the compare process writes meanwhile
    connection.close()
    assert len(files.read_trials(directory)) == 4


def test_pages_and_vendored_plotly(client: TestClient) -> None:
    for page in ("/", "/runs", "/run?path=cmp"):
        answer = client.get(page)
        assert answer.status_code == 200 and "<html" in answer.text
        assert "http://" not in answer.text and "https://" not in answer.text  # no CDN
    plotly = client.get("/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000


# ---- the command ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code",
    ["import optimlab.cli.serve", "from optimlab.cli.serve import command, is_exposed"],
)  # fmt: skip
def test_cli_serve_imports_nothing_heavy(code: str) -> None:
    heavy = ["fastapi", "uvicorn", "starlette", "plotly", "torch", "numpy", "optimlab.serve",
             "optimlab.landscapes", "optimlab.lab"]  # fmt: skip
    probe = (
        f"import sys, json\n{code}\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    tree = ast.parse((ROOT / "optimlab" / "cli" / "serve.py").read_text())
    imports = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    # optimlab: only optimlab.cli._integers (typer alone), which the probe above would catch
    assert imports <= {"__future__", "contextlib", "ipaddress", "typer", "optimlab"}, imports


def test_cli_serve_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port: 70000; allowed: an integer in [0, 65535]" in capsys.readouterr().err
    assert main(["serve", "--port", "abc"]) == 2
    assert "--port: 'abc'; allowed: an integer in [0, 65535]" in capsys.readouterr().err
    afile = tmp_path / "f"
    afile.write_text("")
    assert main(["serve", "--results", str(afile)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_exposed_hosts_are_told_apart() -> None:
    from optimlab.cli.serve import is_exposed, url_of

    assert not any(map(is_exposed, ["127.0.0.1", "::1", "localhost", "127.0.0.2"]))
    assert all(map(is_exposed, ["0.0.0.0", "192.168.1.4", "::", "myhost"]))
    assert url_of("0.0.0.0", 8765) == "http://127.0.0.1:8765/"
    assert url_of("::1", 80) == "http://[::1]:80/"


def test_numbers_are_float64_torch_free_json(client: TestClient) -> None:
    data = client.post("/api/landscape", json={"function": "ravine", "optimizers": "sgd:lr=0.5",
                                               "steps": 3}).json()  # fmt: skip
    x0 = torch.tensor([[-7.0, 2.0]], dtype=torch.float64)
    assert data["runs"][0]["loss"][0] == pytest.approx(float(get_function("ravine")(x0)[0]))
    assert os.environ.get("OPTIMLAB_NO_SUCH") is None
