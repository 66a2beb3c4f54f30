"""The ``remote:HOST:PORT`` target: latency measured on a device running ``nas agent``.

The client side of the protocol described in :mod:`nas.hardware._agent`.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nas._hardware import HARDWARE_SCHEMES, HardwareTarget, MemoryEstimate, Provenance
from nas._limits import MAX_REPEATS, check_count
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task
from nas.hardware._agent import TOKEN_ENV, encode_request, task_identity
from nas.hardware._memory import kv_cache_bytes
from nas.supernets._export import CONFIG, WEIGHTS, save_subnet

SPEC_PREFIX = "remote:"


class AgentError(ValueError, ConnectionError):
    """A failed exchange with an agent, in one line naming its address.

    A ``ValueError`` so that the CLI reports it as a one-line error (a wrong token or
    address is the user's to fix); a ``ConnectionError`` so that callers may retry.
    """


@dataclass(frozen=True)
class RemoteMeasurement:
    """One subnet measured by an agent.

    ``latency_ms`` is the median of ``durations_ms`` (every timed run, milliseconds);
    ``memory`` holds ``rss_before_mb``, ``peak_rss_mb`` and ``peak_growth_mb`` (MiB,
    ``None`` where the device cannot tell; see :mod:`nas.hardware._agent`);
    ``environment`` names the device.
    """

    latency_ms: float
    durations_ms: tuple[float, ...]
    threads: int
    memory: dict[str, float | None]
    environment: dict[str, Any]


class RemoteTarget(HardwareTarget):
    """Measures a subnet on another machine: extract it dense here, send its export
    (``config.json`` + ``model.safetensors``) to the agent, get the figures back.

    The agent's environment is fetched from ``/health`` once and cached; it is part of
    the fingerprint and the provenance, so studies never mix devices. Thread safe as
    far as the agent is: it measures one request at a time.

    Args:
        host: where ``nas agent`` listens.
        port: the agent's port.
        token: the agent's token; ``$NAS_AGENT_TOKEN`` when omitted.
        threads: intra-op threads on the device; ``None`` takes the agent's ``--threads``.
            The agent refuses more than its usable cores (this machine's do not matter).
        warmup: untimed runs first (0 to :data:`nas._limits.MAX_REPEATS`).
        repeats: timed runs; the median is the latency (1 to ``MAX_REPEATS``).
        connect_timeout: seconds to wait for the connection.
        read_timeout: seconds to wait for each read of the answer (a measurement of a
            big subnet on a slow device takes long).

    Raises:
        ValueError: no token, or an invalid option.
    """

    measures = True

    description = "a device running `nas agent`, measured there (batch 1, fixed thread count)"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        threads: int | None = None,
        warmup: int = 3,
        repeats: int = 10,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
    ) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be a positive integer (at most the agent's "
                             f"usable cores) or None for the agent's --threads, got "
                             f"{threads!r}"[:200])
        warmup = check_count(warmup, name="warmup", low=0, high=MAX_REPEATS)
        repeats = check_count(repeats, name="repeats", low=1, high=MAX_REPEATS)
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError(f"timeouts must be > 0 s, got {connect_timeout=}, {read_timeout=}")
        self.host, self.port = host, port
        self.name = f"{SPEC_PREFIX}{host}:{port}"
        self.address = f"{host}:{port}"
        self._token = token or os.environ.get(TOKEN_ENV, "")
        if not self._token:
            raise ValueError(f"no token for the agent at {self.address}; set {TOKEN_ENV} to "
                             "the token the agent printed")
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._health: dict[str, Any] | None = None
        self._last: tuple[tuple[int, str], RemoteMeasurement] | None = None

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> RemoteTarget:
        """The target of ``remote:HOST:PORT`` (``remote:[::1]:PORT`` for IPv6)."""
        host, _, port = spec.removeprefix(SPEC_PREFIX).rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not spec.startswith(SPEC_PREFIX) or not host or not port.isdigit() \
                or not 0 < int(port) < 65536:
            raise ValueError(f"remote target must be remote:HOST:PORT, got {spec!r}")
        return cls(host, int(port), **kwargs)

    # -- the agent -----------------------------------------------------------------------

    @property
    def environment(self) -> dict[str, Any]:
        """The agent's device: hostname, CPU, thread count, versions (fetched once)."""
        return dict(self._agent_health()["environment"])

    def _agent_health(self) -> dict[str, Any]:
        if self._health is None:
            health = self._exchange("GET", "/health")
            if not isinstance(health.get("environment"), dict) \
                    or not isinstance(health.get("max_bytes"), int):
                raise AgentError(f"{self.address} answered /health without an environment; "
                                 "is it a nas agent?")
            self._health = health
        return self._health

    def measure(self, supernet: Supernet, config: Config, task: Task) -> RemoteMeasurement:
        """Latency, timed durations and memory of subnet ``config`` on the agent's device.

        Raises:
            AgentError: the agent is unreachable, refuses the token or the subnet, or
                does not answer within the timeouts.
        """
        limit = self._agent_health()["max_bytes"]
        model = supernet.extract(supernet.space.config(config)).to("cpu").eval()
        subnet, weights = export_bytes(model, family=supernet.family)
        body = encode_request(subnet, task_identity(task), weights, warmup=self.warmup,
                              repeats=self.repeats, threads=self.threads)
        if len(body) > limit:
            raise AgentError(f"subnet of {len(body)} bytes exceeds the limit of the agent at "
                             f"{self.address} ({limit} bytes; start it with a larger "
                             "--max-bytes)")
        return self._measurement(self._exchange("POST", "/measure", body))

    def _measurement(self, answer: dict[str, Any]) -> RemoteMeasurement:
        try:
            return RemoteMeasurement(
                latency_ms=float(answer["latency_ms"]),
                durations_ms=tuple(float(d) for d in answer["durations_ms"]),
                threads=int(answer["threads"]),
                memory=dict(answer["memory"]),
                environment=dict(answer["environment"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise AgentError(f"agent at {self.address} sent a malformed answer "
                             f"({type(err).__name__}: {err})") from None

    def _exchange(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        """One request; every failure becomes an :class:`AgentError` naming the address.

        ``http.client`` rather than ``urllib``: it lets the connect and read timeouts
        differ (a dead host should fail in seconds, a slow measurement may take minutes).
        """
        connection = http.client.HTTPConnection(self.host, self.port,
                                                timeout=self.connect_timeout)
        try:
            self._connect(connection)
            headers = {"Authorization": f"Bearer {self._token}"}
            if body is not None:
                headers["Content-Type"] = "application/octet-stream"
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                status, payload = response.status, response.read()
            except TimeoutError:
                raise AgentError(f"agent at {self.address} did not answer within "
                                 f"{self.read_timeout:g} s") from None
            except (OSError, http.client.HTTPException) as err:
                raise AgentError(f"lost the connection to the agent at {self.address}: "
                                 f"{err or type(err).__name__}") from None
        finally:
            connection.close()
        return self._answer(status, payload)

    def _connect(self, connection: http.client.HTTPConnection) -> None:
        try:
            connection.connect()
        except TimeoutError:
            raise AgentError(f"could not connect to the agent at {self.address} within "
                             f"{self.connect_timeout:g} s") from None
        except OSError as err:
            raise AgentError(f"cannot reach the agent at {self.address}: "
                             f"{err.strerror or err}; is `nas agent` running there?") from None
        assert connection.sock is not None
        connection.sock.settimeout(self.read_timeout)

    def _answer(self, status: int, payload: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise AgentError(f"{self.address} answered {status} without a JSON object; is "
                             "it a nas agent?")
        if status == 401:
            raise AgentError(f"agent at {self.address} refused the token; set {TOKEN_ENV} to "
                             "the token the agent printed")
        if status != 200:
            raise AgentError(f"agent at {self.address} refused the request ({status}): "
                             f"{answer.get('error', 'no reason given')}")
        return answer

    # -- HardwareTarget ------------------------------------------------------------------

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        measurement = self.measure(supernet, config, task)
        self._last = ((id(supernet), config.key), measurement)
        return measurement.latency_ms

    def _measured(self, supernet: Supernet, config: Config, task: Task) -> RemoteMeasurement:
        """The last measurement if it is of ``config`` (a search asks for the latency and
        then the memory of the same subnet), else a new one."""
        key = (id(supernet), config.key)
        if self._last is None or self._last[0] != key:
            self._last = (key, self.measure(supernet, config, task))
        return self._last[1]

    def _memory(self, supernet: Supernet, config: Config, task: Task) -> MemoryEstimate:
        """Weights and activation peak measured by the agent (its ``memory`` answer),
        the KV cache by formula (part of the activations).

        Raises:
            AgentError: an agent too old to measure memory.
        """
        memory = self._measured(supernet, config, task).memory
        weights, activations = memory.get("weights_bytes"), memory.get("peak_activation_bytes")
        if not isinstance(weights, int | float) or not isinstance(activations, int | float):
            raise AgentError(f"agent at {self.address} measures no memory (an older nas "
                             "agent); update nas on the device and restart the agent")
        workload = task.workload()
        cache = kv_cache_bytes(supernet.describe(config), steps=round(workload.tgt_len),
                               batch=workload.batch, beam=workload.beam)
        return MemoryEstimate(int(weights), int(activations), cache, method="measured")

    def memory_fingerprint(self, family: str) -> str:
        return self.fingerprint

    def memory_provenance(self) -> Provenance:
        return Provenance(
            method="measured",
            source=f"measured by the agent at {self.address}: weights and buffers counted, "
                   "the activation peak of one run of the task's latency probe (batch 1) "
                   "tracked operator by operator, the KV cache by formula",
        )

    def _threads(self) -> int:
        return self.threads or int(self.environment["threads"])

    def provenance(self) -> Provenance:
        env = self.environment
        return Provenance(
            method="measured",
            source=f"measured by the agent at {self.address} on {env['hostname']} "
                   f"({env['cpu']}, torch {env['torch']})",
            notes=(
                f"Each figure is the median of {self.repeats} timed runs after "
                f"{self.warmup} warm-up runs of the task's latency probe (batch 1) with "
                f"{self._threads()} intra-op thread(s), on the device itself.",
                "The subnet travels as its export (config.json + model.safetensors); "
                "figures are comparable only on the same device and thread count (see "
                "the fingerprint).",
            ),
            details={**env, "address": self.address, "threads": self._threads(),
                     "warmup": self.warmup, "repeats": self.repeats},
        )

    @property
    def fingerprint(self) -> str:
        env = self.environment
        return (f"remote:{env['hostname']}:{env['cpu']}:{self._threads()}t:"
                f"torch-{env['torch']}")


def export_bytes(model: nn.Module, *, family: str) -> tuple[dict[str, Any], bytes]:
    """``config.json`` (parsed) and ``model.safetensors`` (raw) of ``model``, written by
    :func:`nas.save_subnet` itself so that the agent receives exactly an export."""
    with tempfile.TemporaryDirectory(prefix="nas-remote-") as tmp:
        folder = save_subnet(model, Path(tmp), family=family)
        return json.loads((folder / CONFIG).read_text()), (folder / WEIGHTS).read_bytes()


HARDWARE_SCHEMES.register("remote", description="a device running nas agent: remote:HOST:PORT")(
    RemoteTarget.from_spec)
