"""Integer options whose bad values read like the project's other errors.

typer's own message for ``--seeds abc`` is pydantic's: "Invalid value for '--seeds': Input
should be a valid integer, unable to parse string as an integer" — it names neither the value
nor what is allowed. `integer` parses the option itself and says both, in the same form as the
range checks (``Invalid value for --seeds: 'abc'; allowed: an integer >= 1``, exit 2):

    seeds: int | None = typer.Option(None, "--seeds", **integer("--seeds", 1, MAX_SEEDS))
"""

from __future__ import annotations

from typing import Any

import typer

#: upper bounds: a value past them is a typo, and a huge one crashed deep inside (numpy's grid,
#: the pool's process count, SQLite's 64-bit integers) or trained until killed
MAX_SEEDS = 10_000  # each seed is a whole training run
MAX_WORKERS = 1_024
MAX_STEPS = 100_000_000
MAX_GRID_POINTS = 1_000
MAX_EVALS = 100_000
MAX_TRIALS = 100_000
MAX_RETRIES = 100
MAX_SEED = 2**63 - 1  # torch's and numpy's generators take a signed 64-bit seed


def integer(option: str, minimum: int, maximum: int | None = None) -> dict[str, Any]:
    """typer.Option's ``parser`` and ``metavar`` for `option`: a whole number >= `minimum`
    (and <= `maximum` if given; typer.BadParameter naming the option, the value as typed and
    what is allowed)."""
    allowed = (
        f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    )

    def parse(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                raise typer.BadParameter(
                    f"{str(value)!r}; allowed: {allowed}", param_hint=option
                ) from None
        if number < minimum or (maximum is not None and number > maximum):
            raise typer.BadParameter(f"{number}; allowed: {allowed}", param_hint=option)
        return number

    return {"parser": parse, "metavar": "<int>"}
