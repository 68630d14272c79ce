"""`optimlab --version` and `optimlab list [--json]`, run in-process through main(argv)."""

from __future__ import annotations

import json

import pytest

import optimlab
from optimlab.cli import main
from optimlab.optim.registry import REGISTRY


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"optimlab {optimlab.__version__}"


def test_list_json_has_both_conventions_and_a_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(REGISTRY)
    adam = next(row for row in rows if row["name"] == "adam")
    assert adam["defaults"]["torch"]["eps"] == 1e-8
    assert adam["defaults"]["keras"]["eps"] == 1e-7
    adagrad = next(row for row in rows if row["name"] == "adagrad")
    assert adagrad["defaults"]["keras"]["initial_accumulator_value"] == 0.1
    assert all(row["rule"] for row in rows)


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out


def test_unknown_command_is_a_usage_error() -> None:
    assert main(["no-such-command"]) == 2
