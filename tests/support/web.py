"""The web side for the tests: logged-in test clients, the browser's log-in, and a real ASGI server."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.test import Client

from config.ports import free_port
from tests.support.data import PASSWORD, test_database_url
from tests.support.temporal import eventually

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(settings.VAR_DIR) / "screenshots"  # browser tests' screenshots, for people to look at

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
# The flags this workplace needs: no sandbox as root, no background
# connections to hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


def logged_in(user: Any, **client_kwargs: Any) -> Client:
    """A test client logged in as ``user``."""
    client = Client(**client_kwargs)
    client.force_login(user)
    return client


def log_in(page: Any, base: str, username: str) -> None:
    """Log a cast member in through the real login form in the browser."""
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/approvals/$"))


class AsgiServer:
    """``daphne config.asgi:application`` on a free port, on this test's database, Redis and Temporal."""

    def __init__(self, settings: Any, redis_url: str, prefix: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"daphne-{self.port}-", suffix=".log", delete=False)  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(
            DATABASE_URL=test_database_url(), REDIS_URL=redis_url, TOLLGATE_CHANNEL_PREFIX=prefix,
            TEMPORAL_ADDRESS=settings.TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE=settings.TEMPORAL_TASK_QUEUE,
            DJANGO_SECRET_KEY=settings.SECRET_KEY, DJANGO_SECURE_COOKIES="false", DJANGO_DEBUG="false",
            PYTHONUNBUFFERED="1",
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        eventually(self._up, timeout=30, every=0.2)

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            assert self.proc.poll() is None, "daphne exited"
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
