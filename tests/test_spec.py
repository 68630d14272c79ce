"""The `name:key=value` optimizer spec accepts every option the class accepts."""

from __future__ import annotations

import pytest

from optimlab.optim.base import CommonOptions
from optimlab.optim.registry import list_optimizers
from optimlab.spec import optimizer_options, parse_optimizer_spec


@pytest.mark.parametrize("name", list_optimizers())
def test_every_common_option_is_accepted_on_the_command_line(name):
    # Regression: the classes take the common options as **options; the spec read only the
    # named parameters and refused `convention=keras`, the README's own example.
    assert set(CommonOptions.__annotations__) <= set(optimizer_options(name))


def test_the_readme_spec_parses():
    parsed = parse_optimizer_spec("sgd:lr=0.1,momentum:lr=0.05:convention=keras,adam:amsgrad=true")
    assert parsed[1] == ("momentum", {"lr": 0.05, "convention": "keras"})


def test_an_unknown_option_still_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown option 'bogus' for optimizer 'adam'.*convention"
    ):
        parse_optimizer_spec("adam:bogus=1")
