"""A live view of a study database in the browser (``nas dashboard``).

A standard-library HTTP server (:class:`http.server.ThreadingHTTPServer`, no web
framework); every page is built from the database on each request, so reloading shows
the trials a running search has added since. Pages:

* ``/``: the studies (name, trials, supernet, hardware), with checkboxes to compare some
  and a link to each;
* ``/compare?study=A&study=B``: the Pareto fronts of the studies on one plot and their
  hypervolume over evaluations (the figures of ``nas report``), and per study the Pareto
  subnets with their config and the ``nas export`` command of each, ready to copy;
* ``/plotly.min.js``: plotly.js, served from the installed plotly package; no page
  loads anything from another host.

An unknown study in a query gives a 404 page naming the studies there. The server binds
to 127.0.0.1 unless told otherwise: the pages show configs and storage URLs. It only
reads: any method but GET and HEAD is a 405, a Host header that is not an IP address,
localhost, this machine's name or an ``--allowed-host`` name is a 421 (against DNS
rebinding), and an idle connection is dropped (see :mod:`nas.studies._http_guard`).
The export commands name only the formats this installation can write.
"""

from __future__ import annotations

import errno
import logging
import shlex
from collections.abc import Sequence
from functools import cache
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from nas._extras import require
from nas._messages import one_line
from nas.studies._export import available_formats
from nas.studies._html_report import (
    POLICY_HEADER,
    STYLE,
    StudyData,
    figure_html,
    front_figure,
    hypervolume_section,
    memory_heading,
    memory_metric,
    policy_cells,
    subnet_cells,
)
from nas.studies._http_guard import IDLE_TIMEOUT_S, RequestGuard, refusal_headers
from nas.studies._storage import default_storage, storage_label
from nas.studies._study import StudyNotFoundError, list_studies, load_study

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
EXPORT_FORMATS = ("safetensors", "onnx")
"""The formats the export commands suggest, of those this installation can write."""
READ_ONLY = "the nas dashboard only reads the study database: it answers GET and HEAD only"
_PLOTLY_PATH = "/plotly.min.js"
_DASH = "\u2014"
_EXTRA_STYLE = """
nav { margin-bottom: 1em; }
.cmd { display: flex; gap: 0.4em; align-items: flex-start; }
.cmd code { user-select: all; word-break: break-all; }
.error { color: #a00; }
#selected { margin: 0.5em 0 1.5em; padding: 0.5em; background: #f4f6fa; min-height: 1.2em; }
tr.picked td { background: #fff3c4; }
"""
_COPY_SCRIPT = """
<script>
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var text = button.getAttribute("data-copy");
  if (navigator.clipboard) {
    navigator.clipboard.writeText(text).then(function () { button.textContent = "copied"; });
  }
});
</script>
"""

_SELECT_SCRIPT = """
<script>
// A click on a point of the fronts plot shows that subnet below the plot: its study,
// trial and config, and for a Pareto subnet its row (highlighted) and export command.
document.querySelectorAll(".js-plotly-plot").forEach(function (plot) {
  if (!plot.on) return;
  plot.on("plotly_click", function (event) {
    var data = event.points[0].customdata;
    if (!data || data.length < 3) return;
    var panel = document.getElementById("selected");
    var config = document.createElement("div");
    config.innerHTML = String(data[1]).split("<br>").join(", ");
    panel.textContent = "study " + data[2] + ", trial " + data[0] + ": " + config.textContent;
    document.querySelectorAll("tr.picked").forEach(function (r) { r.classList.remove("picked"); });
    var row = document.querySelector('table[data-study="' + CSS.escape(data[2]) +
                                     '"] tr[data-trial="' + data[0] + '"]');
    if (!row) return;
    row.classList.add("picked");
    var command = document.createElement("code");
    command.textContent = row.querySelector(".cmd code").textContent;
    panel.appendChild(document.createElement("br"));
    panel.appendChild(command);
  });
});
</script>
"""

log = logging.getLogger(__name__)


