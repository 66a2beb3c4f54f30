"""The measurement agent: a small HTTP server that times exported subnets on its device.

``nas agent --port P`` runs this on the device (a Raspberry Pi, a phone board, a
server); ``--hw remote:HOST:PORT`` (:class:`~nas.hardware.RemoteTarget`) sends it
subnets and gets their latency and memory back. Standard library only on the wire.

Protocol ``nas-agent/1`` (HTTP/1.0, one request per connection). Every request carries
``Authorization: Bearer TOKEN``; a missing or wrong token gets 401 before anything else
is read. Every answer is JSON; a refusal is ``{"error": "one line"}`` with status 400
(malformed request), 401 (token), 404 (path), 411 (no Content-Length), 413 (over
``--max-bytes``) or 500 (the agent failed). A client that goes away mid-request (or
before reading the answer) costs one log line, never a traceback.

``GET /health`` answers ``{"protocol", "environment", "max_bytes"}``; ``environment``
names the device (hostname, CPU model and details, CPU count, default thread count,
torch, Python and platform versions).

``POST /measure`` takes a binary envelope (Content-Length required and checked against
``--max-bytes`` before the body is read)::

    8 bytes   N, the header's length in bytes, unsigned big-endian (N <= 1 MiB)
    N bytes   the header, UTF-8 JSON:
              {"protocol": "nas-agent/1",
               "subnet": <the export's config.json document>,
               "task": {"name": "g2p-cmudict", "workload": {...}, "inputs_sha256": "..."},
               "timing": {"warmup": 3, "repeats": 10, "threads": 1 or null}}
    the rest  the export's model.safetensors, byte for byte

and answers ``{"latency_ms", "durations_ms", "threads", "memory", "environment"}``:
the median and every timed duration of the task's latency probe (batch 1), the
intra-op thread count used (``null`` in the request means the agent's ``--threads``)
and the memory figures below.

``warmup`` is 0 to 10 000, ``repeats`` 1 to 10 000 (:data:`nas._limits.MAX_REPEATS`)
and ``threads`` 1 to the agent's usable cores (more only slows a measurement down, and a
huge count crashes OpenMP), anything else a 400.

The agent rebuilds the model with :func:`nas.load_subnet`, from the two export files:
safetensors weights and a registered dense builder, so nothing received is ever
unpickled. Its checks come before any allocation: the config must describe exactly the
weights received (built on torch's ``meta`` device first, compared with the weights'
header), so a request's model never needs much more memory than its body, which
``--max-bytes`` bounds; a config that does not is a 400.
The probe comes from the agent's own copy of the task, found by name in
:data:`nas.TASKS`; the request carries the client's workload and a digest of its probe
inputs, and a task that differs on the two machines is refused rather than timed on
other data.

``memory`` (MiB, from ``/proc/self/status``; ``null`` where unavailable):
``rss_before_mb`` is the agent's resident set before the model is built;
``peak_rss_mb`` the peak resident set while the model is built, loaded and timed; and
``peak_growth_mb`` their difference, what this subnet needed at its peak. The peak is
reset through ``/proc/self/clear_refs`` first; where that is refused the peak covers the
agent's whole life and ``peak_growth_mb`` is ``null``. Requests are read in parallel
but measured one at a time (the thread count and the peak are process-wide).
``weights_bytes`` and ``peak_activation_bytes`` are
:func:`~nas.hardware._memory.measure_memory`'s figures for the model (bytes; the
activation peak of one more run of the probe, after timing), what ``--memory-budget``
reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas._limits import MAX_REPEATS, check_count, check_threads
from nas._task import Task, get_task
from nas.hardware._memory import peak_activation_bytes, weights_bytes
from nas.hardware._timing import cpu_details, cpu_model, time_ms, torch_threads
from nas.supernets._export import CONFIG, WEIGHTS, load_subnet

logger = logging.getLogger(__name__)

PROTOCOL = "nas-agent/1"
TOKEN_ENV = "NAS_AGENT_TOKEN"
DEFAULT_MAX_BYTES = 256 * 2**20
MAX_HEADER_BYTES = 2**20
LENGTH_BYTES = 8


class AgentRequestError(ValueError):
    """A request the agent refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MeasureRequest:
    """A decoded ``POST /measure`` body: what to build, with which task, how to time it."""

    subnet: dict[str, Any]
    task: dict[str, Any]
    warmup: int
    repeats: int
    threads: int | None
    weights: bytes


# -- the envelope (both sides) -----------------------------------------------------------


def encode_request(
    subnet: dict[str, Any],
    task: dict[str, Any],
    weights: bytes,
    *,
    warmup: int,
    repeats: int,
    threads: int | None,
) -> bytes:
    """The ``POST /measure`` body: length-prefixed JSON header, then the raw weights."""
    header = json.dumps({
        "protocol": PROTOCOL,
        "subnet": subnet,
        "task": task,
        "timing": {"warmup": warmup, "repeats": repeats, "threads": threads},
    }).encode("utf-8")
    return len(header).to_bytes(LENGTH_BYTES, "big") + header + weights


