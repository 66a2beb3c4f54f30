"""The measurement agent: a small HTTP server that times exported subnets on its device.

``nas agent --port P`` runs this on the device (a Raspberry Pi, a phone board, a
server); ``--hw remote:HOST:PORT`` (:class:`~nas.hardware.RemoteTarget`) sends it
subnets and gets their latency and memory back. Standard library only on the wire.

Protocol ``nas-agent/1`` (HTTP/1.0, one request per connection). Every request carries
``Authorization: Bearer TOKEN``; a missing or wrong token gets 401 before anything else
is read. Every answer is JSON; a refusal is ``{"error": "one line"}`` with status 400
(malformed request), 401 (token), 404 (path), 411 (no Content-Length), 413 (over
``--max-bytes``) or 500 (the agent failed).

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

The agent rebuilds the model as :func:`nas.load_subnet` does, from the two export
files: safetensors weights and a registered dense builder, so nothing received is ever
unpickled. The builder runs first on torch's ``meta`` device, and a ``subnet_config``
whose weights would exceed ``--max-bytes`` is refused before any memory is allocated.
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
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas._supernet import SUBNET_BUILDERS
from nas._task import Task, get_task
from nas.hardware._timing import cpu_details, cpu_model, time_ms, torch_threads
from nas.supernets._export import CONFIG, WEIGHTS, load_subnet, read_subnet_config

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
    if not isinstance(header, dict) or header.get("protocol") != PROTOCOL:
        raise AgentRequestError(f"header must be a JSON object with \"protocol\": "
                                f"\"{PROTOCOL}\"")
    subnet, task, timing = (_field(header, key, dict) for key in ("subnet", "task", "timing"))
    warmup, repeats = _field(timing, "warmup", int), _field(timing, "repeats", int)
    threads = timing.get("threads")
    if warmup < 0 or repeats < 1 or not (threads is None or _is_int(threads) and threads >= 1):
        raise AgentRequestError(f"timing needs warmup >= 0, repeats >= 1 and threads >= 1 "
                                f"or null, got {timing}")
    if end == len(body):
        raise AgentRequestError(f"no {WEIGHTS} after the header")
    return MeasureRequest(subnet, task, warmup, repeats, threads, body[end:])


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- measuring (agent side) --------------------------------------------------------------


def rebuild_model(subnet: dict[str, Any], weights: bytes, *, max_bytes: int) -> nn.Module:
    """The dense model of an export's two files, rebuilt exactly as :func:`load_subnet`
    does (safetensors and a registered builder, never pickle), in eval mode.

    Raises:
        AgentRequestError: the files do not rebuild a model, or it would hold more than
            ``max_bytes`` of weights.
    """
    with tempfile.TemporaryDirectory(prefix="nas-agent-") as tmp:
        folder = Path(tmp)
        (folder / CONFIG).write_text(json.dumps(subnet))
        (folder / WEIGHTS).write_bytes(weights)
        try:
            _check_planned_bytes(read_subnet_config(folder), max_bytes)
            return load_subnet(folder)
        except (ValueError, FileNotFoundError) as err:
            # The messages name the temporary files; the client knows them by name only.
            raise AgentRequestError(str(err).replace(f"{folder}{os.sep}", "")) from None


def _check_planned_bytes(document: dict[str, Any], max_bytes: int) -> None:
    """Build on the ``meta`` device (no memory) and refuse a config whose weights would
    exceed ``max_bytes``: a tiny request must not make the agent allocate gigabytes."""
    builder = SUBNET_BUILDERS.entry(document["family"]).factory
    config = document["subnet_config"]
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG}: subnet_config must be an object, got {config!r}"[:200])
    try:
        with torch.device("meta"):
            planned = builder(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{CONFIG}: subnet_config does not build a model: {err}") from None
    size = sum(t.numel() * t.element_size() for t in planned.state_dict().values())
    if size > max_bytes:
        raise ValueError(f"{CONFIG}: subnet_config describes {size} bytes of weights, over "
                         f"the agent's limit of {max_bytes} bytes")


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


def measure(request: MeasureRequest, *, default_threads: int, max_bytes: int) -> dict[str, Any]:
    """Rebuild the subnet, time its probe and record memory: the ``/measure`` answer
    without ``environment``. Not thread safe (process-wide thread count and peak)."""
    task = _probe_task(request.task)
    threads = request.threads or default_threads
    reset = _reset_peak_rss()
    before = _status_mib("VmRSS")
    model = rebuild_model(request.subnet, request.weights, max_bytes=max_bytes)
    probe = task.latency_probe(model)
    with torch_threads(threads), torch.inference_mode():
        durations = time_ms(probe, warmup=request.warmup, repeats=request.repeats)
    peak = _status_mib("VmHWM")
    growth = peak - before if reset and peak is not None and before is not None else None
    return {
        "latency_ms": statistics.median(durations),
        "durations_ms": durations,
        "threads": threads,
        "memory": {"rss_before_mb": before, "peak_rss_mb": peak, "peak_growth_mb": growth},
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
        max_bytes: largest request body, and largest model, accepted.
        threads: intra-op threads when a request does not choose.

    Raises:
        ValueError: an empty token or a non-positive limit or thread count.
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
        if max_bytes < 1 or threads < 1:
            raise ValueError(f"need max_bytes >= 1 and threads >= 1, got {max_bytes=}, "
                             f"{threads=}")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.token = token
        self.max_bytes = max_bytes
        self.threads = threads
        self.measure_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def health(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "environment": agent_environment(self.threads),
                "max_bytes": self.max_bytes}


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
                result = measure(request, default_threads=self.server.threads,
                                 max_bytes=self.server.max_bytes)
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
        body = self.rfile.read(length)
        if len(body) != length:
            raise AgentRequestError(f"body ended after {len(body)} of {length} bytes")
        return body

    def _refuse(self, status: int, message: str) -> None:
        lines = message.strip().splitlines() or [f"status {status}"]
        self._answer(status, {"error": lines[0]})

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)
