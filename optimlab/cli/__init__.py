"""The `optimlab` command line. One module per command; `main(argv) -> int` runs without a subprocess.

The typer application (`optimlab.cli.app`, which imports every command module) is loaded when
`main` runs or `app` is first touched, so that importing one command module stays cheap.
"""

from __future__ import annotations

import sys
from typing import Any


def _load_app() -> Any:
    from optimlab.cli.app import app

    # Importing the submodule bound the name `app` here to the module; the public name is the
    # Typer application, as it was before the import became lazy.
    globals()["app"] = app
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code."""
    import typer

    app = _load_app()

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
    """Console-script entry point. A Ctrl-C that no command caught — while typer and the
    command modules are still loading, seconds on a loaded machine — ends with one line and
    the shell's code for it (130), not a traceback through the import machinery."""
    import signal

    received: list[int] = []

    def on_sigint(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as without this handler

    import contextlib

    with contextlib.suppress(ValueError):  # not the main thread (an embedding): keep its own
        signal.signal(signal.SIGINT, on_sigint)
    try:
        code = main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except Exception:
        # a Ctrl-C during a library's import can be swallowed there and surface later as
        # another error (numpy half-imported: "module 'numpy' has no attribute 'matrix'")
        if not received:
            raise
        print("\ninterrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load_app()
    raise AttributeError(f"module 'optimlab.cli' has no attribute {name!r}")


__all__ = ["app", "main", "run"]
