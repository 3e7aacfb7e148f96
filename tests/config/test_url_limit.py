"""URLs above 8,000 bytes get a short 414 page from the real server instead of a dropped connection."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from config.ports import free_port

ROOT = Path(settings.BASE_DIR)


@pytest.fixture(scope="module")
def daphne(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``make web``: daphne serving config.asgi on a free port, on the embedded defaults."""
    port = free_port()
    var_dir = tmp_path_factory.mktemp("url-limit")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TOLLGATE_VAR_DIR=str(var_dir), PORT=str(port), PYTHONUNBUFFERED="1")
    env.pop("TOLLGATE_MAX_URL_BYTES", None)  # the default limit
    log = (var_dir / "daphne.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (var_dir / "daphne.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "daphne did not start"
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def get(port: int, target: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def search(length: int) -> str:
    """``/approvals/?q=xxx...`` whose path and query together are ``length`` bytes."""
    prefix = "/approvals/?q="
    return prefix + "x" * (length - len(prefix))


def test_a_url_at_the_limit_is_served(daphne: int) -> None:
    assert len(search(8000)) == 8000
    status, _, _ = get(daphne, search(8000))
    assert status == 302  # on to the login page, as any anonymous visit to the inbox


@pytest.mark.parametrize("length", [8001, 10_014, 12_000, 16_000])
def test_a_longer_url_gets_a_short_414_page(daphne: int, length: int) -> None:
    status, content_type, body = get(daphne, search(length))
    assert status == 414
    assert content_type.startswith("text/plain")
    assert body.startswith("414 URI Too Long") and len(body) < 200


def test_the_limit_counts_bytes_on_the_wire_in_the_path_too(daphne: int) -> None:
    assert get(daphne, "/approvals/" + "a" * 9000)[0] == 414
    encoded = "/approvals/?q=" + quote("é" * 1400)  # 1,400 characters, 8,400 bytes percent-encoded
    assert get(daphne, encoded)[0] == 414
    assert get(daphne, "/healthz")[0] == 200  # and the server is still there


def test_beyond_daphnes_own_limit_the_request_is_refused_by_daphne(daphne: int) -> None:
    """Not ours to change: Twisted reads at most 16,384 bytes of request line and headers, then writes a
    bare 400 and closes; the client often sees only the closed connection. Documented in the README."""
    try:
        status = get(daphne, search(16_400))[0]
    except (ConnectionError, http.client.HTTPException):
        status = None
    assert status in (400, None)


def test_a_wrong_limit_fails_at_start_naming_the_variable() -> None:
    env = {**os.environ, "DJANGO_SECRET_KEY": "test-only-key", "TOLLGATE_MAX_URL_BYTES": "8k"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "TOLLGATE_MAX_URL_BYTES" in result.stderr
