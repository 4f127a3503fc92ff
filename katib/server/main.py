"""`katib server`: the REST API, the web UI, the reconcile loop and DBManager in one process.

Start-up prints two lines that scripts and tests read:

    katib DBManager listening on 127.0.0.1:PORT
    katib server listening on http://127.0.0.1:PORT

Shutdown (SIGTERM or SIGINT) stops accepting requests, stops the reconcile loop and
releases the experiments it owned; local trials keep running and the next server
(or `katib run`) adopts them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import click

from katib import errors

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; anything else (0.0.0.0 included) is public."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_bindable(host: str, port: int) -> None:
    """UnavailableError now, with a clear message, if host:port cannot be listened on."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            raise errors.UnavailableError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None


def _announce_when_started(server: Any, stop: threading.Event) -> None:
    """Print the URL once uvicorn listens (port 0 is only known then)."""
    while not server.started and not stop.wait(0.02):
        pass
    if not server.started:
        return
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    click.echo(f"katib server listening on http://{_url_host(host)}:{port}")
    sys.stdout.flush()


def _start_reconciler(runtime: Any) -> Any:
    """The reconcile loop for every experiment, when katib.server.reconciler is installed."""
    try:
        from katib.server.reconciler import ExperimentReconciler
    except ImportError as exc:
        log.warning("no reconcile loop (katib.server.reconciler unavailable: %s)", exc)
        click.echo(
            f"warning: experiments are stored but not run: reconciler unavailable ({exc})",
            err=True,
        )
        return None
    reconciler = ExperimentReconciler(runtime)
    reconciler.start()
    return reconciler


def serve(
    *,
    db_url: str | None,
    data_dir: Path | None,
    host: str,
    port: int,
    dbmanager_host: str | None,
    dbmanager_port: int,
    token_file: Path | None,
    allow_public: bool,
) -> None:
    """Run the server until SIGTERM/SIGINT. KatibError for bad settings (caller prints it)."""
    from katib.server.auth import load_token

    dbm_host = dbmanager_host or (host if allow_public else "127.0.0.1")
    for flag, value in (("--host", host), ("--dbmanager-host", dbm_host)):
        if not is_loopback(value) and not allow_public:
            raise errors.InvalidArgumentError(
                f"{flag} {value} is not a loopback address: the server would be reachable "
                "from other machines. Pass --allow-public to do that on purpose (and set a "
                "token with --token-file or KATIB_TOKEN)."
            )
    token = load_token(token_file)
    if token:
        # In-process gRPC clients of DBManager (katib.apis.dbmanager_client) send it too.
        os.environ["KATIB_TOKEN"] = token
    if not is_loopback(host) and token is None:
        click.echo(
            "warning: listening on a public address without a token; anyone who can reach "
            f"{host}:{port} can create and delete experiments",
            err=True,
        )
    check_bindable(host, port)

    import uvicorn

    from katib.controller.runtime import Runtime
    from katib.server.app import create_app

    runtime = Runtime(
        data_dir=data_dir,
        db_url=db_url,
        notice=lambda message: click.echo(f"note: {message}", err=True),
        db_manager_host=dbm_host,
        db_manager_port=dbmanager_port,
        token=token,
    )
    reconciler = None
    try:
        dbm_address = f"{_url_host(dbm_host)}:{runtime.db_manager_port}"
        app = create_app(runtime, token=token, db_manager_address=dbm_address)
        click.echo(f"katib DBManager listening on {dbm_address}", err=False)
        click.echo(f"data directory {runtime.data_dir}; auth {'on' if token else 'off'}")
        reconciler = _start_reconciler(runtime)
        config = uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        announced = threading.Event()
        threading.Thread(
            target=_announce_when_started, args=(server, announced), daemon=True
        ).start()
        # uvicorn handles SIGINT/SIGTERM (stop accepting, drain), then re-raises the signal
        # for the previous handler: make that a no-op so the cleanup below runs.
        received: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: received.append(signum))
        server.run()
        announced.set()
        if not server.started:
            raise errors.UnavailableError(f"the HTTP server could not start on {host}:{port}")
        click.echo("katib server: shutting down")
    finally:
        if reconciler is not None:
            reconciler.stop()
        runtime.close()
    click.echo("katib server: stopped (running trials keep running; the next start adopts them)")


@click.command("server")
@click.option(
    "--db",
    "db_url",
    envvar="KATIB_DB",
    default=None,
    help="Storage URL (sqlite:///..., postgresql://..., mysql://...). "
    "Default: a SQLite file in the data directory.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KATIB_DATA_DIR",
    default=None,
    help="Where the database, trial logs and work files live (default ~/.katib).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP address to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="HTTP port (0: any).")
@click.option(
    "--dbmanager-host",
    default=None,
    help="DBManager gRPC address (default 127.0.0.1, or --host with --allow-public).",
)
@click.option(
    "--dbmanager-port",
    default=0,
    show_default=True,
    type=int,
    help="DBManager gRPC port (0: any free port; Katib's is 6789).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the bearer token every request needs (else $KATIB_TOKEN; neither: no auth).",
)
@click.option(
    "--allow-public",
    is_flag=True,
    help="Allow binding a non-loopback address (reachable from other machines).",
)
def server_command(
    db_url: str | None,
    data_dir: Path | None,
    host: str,
    port: int,
    dbmanager_host: str | None,
    dbmanager_port: int,
    token_file: Path | None,
    allow_public: bool,
) -> None:
    """Serve the REST API, web UI, controller loop and DBManager until stopped."""
    from katib.cli.exit_codes import exit_code_for

    try:
        serve(
            db_url=db_url,
            data_dir=data_dir,
            host=host,
            port=port,
            dbmanager_host=dbmanager_host,
            dbmanager_port=dbmanager_port,
            token_file=token_file,
            allow_public=allow_public,
        )
    except errors.KatibError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(5)
