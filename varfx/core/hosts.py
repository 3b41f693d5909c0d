"""Which hosts are this machine: the one rule the server (start-up warnings) and the client
(no bearer token in plaintext to another host) share."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an IP address, ``[v6]`` or a name) is this machine only: 127.0.0.0/8,
    ``::1``, ``localhost`` and ``*.localhost``. Other names are not resolved and count as
    other hosts."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
