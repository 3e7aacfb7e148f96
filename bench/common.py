"""Helpers shared by the bench scripts: machine facts and the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

BIN = Path(sys.executable).parent


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory and the versions that matter."""
    from importlib.metadata import version

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = int(
            next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1]
        )
    except (OSError, StopIteration, ValueError):
        kib = 0
    try:
        temporal = subprocess.run([str(BIN / "temporal"), "--version"], capture_output=True, text=True, timeout=10)
        cli = temporal.stdout.strip()
    except OSError:
        cli = "not found"
    return {
        "cpu": cpu or platform.processor(), "cores": os.cpu_count(), "ram_gib": round(kib / 2**20, 1),
        "python": platform.python_version(), "django": version("django"), "temporalio": version("temporalio"),
        "temporal_cli": cli, "os": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A Temporal dev server of the bench's own, with its UI: (process, frontend address, UI URL).

    Its SQLite file is in WAL mode without fsync: as fast to fill as the in-memory one (about 200
    starts/s here), which held 3 GB at 60,000 executions and once died there. Its log is kept in
    ``directory/temporal.log`` to show why it died, if it does.
    """
    port, ui_port = free_port(), free_port()
    log = (directory / "temporal.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--ui-port", str(ui_port), "--log-level", "warn", "--db-filename", str(directory / "temporal.db"),
         "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=off"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    ui = f"http://127.0.0.1:{ui_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{ui}/api/v1/namespaces/default/workflow-count", timeout=2).read()  # noqa: S310
            return proc, f"127.0.0.1:{port}", ui
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the Temporal dev server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_database(workdir: Path, name: str = "bench") -> tuple[str, Callable[[], None]]:
    """A throwaway database URL for this run, and how to drop it afterwards: a SQLite file in
    ``workdir``, or, when DATABASE_URL names a PostgreSQL server, a database created for the run."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{workdir / f'{name}.sqlite3'}", lambda: None
    import psycopg

    database = f"tollgate_{name}_{os.getpid()}"
    parts = urlparse(url)
    admin = urlunparse(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    return urlunparse(parts._replace(path=f"/{database}")), drop
