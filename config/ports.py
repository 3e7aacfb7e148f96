"""Free TCP ports for the servers the stack, the tests and the benches start on this machine."""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (32768 on Linux by default)."""
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(*, spare_above: int = 1000) -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range, with the port
    ``spare_above`` higher free too (the dev server's UI listens at its port + 1000).

    A port from ``bind(0)`` lies inside the ephemeral range, where any outgoing connection may take
    it as its local end between our check and the server's bind, and where a client that keeps
    connecting to a server still starting can be handed that very port as its own source and connect
    to itself. Either leaves the server with "address already in use" (seen once: the Temporal dev
    server restarted on its old port in tests/config/test_make_run.py). Below the range no client
    socket is ever given the port.
    """
    top = ephemeral_low() - spare_above - 1
    for _ in range(200):
        port = random.randrange(10_000, top)  # noqa: S311  # not a secret: only has to be free
        if all(_bindable(p) for p in (port, port + spare_above)):
            return port
    raise OSError("no free port below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
