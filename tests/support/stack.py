"""``make run`` as a newcomer runs it, in a subprocess of its own, on its own ports and var/ folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config.ports import free_port
from tests.support.markers import require_marker

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error's status and body too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback only)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Stack:
    def __init__(self, var_dir: Path) -> None:
        self.port = free_port(spare_above=1464)  # the worker's metrics port is PORT + 1464 when free
        self.temporal = f"127.0.0.1:{free_port()}"
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "TOLLGATE_WORKER_METRICS")
        }
        self.env.update(PORT=str(self.port), TEMPORAL_ADDRESS=self.temporal, TOLLGATE_VAR_DIR=str(var_dir))
        self.proc: subprocess.Popen[str] | None = None
        var_dir.mkdir(parents=True, exist_ok=True)
        self.log = var_dir / f"make-run-{self.port}.log"

    def start(self) -> None:
        require_marker("integration", "make run")
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run"], cwd=ROOT, env=self.env, text=True,
            stdout=self.log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.wait_for(lambda: get(f"http://127.0.0.1:{self.port}/readyz")[0] == 200)

    def wait_for(self, check: Callable[[], Any], *, timeout: float = 120) -> Any:
        """``check()``'s first truthy value, asked while make run lives (an OSError counts as not yet)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if value := check():
                    return value
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not within {timeout}s:\n{self.output()}")

    def ctrl_c(self) -> int:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        return self.proc.wait(timeout=60)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout
