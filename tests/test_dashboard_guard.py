"""`nas dashboard`'s guard, over real servers and raw requests: optuna-dashboard is
read-only unless --allow-writes, both servers refuse foreign Host headers (DNS rebinding)
and drop idle connections, and the export commands name only installable formats."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from email.message import Message
from socketserver import BaseServer

import optuna
import pytest

from nas.studies import _export
from nas.studies._dashboard import DashboardServer, make_server
from nas.studies._http_guard import IDLE_TIMEOUT_S, allowed_host, served_names
from nas.studies._optuna_dashboard import optuna_dashboard_url, start_optuna_dashboard
from tests import test_dashboard
from tests.cli_helpers import nas, one_line_error
from tests.test_dashboard import PIXEL, _compare_url, _get, _pareto_trials, serving

storage = test_dashboard.storage
"""The two real studies of test_dashboard, searched again into this module's database."""

ALLOWED = "nas-box.lan"
"""The name the servers are started to accept with --allowed-host."""

WRITES = [
    ("DELETE", "/api/studies/{study}", None),
    ("POST", "/api/studies/{study}/rename", {"study_name": "renamed"}),
    ("PUT", "/api/studies/{study}/note", {"version": 1, "body": "defaced"}),
    ("POST", "/api/trials/{trial}/tell", {"state": "Fail"}),
    ("PUT", "/api/studies/{study}/{trial}/note", {"version": 1, "body": "defaced"}),
    ("POST", "/api/studies", {"study_name": "planted", "directions": ["minimize"]}),
    ("PATCH", "/api/studies/{study}", {}),
]
"""optuna-dashboard's writes: delete, rename, notes, trial state, a new study, and a
method it has no route for."""


@pytest.fixture(scope="module")
def ours(storage) -> Iterator[DashboardServer]:
    yield from serving(make_server(storage, port=0, allowed_hosts=[ALLOWED]))


@pytest.fixture(scope="module")
def theirs(storage) -> Iterator[BaseServer]:
    """optuna-dashboard as ``nas dashboard --allowed-host nas-box.lan`` starts it."""
    server = start_optuna_dashboard(storage, "127.0.0.1", 0, allowed_hosts=[ALLOWED])
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["ours", "optuna-dashboard"])
def served(request) -> tuple[BaseServer, str]:
    """Each of the two servers, with a page it serves."""
    if request.param == "ours":
        return request.getfixturevalue("ours"), "/"
    return request.getfixturevalue("theirs"), "/api/studies"


def _port(server: BaseServer) -> int:
    return server.server_address[1]


