"""`make run` gives the worker a metrics address, prints both metrics URLs, and both answer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from config.ports import free_port

pytestmark = pytest.mark.integration
ROOT = Path(settings.BASE_DIR)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback only)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_for(check: object, proc: subprocess.Popen[str], log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        found = check()  # type: ignore[operator]
        if found:
            return str(found)
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s:\n{log.read_text()}")


def test_make_run_serves_the_workers_sdk_metrics_and_prints_where(tmp_path: Path) -> None:
    port = free_port(spare_above=1464)  # the worker's metrics port is PORT + 1464 when free
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "TOLLGATE_WORKER_METRICS")}
    env.update(PORT=str(port), TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", TOLLGATE_VAR_DIR=str(tmp_path))
    log = tmp_path / "make-run.log"
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run"], cwd=ROOT, env=env, text=True,
        stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, proc, log)
        banner = wait_for(
            lambda: re.search(r"http://(\S+)/metrics \(worker: Temporal SDK\)", log.read_text()), proc, log
        )
        address = re.search(r"http://(\S+)/metrics", banner)[1]  # type: ignore[index]
        assert address == f"127.0.0.1:{port + 1464}"
        assert f"Metrics:         http://127.0.0.1:{port}/metrics (Tollgate)" in log.read_text()
        # The demo requests keep the worker busy: its slots and the workflow task latencies show.
        text = wait_for(
            lambda: (body := get(f"http://{address}/metrics")[1]) and "temporal_worker_task_slots_available{" in body
            and "temporal_workflow_task_schedule_to_start_latency_count{" in body and body,
            proc, log, timeout=60,
        )  # fmt: skip
        assert 'task_queue="approvals"' in text
        status, own = get(f"http://127.0.0.1:{port}/metrics")  # Tollgate's own, from loopback
        assert status == 200 and "tollgate_workflows_running" in own
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    assert get(f"http://{address}/metrics")[0] == 0  # gone with the worker
