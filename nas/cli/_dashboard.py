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
) -> None:
    """Serve the studies in the browser: Pareto fronts and hypervolume of the studies
    you select on one plot, and the `nas export` command of each Pareto subnet.

    Pages are rebuilt on every request, so reloading shows a running search's new
    trials. For Optuna's own per-study views, run `optuna-dashboard <storage>`.
    """
    from nas.studies._dashboard import make_server

    server = make_server(storage, host, port)
    console.print(
        f"serving {server.storage} at {server.url} (Ctrl+C to stop)", highlight=False
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()