def decode_request(body: bytes) -> MeasureRequest:
    """Parse and validate a ``POST /measure`` body without trusting any of it.

    Raises:
        AgentRequestError: the body is not a well-formed envelope (status 400).
    """
    if len(body) < LENGTH_BYTES:
        raise AgentRequestError(f"body of {len(body)} bytes lacks the {LENGTH_BYTES}-byte "
                                "header length")
    size = int.from_bytes(body[:LENGTH_BYTES], "big")
    end = LENGTH_BYTES + size
    if size > MAX_HEADER_BYTES or end > len(body):
        raise AgentRequestError(f"header length {size} exceeds the body or the "
                                f"{MAX_HEADER_BYTES}-byte limit")
    try:
        header = json.loads(body[LENGTH_BYTES:end].decode("utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise AgentRequestError(f"header is not UTF-8 JSON: {err}") from None
    except RecursionError:
        raise AgentRequestError("header is not UTF-8 JSON: nested too deeply") from None
    if not isinstance(header, dict) or header.get("protocol") != PROTOCOL:
        raise AgentRequestError(f"header must be a JSON object with \"protocol\": "
                                f"\"{PROTOCOL}\"")
    subnet, task, timing = (_field(header, key, dict) for key in ("subnet", "task", "timing"))
    warmup, repeats, threads = _timing(timing)
    if end == len(body):
        raise AgentRequestError(f"no {WEIGHTS} after the header")
    return MeasureRequest(subnet, task, warmup, repeats, threads, body[end:])


def _timing(timing: dict[str, Any]) -> tuple[int, int, int | None]:
    """``warmup``, ``repeats`` and ``threads`` (``None``: the agent's default), within
    the bounds of :mod:`nas._limits`: one request must not crash or occupy the agent."""
    try:
        warmup = check_count(timing.get("warmup"), name="timing.warmup", low=0,
                             high=MAX_REPEATS)
        repeats = check_count(timing.get("repeats"), name="timing.repeats", low=1,
                              high=MAX_REPEATS)
        threads = timing.get("threads")
        if threads is not None:
            threads = check_threads(threads, name="timing.threads")
    except ValueError as err:
        raise AgentRequestError(str(err)) from None
    return warmup, repeats, threads


def task_identity(task: Task) -> dict[str, Any]:
    """What must agree between client and agent for the probe to be the same inference:
    the task's name, its workload and a digest of its probe inputs."""
    digest = hashlib.sha256()
    for tensor in task.example_inputs():
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return {"name": task.name, "workload": dataclasses.asdict(task.workload()),
            "inputs_sha256": digest.hexdigest()}


def _field(document: dict[str, Any], key: str, kind: type) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AgentRequestError(f"header field {key!r} must be a {kind.__name__}, "
                                f"got {value!r}"[:200])
    return value


# -- measuring (agent side) --------------------------------------------------------------


def rebuild_model(subnet: dict[str, Any], weights: bytes) -> nn.Module:
    """The dense model of an export's two files, rebuilt by :func:`load_subnet`
    (safetensors and a registered builder, never pickle), in eval mode. Its checks
    bound the model by ``weights``, whose size the request's limit bounds.

    Raises:
        AgentRequestError: the files do not rebuild a model.
    """
    with tempfile.TemporaryDirectory(prefix="nas-agent-") as tmp:
        folder = Path(tmp)
        (folder / CONFIG).write_text(json.dumps(subnet))
        (folder / WEIGHTS).write_bytes(weights)
        try:
            return load_subnet(folder)
        except (ValueError, FileNotFoundError) as err:
            # The messages name the temporary files; the client knows them by name only.
            raise AgentRequestError(str(err).replace(f"{folder}{os.sep}", "")) from None


@functools.cache
def _agent_task(name: str) -> Task:
    """The agent's own copy of task ``name``, built once (building reads its data)."""
    return get_task(name)


def _probe_task(identity: dict[str, Any]) -> Task:
    """The agent's task named in the request, refused if it differs from the client's."""
    name = identity.get("name")
    if not isinstance(name, str):
        raise AgentRequestError(f"task must name a registered task, got {name!r}"[:200])
    task = _agent_task(name)
    mine = task_identity(task)
    if mine != identity:
        raise AgentRequestError(
            f"task {name!r} differs on the agent (workload {mine['workload']}, inputs "
            f"{mine['inputs_sha256'][:12]}); install the same task data on both machines"
        )
    return task


def measure(request: MeasureRequest, *, default_threads: int) -> dict[str, Any]:
    """Rebuild the subnet, time its probe and record memory: the ``/measure`` answer
    without ``environment``. Not thread safe (process-wide thread count and peak)."""
    task = _probe_task(request.task)
    threads = request.threads or default_threads
    reset = _reset_peak_rss()
    before = _status_mib("VmRSS")
    model = rebuild_model(request.subnet, request.weights)
    probe = task.latency_probe(model)
    with torch_threads(threads), torch.inference_mode():
        durations = time_ms(probe, warmup=request.warmup, repeats=request.repeats)
    peak = _status_mib("VmHWM")
    growth = peak - before if reset and peak is not None and before is not None else None
    with torch.inference_mode():
        activations = peak_activation_bytes(probe)
    return {
        "latency_ms": statistics.median(durations),
        "durations_ms": durations,
        "threads": threads,
        "memory": {"rss_before_mb": before, "peak_rss_mb": peak, "peak_growth_mb": growth,
                   "weights_bytes": weights_bytes(model),
                   "peak_activation_bytes": activations},
    }


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set (VmHWM) of this process; False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _status_mib(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MiB, or None off Linux."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    return None


@functools.cache
def _device() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_details": cpu_details(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def agent_environment(threads: int) -> dict[str, Any]:
    """What identifies the measuring device: figures are comparable only where it agrees."""
    return {**_device(), "threads": threads}


# -- the server --------------------------------------------------------------------------


class AgentServer(ThreadingHTTPServer):
    """The agent: answers ``/health`` and ``/measure`` (see the module docstring).

    Binding happens in the constructor (``port`` 0 picks a free one, see
    ``server_address``); ``serve_forever()`` serves until ``shutdown()``.

    Args:
        host: address to bind; loopback by default, see :func:`is_loopback`.
        port: TCP port.
        token: the shared secret clients must send.
        max_bytes: largest request body accepted (which bounds the model too).
        threads: intra-op threads when a request does not choose (1 to the usable cores).

    Raises:
        ValueError: an empty token, a non-positive limit or a thread count out of range.
        OSError: the address cannot be bound (port taken, unknown host).
    """

    daemon_threads = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        threads: int = 1,
    ) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.token = token
        self.max_bytes = max_bytes
        self.threads = check_threads(threads)
        self.measure_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def health(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "environment": agent_environment(self.threads),
                "max_bytes": self.max_bytes}

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line for a client that went away (reset or closed the connection
        while its request was read); socketserver would print a traceback to stderr."""
        error = sys.exception()
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.info("%s went away: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (``localhost`` included)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = PROTOCOL
    timeout = 120  # seconds a client may stall mid-request before the connection drops

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        if self._route("/health"):
            self._answer(200, self.server.health())

    def do_POST(self) -> None:
        if not self._route("/measure"):
            return
        try:
            request = decode_request(self._read_body())
            with self.server.measure_lock:
                result = measure(request, default_threads=self.server.threads)
        except AgentRequestError as err:
            self._refuse(err.status, str(err))
            return
        except ValueError as err:  # unknown task or family, from the registries
            self._refuse(400, str(err))
            return
        except Exception as err:  # a bug or a model that fails to run: tell the client
            logger.exception("measurement failed")
            self._refuse(500, f"the agent failed: {type(err).__name__}: {err}")
            return
        self._answer(200, {**result, "environment": agent_environment(result["threads"])})

    def _route(self, path: str) -> bool:
        """Check path and token before anything else is read; refuse and say so."""
        if self.path != path:
            self._refuse(404, f"no such endpoint {self.path!r}; use /health or /measure")
            return False
        given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            self._refuse(401, "wrong or missing token")
            return False
        return True

    def _read_body(self) -> bytes:
        """The body, once its declared length is known to be within the limit."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise AgentRequestError("Content-Length is required", 411)
        try:
            length = int(declared)
        except ValueError:
            raise AgentRequestError(f"Content-Length {declared!r} is not a number") from None
        if length < 0:
            raise AgentRequestError(f"Content-Length {length} is negative")
        if length > self.server.max_bytes:
            raise AgentRequestError(f"payload of {length} bytes exceeds the agent's limit of "
                                    f"{self.server.max_bytes} bytes (--max-bytes)", 413)
        try:
            body = self.rfile.read(length)
        except (ConnectionError, TimeoutError) as err:  # reset, or stalled past the timeout
            raise AgentRequestError(f"connection lost while reading the {length}-byte "
                                    f"body: {err}") from None
        if len(body) != length:
            raise AgentRequestError(f"body ended after {len(body)} of {length} bytes")
        return body

    def _refuse(self, status: int, message: str) -> None:
        lines = message.strip().splitlines() or [f"status {status}"]
        self._answer(status, {"error": lines[0]})

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        """Send the answer and log the exchange in one line, after sending: a client
        that has gone away (it dropped mid-body, or did not wait) is that line's news."""
        body = json.dumps(document).encode("utf-8")
        try:
            self.send_response_only(status)  # send_response would log before sending
            self.send_header("Server", self.version_string())
            self.send_header("Date", self.date_time_string())
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)
        except (ConnectionError, TimeoutError) as err:
            self.close_connection = True
            self.log_message('"%s" %d not delivered, the client went away: %s',
                             self.requestline, status, err)
            return
        self.log_request(status)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)
