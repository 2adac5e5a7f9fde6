"""The addresses the team server binds to, and how the machine it runs on reaches them."""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK = "localhost"
ANY = ("0.0.0.0", "::")  # every interface


def is_loopback(host: str) -> bool:
    try:
        return host == LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local(host: str) -> str:
    """The address this machine reaches a server bound to `host` by."""
    return "127.0.0.1" if host in ANY else host


def public(host: str) -> str:
    """The name other machines reach a server bound to `host` by."""
    return socket.getfqdn() if host in ANY else host


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def listening(host: str, port: int) -> bool:
    """Whether something takes TCP connections at host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.settimeout(3)
        return probe.connect_ex((local(host), port)) == 0
