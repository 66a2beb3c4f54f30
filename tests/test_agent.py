"""Remote measurement on loopback: `nas agent` and `--hw remote:HOST:PORT`, and bad input."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import nas
from nas.cli import _agent as cli_agent
from nas.cli import app
from nas.hardware import LocalCPUTarget, _agent
from nas.hardware._agent import (
    AgentRequestError,
    AgentServer,
    decode_request,
    encode_request,
    rebuild_model,
    task_identity,
)
from nas.hardware._remote import AgentError, RemoteTarget, export_bytes
from nas.hardware._timing import torch_threads

TOKEN = "test-token"


@pytest.fixture
def start_agent() -> Iterator[Callable[..., int]]:
    """Starts agents on free loopback ports in background threads; returns the port."""
    servers: list[AgentServer] = []

    def start(**options: object) -> int:
        server = AgentServer("127.0.0.1", 0, token=TOKEN, **options)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def port(start_agent) -> int:
    return start_agent()


def raw(port: int, method: str, path: str, body: bytes | None = None, *,
        token: str | None = TOKEN, headers: dict[str, str] | None = None,
        ) -> tuple[int, dict]:
    """One request by hand, as an attacker or a broken client would send it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    all_headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    connection.request(method, path, body=body, headers={**all_headers, **(headers or {})})
    response = connection.getresponse()
    status, document = response.status, json.loads(response.read())
    connection.close()
    return status, document


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- measuring ---------------------------------------------------------------------------


def test_a_real_subnet_is_measured_remotely(supernet, task, port):
    target = RemoteTarget("127.0.0.1", port, token=TOKEN, warmup=0, repeats=3)
    config = supernet.space.smallest()
    measured = target.measure(supernet, config, task)
    assert measured.latency_ms > 0 and len(measured.durations_ms) == 3
    assert measured.latency_ms == pytest.approx(statistics.median(measured.durations_ms))
    assert measured.threads == 1
    assert measured.environment["hostname"] == socket.gethostname()
    assert measured.environment["torch"] == torch.__version__
    assert set(measured.memory) == {"rss_before_mb", "peak_rss_mb", "peak_growth_mb",
                                    "weights_bytes", "peak_activation_bytes"}
    if measured.memory["peak_rss_mb"] is not None:
        assert measured.memory["peak_rss_mb"] >= measured.memory["rss_before_mb"] > 0
    assert target.latency_ms(supernet, config, task) > 0
    # memory as --memory-budget reads it: the agent's is what local-cpu measures here
    memory = target.memory(supernet, config, task)
    assert memory.method == "measured"
    assert memory == LocalCPUTarget().memory(supernet, config, task)
    assert target.fingerprint.startswith(f"remote:{socket.gethostname()}:")
    provenance = target.provenance()
    assert provenance.method == "measured" and f"127.0.0.1:{port}" in provenance.source


def test_the_agent_rebuilds_the_same_model_from_the_envelope(supernet, task):
    config = supernet.space.sample(np.random.default_rng(3))
    subnet, weights = export_bytes(supernet.extract(config), family="hat")
    body = encode_request(subnet, task_identity(task), weights, warmup=1, repeats=2,
                          threads=None)
    request = decode_request(body)
    assert (request.warmup, request.repeats, request.threads) == (1, 2, None)
    model = rebuild_model(request.subnet, request.weights)
    src, prev = task.example_inputs()
    supernet.activate(config)
    with torch.inference_mode():
        assert torch.allclose(model(src, prev), supernet(src, prev), atol=1e-5)


def test_a_config_describing_a_bigger_model_than_its_weights_is_refused(supernet):
    """The body's limit bounds the weights, and load_subnet's checks bound the model by
    its weights, so a small request cannot describe a big model."""
    subnet, weights = export_bytes(supernet.extract(supernet.space.smallest()), family="hat")
    bigger, _ = export_bytes(supernet.extract(supernet.space.largest()), family="hat")
    with pytest.raises(AgentRequestError) as err:
        rebuild_model(bigger, weights)
    assert one_line(err).startswith("model.safetensors does not match config.json: ")


# -- bad input ---------------------------------------------------------------------------


def test_a_wrong_token_is_refused_in_one_line(port):
    with pytest.raises(AgentError) as err:
        _ = RemoteTarget("127.0.0.1", port, token="wrong").fingerprint
    assert f"agent at 127.0.0.1:{port} refused the token; set NAS_AGENT_TOKEN" in one_line(err)
    for token in ("wrong", None):
        status, document = raw(port, "GET", "/health", token=token)
        assert status == 401 and "token" in document["error"]
    assert raw(port, "POST", "/measure", b"x" * 100, token="wrong")[0] == 401


def test_no_token_at_all_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NAS_AGENT_TOKEN", raising=False)
    with pytest.raises(ValueError, match="no token for the agent at h:1; set NAS_AGENT_TOKEN"):
        RemoteTarget("h", 1)