class DashboardServer(ThreadingHTTPServer):
    """The dashboard's HTTP server; ``storage`` is the study database URL it shows,
    ``guard`` what it refuses to serve."""

    daemon_threads = True
    allow_reuse_port = False  # never share a port with another process

    def __init__(self, address: tuple[str, int], storage: str, guard: RequestGuard) -> None:
        self.storage = storage
        self.guard = guard
        self.optuna_url: str | None = None  # optuna-dashboard beside us, when serving
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(
    storage: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
    *, allowed_hosts: Sequence[str] = (),
) -> DashboardServer:
    """A dashboard server over ``storage``, bound but not yet serving
    (call ``serve_forever``; port 0 picks a free port); it also serves requests that
    name the hosts ``allowed_hosts`` (see :func:`nas.studies._http_guard.allowed_host`).

    Raises:
        ValueError: the storage cannot be opened, an allowed host is not a host name,
            or the address cannot be bound (the port is taken, the host is not an
            address of this machine).
        MissingExtraError: plotly (the ``report`` extra) is not installed.
    """
    require("report", purpose="the dashboard's plots")
    url = storage or default_storage()
    list_studies(url)  # fail now, on one line, rather than on every page
    guard = RequestGuard(host, allowed_hosts, read_only=READ_ONLY)
    try:
        return DashboardServer((host, port), url, guard)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is already in use; choose another with --port"
            ) from err
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err


class _Page(Exception):
    """A finished error page: raised by a page builder, sent by the handler."""

    def __init__(self, status: HTTPStatus, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "nas-dashboard"
    timeout = IDLE_TIMEOUT_S  # a socket that sends nothing must not hold its thread

    def parse_request(self) -> bool:
        """Refuse a request the guard refuses, whatever its method, before any page is
        built (http.server would answer an unknown method with a 501)."""
        if not super().parse_request():
            return False
        refusal = self.server.guard.refusal(self.command, self.headers.get("Host"))
        if refusal is None:
            return True
        status, reason = refusal
        data = reason.encode("utf-8")
        self.send_response(status)
        for name, value in refusal_headers(status, data):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return False

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        try:
            if parts.path == "/":
                self._send(HTTPStatus.OK, index_page(self.server.storage,
                                                        self.server.optuna_url))
            elif parts.path == "/compare":
                self._send(HTTPStatus.OK, compare_page(self.server.storage, query.get("study", [])))
            elif parts.path == _PLOTLY_PATH:
                self._send(HTTPStatus.OK, _plotly_js(), "text/javascript; charset=utf-8",
                           cache=True)
            else:
                raise _Page(HTTPStatus.NOT_FOUND, _document(
                    "Not found", f'<p class="error">No page {escape(parts.path)}.</p>'
                ))
        except _Page as page:
            self._send(page.status, page.body)
        except Exception as err:  # a page must never take the server down
            log.exception("dashboard page %s failed", self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _document(
                "Error", f'<p class="error">{escape(one_line(err))}</p>'
            ))

    do_HEAD = do_GET  # noqa: N815 (the same headers; _send leaves the body out)

    def _send(self, status: HTTPStatus, body: str, content_type: str = "text/html; charset=utf-8",
              *, cache: bool = False) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)


# -- pages --------------------------------------------------------------------------------


