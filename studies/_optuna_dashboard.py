"""optuna-dashboard beside ours, on the same study database.

Our trials are ordinary Optuna trials (metrics as values and user attributes), so
optuna-dashboard's own per-study views (optimisation history, Pareto front, parameter
importances, trial tables) work on them unchanged; ``nas dashboard`` serves it next to
its own cross-study page instead of re-implementing those views.
"""

from __future__ import annotations

import errno
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Requests are not news on the terminal the user started us from."""


def start_optuna_dashboard(storage: str, host: str, port: int) -> WSGIServer:
    """Serve optuna-dashboard over ``storage`` on ``host:port`` in a daemon thread
    (port 0 picks a free port); ``shutdown()`` the returned server to stop it.

    Raises:
        ValueError: optuna-dashboard is not installed, or the port cannot be bound.
    """
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise ValueError("optuna-dashboard is not installed (pip install optuna-dashboard); "
                         "or pass --no-optuna") from None
    try:
        server = make_server(host, port, wsgi(storage), handler_class=_QuietHandler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is already in use; choose another "
                             "with --optuna-port") from err
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    threading.Thread(target=server.serve_forever, daemon=True,
                     name="optuna-dashboard").start()
    return server


def optuna_dashboard_url(server: WSGIServer) -> str:
    """Where the optuna-dashboard of ``server`` is browsed."""
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/dashboard"
