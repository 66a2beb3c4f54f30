"""``nas agent``: serve latency measurements of this device to ``--hw remote:HOST:PORT``."""

from __future__ import annotations

import ipaddress
import secrets
import socket

import typer

from nas.cli._common import console, fail, threads_option, user_errors

# Not imported from nas.hardware._agent: that pulls in every target and supernet, and
# `nas --help` should not pay for it; tests/test_agent.py checks that both agree.
TOKEN_ENV = "NAS_AGENT_TOKEN"


@user_errors
def agent(
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="Address to listen on; 0.0.0.0 exposes the agent to the network.",
    ),
    port: int = typer.Option(..., "--port", min=0, max=65535,
                             help="TCP port (0 picks a free one)."),
    token: str | None = typer.Option(
        None, "--token", envvar=TOKEN_ENV, show_envvar=True,
        help="Shared secret clients must send (default: a new one, printed once).",
    ),
    max_bytes: int | None = typer.Option(
        None, "--max-bytes", min=1,
        help="Largest request (and model) accepted, in bytes (default: 256 MiB).",
    ),
    threads: int = threads_option(1, "Intra-op threads when a client does not choose"),
) -> None:
    """Measure subnets sent by `--hw remote:HOST:PORT` on this device, until Ctrl-C."""
    from nas.hardware._agent import DEFAULT_MAX_BYTES, AgentServer, is_loopback

    generated = not token
    token = token or secrets.token_urlsafe(24)
    try:
        server = AgentServer(host, port, token=token,
                             max_bytes=max_bytes or DEFAULT_MAX_BYTES, threads=threads)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
    bound_host, bound_port = server.server_address[:2]
    if not is_loopback(str(bound_host)):
        console.print(f"[bold yellow]warning:[/] listening on {bound_host}, reachable from "
                      "the network; anyone with the token can run models here",
                      highlight=False, soft_wrap=True)
    # 0.0.0.0 is where to listen, not where to connect: show this machine's name instead.
    reach = socket.gethostname() if ipaddress.ip_address(bound_host).is_unspecified \
        else bound_host
    console.print(f"nas agent listening on {bound_host}:{bound_port}; measure with "
                  f"--hw remote:{reach}:{bound_port}", highlight=False, soft_wrap=True)
    if generated:
        console.print(f"token (set {TOKEN_ENV} on the client): {token}", highlight=False,
                      soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("agent stopped")
    finally:
        server.server_close()
