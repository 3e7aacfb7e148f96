"""config.ports: servers started here listen below the kernel's ephemeral range."""

import socket
from pathlib import Path

import pytest

from config import ports


def test_a_free_port_lies_below_the_ephemeral_range_with_its_ui_port_free_too() -> None:
    for _ in range(20):
        port = ports.free_port()
        assert 10_000 <= port < ports.ephemeral_low() - 1000
        for p in (port, port + 1000):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", p))  # raises if either is taken


def test_a_taken_port_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        # The first candidate's UI partner (+1000) is the listening socket: passed over.
        candidates = iter([taken.getsockname()[1] - 1000, 20_001])
        monkeypatch.setattr(ports.random, "randrange", lambda *_: next(candidates))
        monkeypatch.setattr(ports, "ephemeral_low", lambda: 65_000)
        assert ports.free_port() == 20_001


def test_without_the_kernels_range_file_linuxs_default_is_assumed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "RANGE_FILE", Path("/nonexistent/ip_local_port_range"))
    assert ports.ephemeral_low() == 32768
