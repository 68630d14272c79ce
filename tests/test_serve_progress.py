"""A comparison's progress file (``DIR/progress.json``), its ETA on a run's page, and compare's
piped progress count.

The file is written by ``optimlab compare`` (``optimlab.lab.progress_file``) and read by
``optimlab serve``; the ETA is checked against a hand-computed rate extrapolation."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime

import pytest

from optimlab.cli import main
from optimlab.lab.progress_file import FILE_NAME, ProgressFile, estimate, read_progress
from optimlab.lab.store import ResultStore

CONTRACT = {"planned", "done", "failed", "started_at", "updated_at", "finished", "command"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_file_follows_the_contract_and_writes_at_most_once_a_second(tmp_path) -> None:
    clock = Clock()
    record = ProgressFile(tmp_path, "optimlab compare --out x", clock=clock)
    assert record.update(10, 0, 0)  # the first write is never delayed
    clock.now += 0.4
    assert not record.update(10, 1, 0)  # 0.4 s after the last write: only remembered
    assert read_progress(tmp_path)["done"] == 0
    clock.now += 0.6
    assert record.update(10, 2, 1)  # 1 s after the last write
    data = json.loads((tmp_path / FILE_NAME).read_text())
    assert set(data) >= CONTRACT
    assert (data["planned"], data["done"], data["failed"], data["finished"]) == (10, 2, 1, False)
    assert data["command"] == "optimlab compare --out x"
    for key in ("started_at", "updated_at"):
        assert datetime.fromisoformat(data[key]).tzinfo is not None  # ISO 8601 with its zone
    clock.now += 0.1
    record.close(finished=True)  # the final write is never delayed either
    data = read_progress(tmp_path)
    assert data["finished"] is True and data["done"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left behind


def test_a_reader_never_sees_a_partial_progress_file(tmp_path) -> None:
    record = ProgressFile(tmp_path, "x" * 20_000, interval=0.0)  # a big file: many write calls
    record.update(1000, 0, 0)
    seen, bad = [], []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads((tmp_path / FILE_NAME).read_text())["done"])
            except ValueError as error:
                bad.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    for done in range(1, 300):
        record.update(1000, done, 0)
    stop.set()
    reader.join()
    assert bad == [] and len(seen) > 0
    assert seen == sorted(seen)  # every read is a whole file, and the files arrive in order


def test_estimate_extrapolates_the_rate_of_this_invocation() -> None:
    # resumed with 4 trials stored; 6 more ran in 30 s -> 0.2 trials/s; 10 left -> 50 s from the
    # update, which was 5 s ago -> 45 s
    record = {
        "planned": 20, "done": 10, "failed": 0, "done_at_start": 4, "finished": False,
        "started_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:30+00:00",
        "command": "optimlab compare",
    }  # fmt: skip
    now = datetime(2026, 1, 1, 0, 0, 35, tzinfo=UTC).timestamp()
    found = estimate(record, now)
    assert found["rate"] == pytest.approx(0.2)
    assert found["eta_seconds"] == pytest.approx(45.0)
    assert found["share"] == 0.5 and found["since_update"] == pytest.approx(5.0)
    # nothing ran yet in this invocation: no rate, no ETA (not a division by zero)
    assert estimate({**record, "done": 4}, now)["eta_seconds"] is None
    assert estimate({**record, "finished": True}, now)["eta_seconds"] is None


def test_a_file_that_is_not_a_progress_record_is_ignored(tmp_path) -> None:
    assert read_progress(tmp_path) is None
    (tmp_path / FILE_NAME).write_text('{"done": 1}')
    assert read_progress(tmp_path) is None
    (tmp_path / FILE_NAME).write_text("{not json")
    assert read_progress(tmp_path) is None


def test_piped_progress_counts_only_the_trials_that_ran_and_compare_writes_progress_json(
    tmp_path, capsys
) -> None:
    # sgd at lr 1000 diverges: its seed rerun, estimated in the first total, is never run. The
    # last line used to say "3/≈4" (or "4/4") when 3 trials ran: the skipped rerun counted.
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd:lr=1000"]
    args += ["--steps", "5", "--seeds", "2", "--workers", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    lines = [
        line for line in capsys.readouterr().err.splitlines() if re.match(r"compare: \d", line)
    ]
    first = re.match(r"compare: (\d+)/(≈?)(\d+) trials", lines[0])
    assert first and first[2] == "≈"  # the rerun estimated up front
    last = re.match(r"compare: (\d+)/(\d+) trials", lines[-1])
    stored = ResultStore(tmp_path).count()
    assert int(first[3]) == stored + 1  # all but the rerun ran
    assert last and int(last[1]) == int(last[2]) == stored
    record = read_progress(tmp_path)
    assert record is not None
    assert (record["planned"], record["done"], record["failed"]) == (stored, stored, 0)
    assert record["finished"] is True
    assert record["command"].startswith("optimlab compare ") and str(tmp_path) in record["command"]


def test_the_run_api_answers_the_progress_with_its_eta(tmp_path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from optimlab.serve.app import create_app

    run = tmp_path / "run"
    ResultStore(run)  # an empty store: the comparison has begun
    client = TestClient(create_app(tmp_path))
    assert client.get("/api/run", params={"path": "run"}).json()["progress"] is None
    record = ProgressFile(run, "optimlab compare --out run", interval=0.0)
    record.update(8, 0, 0)
    assert client.get("/api/run", params={"path": "run"}).json()["progress"]["eta_seconds"] is None
    time.sleep(0.05)
    record.update(8, 2, 0)
    progress = client.get("/api/run", params={"path": "run"}).json()["progress"]
    assert (progress["planned"], progress["done"], progress["finished"]) == (8, 2, False)
    assert progress["share"] == 0.25 and progress["command"] == "optimlab compare --out run"
    # 2 trials in the time between the two writes; 6 left at that rate, less the time since
    assert progress["rate"] > 0
    expected = 6 / progress["rate"] - progress["since_update"]
    assert progress["eta_seconds"] == pytest.approx(max(0.0, expected), abs=0.05)


def test_a_store_compare_has_created_but_not_yet_filled_answers_no_trials(tmp_path) -> None:
    # the moment between compare creating results.sqlite and creating its table: the run page
    # polled into it and got a 500 (sqlite3.OperationalError: no such table: trials)
    pytest.importorskip("fastapi")
    import sqlite3

    from fastapi.testclient import TestClient

    from optimlab.serve.app import create_app

    (tmp_path / "run").mkdir()
    sqlite3.connect(tmp_path / "run" / "results.sqlite").close()  # an empty database file
    client = TestClient(create_app(tmp_path))
    answer = client.get("/api/run", params={"path": "run"})
    assert answer.status_code == 200 and answer.json()["count"] == 0
    assert client.get("/api/run/trials", params={"path": "run"}).json()["trials"] == []


def test_an_interrupted_run_leaves_a_progress_file_that_is_not_finished(tmp_path) -> None:
    # what compare's Ctrl-C path does: events, then close() before every planned trial ran
    import io

    from optimlab.cli.progress import Progress
    from optimlab.lab.trial import TrialSpec

    record = ProgressFile(tmp_path, "optimlab compare --out x", interval=0.0)
    progress = Progress(io.StringIO(), terminal=False, record=record)
    spec = TrialSpec("quadratic", "sgd", {"lr": 0.1}, seed=0, steps=10, problem_label="q")
    base = {"total": 6, "approximate": True, "skipped": 0}
    progress({"event": "planned", "done": 0, **base})
    progress({"event": "finished", "done": 1, "spec": spec, "status": "failed", "reason": "nan",
              **base})  # fmt: skip
    progress.close()
    data = read_progress(tmp_path)
    assert (data["planned"], data["done"], data["failed"], data["finished"]) == (6, 1, 1, False)
    # a run that ends with every trial done, one rerun skipped: 5 planned, 5 done, finished
    progress = Progress(io.StringIO(), terminal=False, record=record)
    ended = {"total": 6, "approximate": False, "skipped": 1}
    progress({"event": "finished", "done": 6, "spec": spec, "status": "ok", **ended})
    progress.close()
    data = read_progress(tmp_path)
    assert (data["planned"], data["done"], data["finished"]) == (5, 5, True)
