"""What both dashboard servers of ``nas dashboard`` refuse before serving a request.

* A Host header that is missing or names a host we do not serve (421): a DNS-rebinding
  page reaches a server on 127.0.0.1 under its own domain name, so its requests carry
  that name. IP literals (which rebinding cannot use), ``localhost``, this machine's
  names, the name the server is bound to and the names given with ``--allowed-host``
  are served; nothing else.
* Any method but GET and HEAD (405), unless the server was started to allow writes:
  the pages only read the study database.

Both servers also drop a connection that sends nothing for :data:`IDLE_TIMEOUT_S`
seconds, so an idle client does not hold a thread forever.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Collection, Iterable
from http import HTTPStatus

IDLE_TIMEOUT_S = 30.0
"""Seconds a connection may wait between bytes of a request before it is dropped."""

READ_METHODS = ("GET", "HEAD")

HOST_REFUSED = ("Host header missing or not served here: browse an IP address, localhost "
                "or this machine's name, or start nas dashboard with --allowed-host NAME")

_HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[^\]]*)\]|(?P<name>[^:\[\]]*))(?::[0-9]*)?")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def served_names(bound_host: str, extra_names: Iterable[str] = ()) -> frozenset[str]:
    """The domain names a server accepts in Host headers: ``localhost``, this machine's
    names, ``bound_host`` (``--host``, served under its own name) and ``extra_names``
    (``--allowed-host``).

    Raises:
        ValueError: an extra name is not a bare host name (a port, a scheme, a path).
    """
    names = {"localhost", socket.gethostname(), socket.getfqdn(), bound_host}
    for name in extra_names:
        if _HOST_NAME.fullmatch(_normalised(name)) is None:
            raise ValueError(f"--allowed-host {name!r} is not a host name; give the name "
                             "alone, without scheme or port (e.g. mybox.lan)")
        names.add(name)
    return frozenset(filter(None, map(_normalised, names)))


def allowed_host(host_header: str | None, names: Collection[str]) -> bool:
    """Whether a request with ``host_header`` is served: an IP literal (v4, or v6 in
    brackets), with or without port, or one of ``names`` (see :func:`served_names`)."""
    match = _HOST_HEADER.fullmatch(host_header or "")
    if match is None:
        return False
    if match["ipv6"] is not None:
        return _is_address(match["ipv6"], ipaddress.IPv6Address)
    name = _normalised(match["name"])
    return _is_address(name, ipaddress.IPv4Address) or (bool(name) and name in names)


class RequestGuard:
    """The refusals of one server: its served host names, and whether it takes writes."""

    def __init__(self, bound_host: str, extra_names: Iterable[str] = (), *,
                 allow_writes: bool = False, read_only: str) -> None:
        """``read_only`` is the one-line reason a write is refused on this server.

        Raises:
            ValueError: an extra name is not a host name (see :func:`served_names`).
        """
        self.names = served_names(bound_host, extra_names)
        self.allow_writes = allow_writes
        self.read_only = read_only

    def refusal(self, method: str, host_header: str | None) -> tuple[HTTPStatus, str] | None:
        """The status and one-line reason to refuse a request with, or None to serve it."""
        if not allowed_host(host_header, self.names):
            return HTTPStatus.MISDIRECTED_REQUEST, HOST_REFUSED
        if method not in READ_METHODS and not self.allow_writes:
            return HTTPStatus.METHOD_NOT_ALLOWED, self.read_only
        return None


def refusal_headers(status: HTTPStatus, body: bytes) -> list[tuple[str, str]]:
    """The headers of a refusal (none hop-by-hop, as WSGI asks): a plain-text body,
    and for a 405 the methods the server takes (as HTTP asks)."""
    headers = [("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body)))]
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append(("Allow", ", ".join(READ_METHODS)))
    return headers


def _normalised(name: str) -> str:
    """Host names compare without case and without the root's trailing dot."""
    return name.strip().lower().removesuffix(".")


def _is_address(text: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True
