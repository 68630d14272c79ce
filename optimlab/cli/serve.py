"""`optimlab serve`: the lab in the browser (a playground, live comparisons, diagnoses).

    optimlab serve [--host 127.0.0.1] [--port 8765] [--results DIR]

Nothing heavy is imported at module level (fastapi, uvicorn, torch): `optimlab --help` must stay
fast; the app is built when the command runs.  FastAPI and uvicorn come with ``optimlab[serve]``.
"""

from __future__ import annotations

import contextlib
import ipaddress

import typer

from optimlab.cli._integers import integer

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def is_exposed(host: str) -> bool:
    """Whether binding `host` lets other machines connect (anything but a loopback address)."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return True


def check_bindable(host: str, port: int) -> None:
    """typer.BadParameter (exit 2, naming the option) for a host that does not resolve or an
    address that cannot be bound (port in use, not this machine's address)."""
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise typer.BadParameter(
            f"cannot resolve {host!r} ({error}); give an address of this machine, e.g. 127.0.0.1",
            param_hint="'--host'",
        ) from None
    family, kind, proto, _, address = addresses[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            hint = "'--port'" if error.errno in (98, 48, 10048) else "'--host'"  # in use
            raise typer.BadParameter(
                f"cannot listen on {host}:{port}: {error.strerror or error}", param_hint=hint
            ) from None


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/"


def command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(
        8765, "--port", help="Port, 0…65535 (0: any free port).", **integer("--port", 0, 65535)
    ),
    results: str = typer.Option(
        "results",
        "--results",
        help="Directory whose comparisons and diagnoses are served (only files under it).",
    ),
) -> int:
    """Serve the playground and the comparisons under --results in the browser."""
    import sys
    from pathlib import Path

    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"{port} is not in 0…65535", param_hint="'--port'")
    root = Path(results)
    if root.exists() and not root.is_dir():
        raise typer.BadParameter(
            f"{results!r} is a file, not a directory", param_hint="'--results'"
        )
    try:
        import uvicorn

        from optimlab.serve.app import create_app
    except ImportError as error:
        typer.echo(
            f"optimlab serve needs the serve extra ({error.name} is missing): "
            "pip install 'optimlab[serve]'",
            err=True,
        )
        return 2
    check_bindable(host, port)  # uvicorn's own message and exit code 3 otherwise
    if is_exposed(host):
        typer.echo(
            f"warning: binding {host} exposes the server to other machines on the network; "
            "it has no authentication. Use --host 127.0.0.1 unless you mean it.",
            err=True,
        )
    if not root.is_dir():
        typer.echo(f"note: {results!r} does not exist yet; comparisons written there will appear")
    config = uvicorn.Config(create_app(root), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)

    # print the URL once the socket is bound (with --port 0 the port is known only then)
    startup = server.startup

    async def announce(sockets=None):  # type: ignore[no-untyped-def]
        await startup(sockets)
        bound = port
        for server_ in getattr(server, "servers", []):
            for sock in server_.sockets:
                bound = sock.getsockname()[1]
        typer.echo(f"serving {url_of(host, bound)}  (results: {root.resolve()})")
        typer.echo("press Ctrl-C to stop")
        sys.stdout.flush()

    server.startup = announce  # type: ignore[method-assign]
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 1
