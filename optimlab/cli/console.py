"""The console the commands print their tables to.

On a terminal rich fits the tables to its width. Piped to a file (``> log``, CI) rich assumes 80
columns and folded numbers across lines (``prodigy:lr=0.`` / ``5``, ``97.8 ±`` / ``0.0 %``): a
file has no width, so the tables get `FILE_WIDTH` columns there (``COLUMNS`` still wins).
rich is imported when a console is made: cli modules stay fast to load.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: columns for output that is not a terminal: the widest table (compare's, with long problem
#: specs) without folding
FILE_WIDTH = 160


def stdout_console() -> Any:
    """A rich Console on stdout: the terminal's width, or `FILE_WIDTH` when piped."""
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=FILE_WIDTH if piped else None)
