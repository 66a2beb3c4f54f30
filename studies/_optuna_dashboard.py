"""optuna-dashboard beside ours, on the same study database.

Our trials are ordinary Optuna trials (metrics as values and user attributes), so
optuna-dashboard's own per-study views (optimisation history, Pareto front, parameter
importances, trial tables) work on them unchanged; ``nas dashboard`` serves it next to
its own cross-study page instead of re-implementing those views.

optuna-dashboard's API also writes, unauthenticated: it deletes and renames studies,
edits notes and tells trials. It is served behind :func:`guarded`, which takes only GET
and HEAD unless the user asked for writes (``--allow-writes``), and which refuses Host
headers as our own dashboard does (see :mod:`nas.studies._http_guard`); a connection
that sends nothing is dropped after :data:`~nas.studies._http_guard.IDLE_TIMEOUT_S`.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from nas._extras import require
from nas.studies._http_guard import IDLE_TIMEOUT_S, RequestGuard, refusal_headers
from nas.studies._storage import open_storage

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

READ_ONLY = ("optuna-dashboard is served read-only; restart nas dashboard with "
             "--allow-writes to change studies from it")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread a connection (as optuna-dashboard's own CLI serves), so that a slow
    client does not stall every page."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT_S  # a socket that sends nothing must not hold its thread

    def handle(self) -> None:
        """Drop a client that sent nothing in time, without a traceback on stderr."""
        try:
            super().handle()
        except TimeoutError:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Requests are not news on the terminal the user started us from."""


def guarded(app: WSGIApplication, guard: RequestGuard) -> WSGIApplication:
    """``app`` behind ``guard``: a request it refuses gets a one-line plain-text answer
    and never reaches ``app``."""

    def guarded_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        refusal = guard.refusal(method, environ.get("HTTP_HOST"))
        if refusal is None:
            return app(environ, start_response)
        status, reason = refusal
        data = reason.encode("utf-8")
        start_response(f"{status.value} {status.phrase}", refusal_headers(status, data))
        return [] if method == "HEAD" else [data]

    return guarded_app


def start_optuna_dashboard(storage: str, host: str, port: int, *, allow_writes: bool = False,
                           allowed_hosts: Sequence[str] = ()) -> WSGIServer:
    """Serve optuna-dashboard over ``storage`` on ``host:port`` in a daemon thread
    (port 0 picks a free port), read-only unless ``allow_writes``, also to requests that
    name ``allowed_hosts``; ``shutdown()`` the returned server to stop it.

    Raises:
        ValueError: an allowed host is not a host name, or the port cannot be bound.
        MissingExtraError: the ``optuna-dashboard`` extra is not installed.
    """
    require("optuna-dashboard", purpose="optuna-dashboard's per-study views")
    from optuna_dashboard import wsgi

    guard = RequestGuard(host, allowed_hosts, allow_writes=allow_writes, read_only=READ_ONLY)
    app = wsgi(open_storage(storage))  # our driver and pool (PostgreSQL), one-line errors
    try:
        server = make_server(host, port, guarded(app, guard),
                             server_class=_ThreadingServer, handler_class=_QuietHandler)
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
