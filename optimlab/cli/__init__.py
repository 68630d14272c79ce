"""The `optimlab` command line. One module per command; `main(argv) -> int` runs without a subprocess."""

from __future__ import annotations

import sys

import typer

from optimlab.cli.app import app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code."""
    try:
        result = app(args=argv, prog_name="optimlab", standalone_mode=False)
    except typer.Exit as exit_:
        return exit_.exit_code
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        return 1
    except Exception as error:
        # Usage errors (bad options, typer.BadParameter) know how to show themselves and carry
        # their exit code (2); anything else is a bug and propagates.
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            error.show()
            return error.exit_code
        raise
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["app", "main", "run"]