def test_an_oversized_payload_is_refused_before_its_body_is_read(supernet, task,
                                                                 start_agent):
    port = start_agent(max_bytes=1000)
    # Headers only: the agent answers without waiting for the gigabyte it was promised.
    status, document = raw(port, "POST", "/measure",
                           headers={"Content-Length": str(10**9)})
    assert status == 413 and "exceeds the agent's limit of 1000 bytes" in document["error"]
    target = RemoteTarget("127.0.0.1", port, token=TOKEN)
    with pytest.raises(AgentError) as err:
        target.measure(supernet, supernet.space.smallest(), task)
    assert "exceeds the limit of the agent" in one_line(err)


def _envelope(header: object, weights: bytes = b"w") -> bytes:
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "big") + encoded + weights


GOOD_HEADER = {"protocol": "nas-agent/1", "subnet": {}, "task": {"name": "g2p-cmudict"},
               "timing": {"warmup": 0, "repeats": 1, "threads": None}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "lacks the 8-byte header length"),
        ((2**40).to_bytes(8, "big") + b"{}", "header length 1099511627776 exceeds"),
        (b"\x00" * 7 + b"\x05{not}", "header is not UTF-8 JSON"),
        (_envelope(["a list"]), "\"protocol\": \"nas-agent/1\""),
        (_envelope({**GOOD_HEADER, "timing": {"warmup": 0, "repeats": 0}}),
         "timing.repeats must be from 1 to 10000, got 0"),
        (_envelope({**GOOD_HEADER, "task": "g2p"}), "'task' must be a dict"),
        (_envelope(GOOD_HEADER, b""), "no model.safetensors after the header"),
        (_envelope({**GOOD_HEADER, "task": {"name": "nope"}}), "unknown task 'nope'"),
    ],
    ids=["empty", "huge-header", "not-json", "not-object", "bad-timing", "bad-task",
         "no-weights", "unknown-task"],
)
def test_a_malformed_body_gets_400_and_the_agent_keeps_serving(port, body, message):
    status, document = raw(port, "POST", "/measure", body)
    assert status == 400 and message in document["error"], document
    assert raw(port, "GET", "/health")[0] == 200


def _timing(**timing: object) -> bytes:
    return _envelope({**GOOD_HEADER, "timing": {"warmup": 0, "repeats": 1, "threads": None,
                                                **timing}})


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"threads": 1_000_000}, "usable core(s)), got 1000000"),
        ({"threads": 0}, "timing.threads must be from 1 to "),
        ({"threads": "x"}, "timing.threads must be an integer from 1 to "),
        ({"threads": True}, "timing.threads must be an integer from 1 to "),
        ({"repeats": 10**12}, "timing.repeats must be from 1 to 10000"),
        ({"repeats": None}, "timing.repeats must be an integer from 1 to 10000, got None"),
        ({"warmup": -1}, "timing.warmup must be from 0 to 10000, got -1"),
        ({"warmup": 10**6}, "timing.warmup must be from 0 to 10000"),
    ],
    ids=["threads-1e6", "threads-0", "threads-text", "threads-bool", "repeats-huge",
         "repeats-null", "warmup-negative", "warmup-huge"],
)
def test_timing_out_of_bounds_gets_400_and_the_agent_keeps_serving(port, timing, message):
    status, document = raw(port, "POST", "/measure", _timing(**timing))
    assert status == 400 and message in document["error"], document
    assert raw(port, "GET", "/health")[0] == 200


def test_thread_counts_are_bounded_wherever_they_reach_torch():
    for threads in (0, 10**6, "2"):
        with pytest.raises(ValueError, match="threads must be"):
            AgentServer(token=TOKEN, threads=threads)
        with pytest.raises(ValueError, match="threads must be"):
            with torch_threads(threads):
                pass
    for options in ({"threads": 0}, {"threads": "2"}, {"repeats": 10**9}, {"warmup": -1}):
        with pytest.raises(ValueError) as err:
            RemoteTarget("h", 1, token=TOKEN, **options)
        assert next(iter(options)) in one_line(err)


def test_a_negative_dimension_or_a_list_family_gets_400_not_500(supernet, task, port):
    subnet, weights = export_bytes(supernet.extract(supernet.space.smallest()), family="hat")
    negative = json.loads(json.dumps(subnet))
    negative["subnet_config"]["config"]["encoder.0.ffn_dim"] = -1
    cases = [
        (negative, "config.json: subnet_config does not build a model: Trying to create "
                   "tensor with negative dimension -1"),
        ({**subnet, "family": ["hat"]}, "config.json: subnet family must be a name (a "
                                        "string), got ['hat']; known: "),
        ({**subnet, "subnet_config": None}, "config.json: subnet_config must be a JSON object"),
    ]
    for document, message in cases:
        body = encode_request(document, task_identity(task), weights, warmup=0, repeats=1,
                              threads=None)
        status, answer = raw(port, "POST", "/measure", body)
        assert status == 400 and answer["error"].startswith(message), answer
    assert raw(port, "GET", "/health")[0] == 200


