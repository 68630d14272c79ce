"""`optimlab serve` in a real browser: Debian's chromium driven by Playwright (as in CI).

The server runs in a thread of the test process (uvicorn on a free port).  Skipped, with the
reason, only when chromium or Playwright is absent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)", allow_module_level=True)

from optimlab.lab.store import ResultStore  # noqa: E402
from optimlab.lab.trial import TrialResult, TrialSpec  # noqa: E402
from optimlab.serve import files  # noqa: E402
from optimlab.serve.app import create_app  # noqa: E402


def store_trial(directory: Path, optimizer: str, seed: int) -> None:
    curve = {"step": [0, 5, 10], "train_loss": [1.0, 0.5, 0.25], "val_loss": [1, 1, 1],
             "val_accuracy": [0.1, 0.2, 0.3]}  # fmt: skip
    spec = TrialSpec("quadratic", optimizer, {"lr": 0.1}, seed=seed, steps=10, problem_label="q")
    ResultStore(directory).put(spec, TrialResult("ok", {"curve": curve, "final_train_loss": 0.25}))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    store_trial(root / "live", "sgd", 0)
    return root


@pytest.fixture(scope="module")
def server(results: Path) -> Iterator[str]:
    config = uvicorn.Config(create_app(results), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"]
        )
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: sync_api.Browser, server: str) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.outside = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    page.on(
        "request",
        lambda r: not r.url.startswith(server) and page.outside.append(r.url),  # type: ignore[attr-defined]
    )
    yield page
    context.close()


def ready(page: sync_api.Page) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)


def paths(page: sync_api.Page) -> list[list[float]]:
    """The trajectories drawn on the contour: x coordinates of every path trace."""
    return page.evaluate(
        "() => document.getElementById('contour').data.slice(3).map((t) => Array.from(t.x))"
    )


def test_playground_loads_clean_and_offline(page: sync_api.Page, server: str) -> None:
    page.goto(server + "/?f=ravine&o=sgd:lr=0.5,adam:lr=0.3&s=60")
    ready(page)
    assert page.errors == [] and page.outside == []  # type: ignore[attr-defined]
    drawn = paths(page)
    assert len(drawn) == 2 and all(len(x) == 61 for x in drawn)
    assert drawn[0][0] == -7.0  # ravine's default start
    assert page.inner_text("#error") == ""
    page.goto(server + "/?sc=ravine")  # a scenario opens as a lesson with its measured checks
    page.wait_for_selector("#lesson li.holds", state="visible", timeout=30_000)
    assert "Ravine" in page.inner_text("#lesson")
    for page_path in ("/runs", "/run?path=live"):
        page.goto(server + page_path)
        page.wait_for_load_state("networkidle")
    assert page.errors == [] and page.outside == []  # type: ignore[attr-defined]


def test_dragging_the_start_changes_the_trajectory(page: sync_api.Page, server: str) -> None:
    page.goto(server + "/?f=ravine&o=sgd:lr=0.5&s=40")
    ready(page)
    before = paths(page)[0]
    box = page.locator("#contour .nsewdrag").first.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.2, steps=4)
    page.mouse.up()
    page.wait_for_function(
        "(x0) => { const d = document.getElementById('contour').data; "
        "return d.length > 3 && d[3].x[0] !== x0; }",
        arg=before[0],
    )
    after = paths(page)[0]
    query = parse_qs(urlparse(page.url).query)
    # the box is [-10, 10]×[-5, 5]: 80% across is x = 6, 20% down is y = 3
    assert float(query["x"][0]) == pytest.approx(6, abs=0.6)
    assert float(query["y"][0]) == pytest.approx(3, abs=0.6)
    assert after[0] == pytest.approx(float(query["x"][0]))
    assert after != before


def test_a_slider_goes_into_the_url_and_a_reload_restores_the_view(
    page: sync_api.Page, server: str
) -> None:
    page.goto(server + "/?f=ravine&o=sgd:lr=0.1&s=50")
    ready(page)
    before = paths(page)
    slider = page.locator("#optimizers input[type=range][name=lr]").first
    slider.focus()
    for _ in range(40):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("() => !location.search.includes('sgd:lr=0.1&')")
    url = page.url
    lr = float(parse_qs(urlparse(url).query)["o"][0].split("lr=")[1])
    assert lr > 0.1
    page.wait_for_function(
        "(lr) => document.getElementById('contour').data[3]?.name === 'sgd:lr=' + lr", arg=lr
    )
    moved = paths(page)
    assert moved != before
    page.goto(url)
    ready(page)
    assert page.url == url
    assert paths(page) == moved
    assert page.locator("#optimizers output").first.inner_text() == str(lr)


def test_a_run_page_shows_a_trial_stored_after_it_opened(
    page: sync_api.Page, server: str, results: Path
) -> None:
    page.goto(server + "/run?path=live")
    ready(page)
    assert page.locator("#trials tr").count() == 2  # header + the one trial
    store_trial(results / "live", "adam", 3)  # what a running `optimlab compare` does per trial
    page.wait_for_function("() => document.querySelectorAll('#trials tr').length === 3")
    assert "adam" in page.inner_text("#trials")
    assert page.inner_text("#trial-count") == "(2 stored)"


def test_a_run_page_follows_a_running_compare(
    page: sync_api.Page, server: str, results: Path
) -> None:
    """The real thing: `optimlab compare` runs in another process; the page, opened after its
    first trial landed, shows the next ones without a reload (and never locks the writer)."""
    out = results / "running"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # single trials, stored one by one: the page must see them arrive (a population's members
    # land together, and this small run's two populations end within seconds). 2,000 steps
    # (≈ 1 s a trial, ≈ 30 s in all): a run of 300-step trials could end while a loaded
    # machine was still loading the page, and no more trials would ever arrive (seen once)
    command = [sys.executable, "-m", "optimlab.cli", "compare", "--problems", "quadratic-deep",
               "--optimizers", "sgd,adam", "--steps", "2000", "--grid-points", "12", "--seeds", "3",
               "--workers", "1", "--population", "off", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180  # a worker process starts (torch): slow on a busy box
        while not (out / "results.sqlite").is_file() or not files.read_trials(out):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "compare stored no trial in 180 s"
            time.sleep(0.2)
        page.goto(server + "/run?path=running")
        ready(page)
        shown = page.locator("#trials tr").count() - 1
        stored = len(files.read_trials(out))
        assert shown >= 1
        page.wait_for_function(
            "(n) => document.querySelectorAll('#trials tr').length - 1 > n", arg=max(shown, stored),
            timeout=60_000,
        )  # fmt: skip
        # the progress compare writes (progress.json): counts and an ETA from its rate, live
        page.wait_for_function(
            "() => /running: \\d+\\/\\d+ trials .*ETA \\d/.test("
            "document.getElementById('progress').textContent)"
        )
        done, planned = map(
            int, re.search(r"(\d+)/(\d+) trials", page.inner_text("#progress")).groups()
        )
        assert 1 <= done <= planned and planned >= len(files.read_trials(out)) - 1
    finally:
        process.kill()
        process.wait(timeout=10)
    assert page.errors == []  # type: ignore[attr-defined]


def test_animation_optimizers_noise_and_3d_view(page: sync_api.Page, server: str) -> None:
    page.goto(server + "/?f=ravine&o=sgd:lr=0.5&s=30")
    ready(page)
    frame = lambda: int(page.inner_text("#frame-out"))  # noqa: E731
    assert frame() == 30
    page.click("#reset")
    assert frame() == 0 and len(paths(page)[0]) == 1  # only the start is drawn
    page.click("#step")
    assert frame() == 1 and len(paths(page)[0]) == 2
    page.click("#play")
    page.wait_for_function("() => Number(document.getElementById('frame-out').textContent) >= 30")
    assert "t=" not in page.url  # the full view needs no step in the URL
    page.select_option("#add-name", "adam")
    page.click("#add")
    page.wait_for_function("() => document.getElementById('contour').data.length === 5")
    assert "adam:lr=0.001" in parse_qs(urlparse(page.url).query)["o"][0]
    page.locator("#optimizers .opt button").first.click()  # remove sgd
    page.wait_for_function(
        "() => document.getElementById('contour').data.slice(3).map((t) => t.name).join() "
        "=== 'adam:lr=0.001'"
    )
    quiet = paths(page)[0]
    page.locator("#noise").fill("1")
    page.wait_for_function("() => location.search.includes('n=1')")
    page.wait_for_function(
        "(x1) => document.getElementById('contour').data[3].x[1] !== x1", arg=quiet[1]
    )
    noisy = paths(page)[0]
    page.check("#view3d")
    page.wait_for_function("() => document.getElementById('surface3d').data?.length === 2")
    assert page.locator("#surface3d").is_visible() and not page.locator("#contour").is_visible()
    assert "v3=1" in page.url
    page.goto(page.url)
    ready(page)
    assert paths(page)[0] == noisy and page.locator("#surface3d").is_visible()
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_run_page_shows_the_ranked_mean_of_an_optimizer_whose_seeds_diverged(
    page: sync_api.Page, server: str, results: Path
) -> None:
    """nadam diverged on 5 of its 10 seeds: the per-problem table shows the mean that was ranked
    (those seeds at chance accuracy), not the mean of the 5 that trained, and says so."""
    from tests.test_summary_failed_seeds import fabricated

    summary = fabricated("classification")
    nadam = summary["problems"]["digits-logreg"]["nadam"]
    assert nadam["seeds_counted_untrained"] == 5
    store_trial(results / "failing", "sgd", 0)
    (results / "failing" / "summary.json").write_text(json.dumps(summary, default=float))
    page.goto(server + "/run?path=failing")
    ready(page)
    row = page.locator("#problems tr", has_text="nadam").inner_text()
    shown = lambda v: repr(float(f"{v:.4g}"))  # noqa: E731 — run.js's num(): 4 significant digits
    assert f"{shown(nadam['ranked_mean'])} ± " in row and "(5 of 10 seeds ok)" in row
    assert shown(nadam["test_accuracy_mean"]) not in row
    assert page.errors == []  # type: ignore[attr-defined]
