"""Tests never touch the network: any socket connection to an address outside this machine is refused and recorded.

Installed in the test process by conftest.py, and in every process a test starts through `sitecustomize.py` beside
this file (the test environment puts this folder on PYTHONPATH). A recorded attempt fails the test that made it.
"""

from __future__ import annotations

import ipaddress
import socket

ATTEMPTS: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkAccessInTest(OSError):
    """A test tried to reach the network."""


def _is_local(address: object) -> bool:
    if not isinstance(address, tuple):  # a Unix socket path
        return True
    host = str(address[0])
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name to resolve remotely


def _check(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
        ATTEMPTS.append(repr(address))
        raise NetworkAccessInTest(f"tests must not use the network: a connection to {address!r} was refused")


def _connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