def _drop(port: int, *, sent: int, declared: int, reset: bool) -> None:
    """A client that sends ``sent`` of ``declared`` body bytes and goes away, closing
    politely or (``reset``) with a TCP reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(f"POST /measure HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n"
                       f"Content-Length: {declared}\r\n\r\n".encode() + b"x" * sent)
        if reset:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            time.sleep(0.1)  # let the agent start reading the body first


def _agent_records(caplog, start: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records[start:] if r.name == _agent.logger.name]


@pytest.mark.parametrize(("sent", "reset"), [(500, False), (500, True), (1000, True)],
                         ids=["half-body-close", "half-body-reset", "reset-before-answer"])
def test_a_client_that_drops_costs_one_log_line_and_no_traceback(port, caplog, capfd, sent,
                                                                  reset):
    caplog.set_level(logging.INFO, logger=_agent.logger.name)
    start = len(caplog.records)
    _drop(port, sent=sent, declared=1000, reset=reset)
    deadline = time.monotonic() + 10
    while not _agent_records(caplog, start) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert raw(port, "GET", "/health")[0] == 200  # still serving
    records = _agent_records(caplog, start)
    dropped = [r for r in records if "/health" not in r.getMessage()]
    assert len(dropped) == 1, [r.getMessage() for r in records]
    assert dropped[0].levelno <= logging.WARNING and dropped[0].exc_info is None
    assert "Traceback" not in capfd.readouterr().err


def test_malformed_weights_and_config_get_400(supernet, task, port):
    subnet, weights = export_bytes(supernet.extract(supernet.space.smallest()), family="hat")
    identity = task_identity(task)
    cases = [
        (subnet, b"not safetensors", "model.safetensors is not a readable safetensors"),
        ({**subnet, "family": "nope"}, weights, "unknown subnet family 'nope'"),
        ({**subnet, "subnet_config": {"bogus": 1}}, weights, "does not build a model"),
    ]
    for document, blob, message in cases:
        body = encode_request(document, identity, blob, warmup=0, repeats=1, threads=None)
        status, answer = raw(port, "POST", "/measure", body)
        assert status == 400 and message in answer["error"], answer
        assert "/tmp" not in answer["error"]
    other = {**identity, "inputs_sha256": "0" * 64}
    body = encode_request(subnet, other, weights, warmup=0, repeats=1, threads=None)
    status, answer = raw(port, "POST", "/measure", body)
    assert status == 400 and "differs on the agent" in answer["error"]


def test_unknown_endpoints_and_missing_length(port):
    assert raw(port, "GET", "/nope")[0] == 404
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("POST", "/measure")
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.endheaders()
    assert connection.getresponse().status == 411
    connection.close()


def test_an_unreachable_agent_fails_fast_in_one_line():
    closed = free_port()
    start = time.perf_counter()
    with pytest.raises(AgentError) as err:
        _ = RemoteTarget("127.0.0.1", closed, token=TOKEN, connect_timeout=1).fingerprint
    assert f"cannot reach the agent at 127.0.0.1:{closed}" in one_line(err)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = RemoteTarget("127.0.0.1", silent.getsockname()[1], token=TOKEN,
                              read_timeout=0.3)
        with pytest.raises(AgentError) as err:
            _ = target.environment
    assert "did not answer within 0.3 s" in one_line(err)
    assert time.perf_counter() - start < 5


# -- resolution by name and the CLI ------------------------------------------------------


def test_get_hardware_resolves_remote_targets(port, monkeypatch):
    monkeypatch.setenv("NAS_AGENT_TOKEN", TOKEN)
    target = nas.get_hardware(f"remote:127.0.0.1:{port}")
    assert isinstance(target, RemoteTarget) and target.name == f"remote:127.0.0.1:{port}"
    assert target.environment["threads"] == 1
    assert isinstance(nas.get_hardware("remote:[::1]:9"), RemoteTarget)
    for spec in ("remote:nonsense", "remote::80", "remote:host:0", "remote:host:http"):
        with pytest.raises(ValueError) as err:
            nas.get_hardware(spec)
        assert one_line(err) == f"remote target must be remote:HOST:PORT, got {spec!r}"


def test_cli_agent_on_a_taken_port_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["agent", "--port", str(port), "--token", "t"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], result.output


def test_cli_and_agent_agree_on_names_and_defaults():
    assert cli_agent.TOKEN_ENV == _agent.TOKEN_ENV
    assert _agent.DEFAULT_MAX_BYTES == 256 * 2**20  # the CLI's help says 256 MiB


def test_cli_search_rejects_a_malformed_remote_target_before_loading_anything():
    result = CliRunner().invoke(app, ["search", "--supernet", "hat", "--hw", "remote:nonsense",
                                      "--budget", "50ms"])
    assert result.exit_code == 2
    assert "remote target must be remote:HOST:PORT, got 'remote:nonsense'" in result.output
