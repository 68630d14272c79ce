"""`optimlab serve` as a user runs it: a real process that prints its URL, answers, warns when
exposed, and stops on Ctrl-C with exit 0 and no traceback.  (The docs show it as a console
session, `$ optimlab serve …`: a server runs until interrupted, so the docs-commands test, which
waits for each command to exit, cannot run it; this test does.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]


def start(tmp_path: Path, *options: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "optimlab.cli", "serve", "--port", "0", *options],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("serving "):
            return process, line.split()[1]
    process.kill()
    raise AssertionError("no URL printed: " + (process.stderr.read() if process.stderr else ""))


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def test_serve_prints_its_url_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--results", "results")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        with urllib.request.urlopen(url + "api/runs") as answer:
            assert json.loads(answer.read()) == []  # results/ does not exist yet: nothing listed
        with urllib.request.urlopen(url) as answer:
            assert b"optimlab playground" in answer.read()
    finally:
        code, err = stop(process)
    assert code == 0 and "Traceback" not in err
    assert "warning" not in err  # loopback: no warning


def test_serve_warns_when_exposed(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--host", "0.0.0.0")
    code, err = stop(process)
    assert url.startswith("http://127.0.0.1:")
    assert "warning: binding 0.0.0.0 exposes the server" in err and code == 0


def test_an_address_that_cannot_be_bound_exits_2_naming_the_option(tmp_path: Path, capsys) -> None:
    # uvicorn printed "ERROR: [Errno -2] Name or service not known" and exited 3
    import socket

    from optimlab.cli import main

    pytest.importorskip("uvicorn")
    assert main(["serve", "--host", "nonsense.invalid", "--results", str(tmp_path)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "Invalid value for '--host': cannot resolve 'nonsense.invalid'" in error
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--results", str(tmp_path)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert f"Invalid value for '--port': cannot listen on 127.0.0.1:{port}" in error
