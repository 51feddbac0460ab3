"""Blocks every non-loopback network connection and DNS lookup in this Python process.

The test session installs it in-process (conftest.py); subprocesses started by tests get it through
PYTHONPATH (tests/helpers.py), so a CLI run under test cannot reach the network either.
"""

import ipaddress
import socket


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    if isinstance(host, bytes):
        host = host.decode()
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def install() -> None:
    if getattr(socket, "_street_scene_blocked", False):
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise NetworkBlocked(f"network access blocked in tests: connect to {address!r}")

    def connect(self, address, *args):
        _check(self, address)
        return real_connect(self, address, *args)

    def connect_ex(self, address, *args):
        _check(self, address)
        return real_connect_ex(self, address, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise NetworkBlocked(f"network access blocked in tests: DNS lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    socket._street_scene_blocked = True


install()