def _request(port: int, method: str, path: str, *, host: str | None = "127.0.0.1",
             body: object = None) -> tuple[int, Message, bytes]:
    """Send one raw request (``host`` None: no Host header at all); status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        data = b"" if body is None else json.dumps(body).encode()
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data or None)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _database(url: str) -> list[tuple]:
    """Everything a write through optuna-dashboard could change: the studies, their
    attributes (notes live there) and their trials."""
    rdb = optuna.storages.get_storage(url)
    return [
        (s._study_id, s.study_name, rdb.get_study_system_attrs(s._study_id),
         rdb.get_study_user_attrs(s._study_id), rdb.get_all_trials(s._study_id))
        for s in rdb.get_all_studies()
    ]


def _study_id(port: int, name: str) -> int:
    _, _, body = _request(port, "GET", "/api/studies")
    return next(s["study_id"] for s in json.loads(body)["study_summaries"]
                if s["study_name"] == name)


@pytest.mark.parametrize(("method", "path", "body"), WRITES,
                         ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_optuna_dashboard_refuses_writes(theirs, storage, method, path, body):
    port = _port(theirs)
    study = _study_id(port, PIXEL)
    trial = optuna.load_study(study_name=PIXEL, storage=storage).trials[0]._trial_id
    before = _database(storage)
    status, headers, answer = _request(port, method, path.format(study=study, trial=trial),
                                       body=body)
    assert status == 405, answer
    assert b"--allow-writes" in answer and headers["Allow"] == "GET, HEAD"
    assert _database(storage) == before


def test_optuna_dashboard_still_serves_reads(theirs):
    status, page = _get(optuna_dashboard_url(theirs))
    assert status == 200 and "<html" in page.lower()
    status, _, body = _request(_port(theirs), "GET", "/api/studies")
    assert status == 200 and PIXEL in {s["study_name"] for s in json.loads(body)["study_summaries"]}
    status, headers, body = _request(_port(theirs), "HEAD", "/api/studies")
    assert status == 200 and body == b""


def test_with_allow_writes_a_delete_goes_through(tmp_path):
    """The guard, not optuna-dashboard, is what refused the writes above; and with writes
    allowed, a foreign Host still cannot write."""
    url = f"sqlite:///{tmp_path / 'writable.db'}"
    optuna.create_study(study_name="scratch", storage=url)
    server = start_optuna_dashboard(url, "127.0.0.1", 0, allow_writes=True)
    try:
        port = _port(server)
        path = f"/api/studies/{_study_id(port, 'scratch')}"
        assert _request(port, "DELETE", path, host="evil.example")[0] == 421
        assert optuna.get_all_study_names(url) == ["scratch"]
        assert _request(port, "DELETE", path)[0] == 204
    finally:
        server.shutdown()
        server.server_close()
    assert optuna.get_all_study_names(url) == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_our_dashboard_refuses_every_other_method_with_405(ours, method):
    status, headers, body = _request(_port(ours), method, "/", body={"study": PIXEL})
    assert status == 405, body
    assert headers["Allow"] == "GET, HEAD" and b"only reads" in body


def test_our_dashboard_answers_head_without_a_body(ours):
    status, headers, body = _request(_port(ours), "HEAD", "/")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    status, page = _get(ours.url)
    assert status == 200 and PIXEL in page


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:{port}", "localhost.evil.example:{port}",
    "127.0.0.1.nip.io:{port}", "[evil.example]:{port}", "[::1", "::1", "", None,
])
def test_a_foreign_or_missing_host_is_refused(served, host):
    server, path = served
    port = _port(server)
    status, _, body = _request(port, "GET", path, host=host and host.format(port=port))
    assert status == 421
    assert b"--allowed-host" in body and len(body.splitlines()) == 1


@pytest.mark.parametrize("host", [
    "127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LocalHost", "[::1]:{port}",
    f"{ALLOWED}:{{port}}", "NAS-Box.lan", f"{socket.gethostname()}:{{port}}",
])
def test_ip_literals_localhost_own_and_allowed_names_are_served(served, host):
    server, path = served
    port = _port(server)
    assert _request(port, "GET", path, host=host.format(port=port))[0] == 200


@pytest.mark.parametrize(("header", "allowed"), [
    ("10.1.2.3:8080", True), ("[fe80::1]", True), ("localhost.", True), ("box.lan", True),
    ("10.1.2.3.evil.example", False), ("[::1]x", False), ("box.lan:80:80", False),
    ("box.lan@evil.example", False), ("evil.example/box.lan", False),
])
def test_allowed_host_rule(header, allowed):
    assert allowed_host(header, served_names("127.0.0.1", ["Box.Lan"])) is allowed


def test_an_idle_connection_is_dropped(served, monkeypatch, capsys):
    server, path = served
    assert server.RequestHandlerClass.timeout == IDLE_TIMEOUT_S
    monkeypatch.setattr(server.RequestHandlerClass, "timeout", 0.5)
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as idle:
        assert idle.recv(1) == b""  # EOF: the server closed it; a timeout here raises
    assert _request(_port(server), "GET", path)[0] == 200
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(("extras", "formats"), [((), "safetensors"),
                                                 (("onnx",), "safetensors,onnx")])
def test_export_commands_name_only_installed_formats(ours, storage, monkeypatch, extras,
                                                     formats):
    monkeypatch.setattr(_export, "installed", lambda extra: extra in extras)
    status, html = _get(_compare_url(ours, PIXEL))
    assert status == 200
    trial = _pareto_trials(storage, PIXEL)[0]
    assert f"--out exports/pixel3-trial{trial} --format {formats} --storage" in html
    assert ("onnx" in html) is ("onnx" in extras)


def test_help_lists_the_guard_options():
    result = nas("dashboard", "--help")
    assert result.exit_code == 0, result.output
    assert "--allow-writes" in result.output and "--allowed-host" in result.output


def test_an_allowed_host_that_is_not_a_name_is_a_one_line_error(storage):
    one_line_error(nas("dashboard", "--storage", storage, "--port", "0",
                       "--allowed-host", "http://box.lan:8080"),
                   "--allowed-host", "http://box.lan:8080")
