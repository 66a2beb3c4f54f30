"""``nas dashboard``: a live view of the study database in the browser."""

from __future__ import annotations

import typer

from nas.cli._common import STORAGE_HELP, console, user_errors


@user_errors
def dashboard(
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="Address to listen on; the default serves this machine only.",
    ),
    port: int = typer.Option(8080, "--port", help="Port to listen on (0: any free port)."),
    optuna: bool | None = typer.Option(
        None, "--optuna/--no-optuna",
        help="Also serve optuna-dashboard's per-study views (default: where the "
             "'optuna-dashboard' extra is installed)."),
    optuna_port: int = typer.Option(8081, "--optuna-port",
                                    help="Port of optuna-dashboard (0: any free port)."),
    allow_writes: bool = typer.Option(
        False, "--allow-writes",
        help="Let optuna-dashboard change the database (delete or rename studies, edit "
             "notes, tell trials): anyone who reaches its port can, without a password. "
             "Without it, it is read-only like ours.",
    ),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", metavar="NAME",
        help="Also serve requests addressed to the host name NAME (repeatable); by "
             "default only IP addresses, localhost and this machine's names, against DNS "
             "rebinding.",
    ),
) -> None:
    """Serve the studies in the browser: Pareto fronts and hypervolume of the studies
    you select on one plot, and the `nas export` command of each Pareto subnet; beside
    it, optuna-dashboard's own per-study views on the same database.

    Pages are rebuilt on every request, so reloading shows a running search's new
    trials. Both servers only read the database (but optuna-dashboard writes with
    the --allow-writes flag) and answer only requests addressed to an IP address,
    localhost, this machine's name or an --allowed-host name (against DNS rebinding).
    """
    from nas._extras import installed
    from nas.studies._dashboard import make_server
    from nas.studies._optuna_dashboard import optuna_dashboard_url, start_optuna_dashboard

    server = make_server(storage, host, port, allowed_hosts=allowed_host)
    optuna_server = None
    if optuna is None:
        optuna = installed("optuna-dashboard")
        if not optuna:
            console.print("(optuna-dashboard's per-study views need: pip install "
                          "'nas-platform[optuna-dashboard]')", highlight=False)
    try:
        if optuna:
            optuna_server = start_optuna_dashboard(server.storage, host, optuna_port,
                                                   allow_writes=allow_writes,
                                                   allowed_hosts=allowed_host)
            server.optuna_url = optuna_dashboard_url(optuna_server)
        console.print(f"serving {server.storage} at {server.url}"
                      + _optuna_note(server.optuna_url, allow_writes)
                      + " (Ctrl+C to stop)", highlight=False)
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()
        if optuna_server is not None:
            optuna_server.shutdown()
            optuna_server.server_close()


def _optuna_note(url: str | None, allow_writes: bool) -> str:
    if url is None:
        return ""
    return f" (optuna-dashboard: {url}{', writes allowed' if allow_writes else ''})"