def index_page(storage: str, optuna_url: str | None = None) -> str:
    """The studies in ``storage`` with checkboxes to compare them, and a link to
    optuna-dashboard's per-study views when it runs beside us (``optuna_url``)."""
    summaries = list_studies(storage)
    rows = []
    for s in summaries:
        name = escape(s.name)
        if s.supernet is None:  # an Optuna study that nas did not create
            pick, link = "", name
        else:
            pick = f'<input type="checkbox" name="study" value="{name}">'
            link = f'<a href="/compare?study={escape(quote(s.name, safe=""))}">{name}</a>'
        rows.append(
            f'<tr data-study="{name}"><td>{pick}</td><td>{link}</td>'
            f'<td class="num">{s.trials}</td><td>{escape(s.supernet or _DASH)}</td>'
            f"<td>{escape(s.hardware or _DASH)}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="5">no studies yet</td></tr>'
    return _document("NAS studies", (
        f'<p class="note">Storage <code>{escape(storage_label(storage))}</code>; reload for '
        f"the latest trials. {_optuna_note(storage, optuna_url)}</p>\n"
        '<form action="/compare" method="get">\n'
        "<table>\n<tr><th></th><th>study</th><th>trials</th><th>supernet</th>"
        f"<th>hardware</th></tr>\n{body}\n</table>\n"
        '<button type="submit">Compare selected</button>\n</form>'
    ), nav=False)


def _optuna_note(storage: str, optuna_url: str | None) -> str:
    if optuna_url:
        return (f'Optuna\'s own per-study views: <a href="{escape(optuna_url)}">'
                "optuna-dashboard</a>.")
    return ("For Optuna's own per-study views run "
            f"<code>optuna-dashboard {escape(shlex.quote(storage))}</code>.")


def compare_page(storage: str, names: Sequence[str]) -> str:
    """Fronts, hypervolume curves and Pareto tables of the studies ``names``.

    Raises:
        _Page: no study given (400), an unknown study (404), or one that nas did not
            create (400).
    """
    names = list(dict.fromkeys(names))  # a study given twice is shown once
    if not names:
        raise _Page(HTTPStatus.BAD_REQUEST, _document(
            "No study selected", '<p class="error">Select at least one study to compare.</p>'
        ))
    known = [s.name for s in list_studies(storage)]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise _Page(HTTPStatus.NOT_FOUND, _document("Unknown study", (
            f'<p class="error">No study {escape(", ".join(map(repr, unknown)))} in '
            f"<code>{escape(storage_label(storage))}</code>.</p>\n"
            f"<p>Known studies: {escape(', '.join(known)) or 'none'}.</p>"
        )))
    try:
        data = [StudyData.of(load_study(name, storage)) for name in names]
    except StudyNotFoundError as err:  # deleted between the two reads
        raise _Page(HTTPStatus.NOT_FOUND, _document(
            "Unknown study", f'<p class="error">{escape(one_line(err))}</p>'
        )) from err
    except ValueError as err:
        raise _Page(HTTPStatus.BAD_REQUEST, _document(
            "Cannot show study", f'<p class="error">{escape(one_line(err))}</p>'
        )) from err
    title = ", ".join(names)
    sections = [
        "<h2>Pareto fronts</h2>",
        figure_html(front_figure(data), include_plotlyjs=False),
        '<div id="selected">Click a point to see its subnet.</div>',
        "<h2>Hypervolume over evaluations</h2>",
        hypervolume_section(data),
        *(_pareto_table(d, storage) for d in data),
    ]
    return _document(f"Compare {title}", "\n".join([*sections, _SELECT_SCRIPT]), plotly=True)


def export_command(study: str, trial: int, storage: str) -> str:
    """The shell command that exports ``trial`` of ``study`` (``--storage`` only when
    it is not the default, so that the command stays short), in the formats of
    :func:`export_formats`."""
    words = ["nas", "export", "--study", study, "--trial", str(trial),
             "--out", f"exports/{_safe_dir(study)}-trial{trial}", "--format", export_formats()]
    if storage != default_storage():
        words += ["--storage", storage]
    return shlex.join(words)


def export_formats() -> str:
    """The ``--format`` of the export commands: those of :data:`EXPORT_FORMATS` this
    installation can write (onnx needs its extra), so a copied command does not fail."""
    return ",".join(f for f in EXPORT_FORMATS if f in available_formats())


def _pareto_table(data: StudyData, storage: str) -> str:
    name = escape(data.study.name)
    memory = memory_metric(data.front)
    quantized = data.study.meta.quantize != "none"
    rows = []
    for trial in data.front:
        command = export_command(data.study.name, trial.number, storage)
        policy = policy_cells(trial) if quantized else ""
        rows.append(
            f'<tr data-trial="{trial.number}">{subnet_cells(trial, memory)}{policy}'
            f'<td><div class="cmd"><button type="button" data-copy="{escape(command)}">copy'
            f"</button><code>{escape(command)}</code></div></td></tr>"
        )
    memory_header = memory_heading(memory)
    body = "\n".join(rows) or (
        f'<tr><td colspan="{8 if quantized else 6}">no feasible trial yet</td></tr>')
    return (
        f"<h2>Pareto subnets of {name}</h2>\n"
        f'<p class="note">{len(data.trials)} trials, {len(data.front)} on the feasible '
        "front.</p>\n"
        f'<table data-study="{name}">\n<tr><th>trial</th><th>config</th><th>accuracy</th>'
        f"<th>latency (ms)</th><th>{memory_header}</th>{POLICY_HEADER if quantized else ''}"
        f"<th>export</th></tr>\n{body}\n</table>"
    )


def _document(title: str, body: str, *, plotly: bool = False, nav: bool = True) -> str:
    script = f'<script src="{_PLOTLY_PATH}"></script>\n' if plotly else ""
    back = '<nav><a href="/">all studies</a></nav>\n' if nav else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}{_EXTRA_STYLE}</style>\n{script}"
        f"</head>\n<body>\n{back}<h1>{escape(title)}</h1>\n{body}\n{_COPY_SCRIPT}</body>\n</html>\n"
    )


def _safe_dir(name: str) -> str:
    """A study name as a directory name: letters, digits, ``-``, ``_`` and ``.`` kept."""
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return kept or "study"


@cache
def _plotly_js() -> str:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(
        encoding="utf-8"
    )
