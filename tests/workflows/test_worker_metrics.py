"""The worker serves the Temporal SDK's own metrics for Prometheus on TOLLGATE_WORKER_METRICS."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from approvals.models import ApprovalTask
from config.ports import free_port
from config.settings import env_listen_address
from tests.support.data import test_database_url
from tests.support.temporal import decision, eventually, run_async, start

ROOT = Path(__file__).resolve().parents[2]


# ---- small local helpers ------------------------------------------------------------------


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DATABASE_URL", "TEMPORAL_", "OTEL_"))}
    env.update(DJANGO_SECRET_KEY="worker-metrics-test", PYTHONUNBUFFERED="1", **extra)
    return env


def scrape(address: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:  # noqa: S310 (loopback)
            return response.read().decode()
    except OSError:
        return ""


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line of a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)", line)
        if match:
            found[match[1]] = float(match[2])
    return found


def names(text: str) -> set[str]:
    return {key.split("{", 1)[0] for key in samples(text)}


@pytest.fixture
def run_worker(transactional_db: None) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> subprocess.Popen[bytes]:
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env=worker_env(DATABASE_URL=test_database_url(), **env),
        )  # fmt: skip
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def output(proc: subprocess.Popen[bytes]) -> str:
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read().decode()  # type: ignore[attr-defined]


# ---- the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("127.0.0.1:9464", "127.0.0.1:9464"),
        ("0.0.0.0:1", "0.0.0.0:1"),
        ("[::1]:65535", "[::1]:65535"),
        ("localhost:9464", "127.0.0.1:9464"),
    ],
)
def test_the_worker_metrics_address_accepts_an_ip_and_a_port(monkeypatch: Any, raw: str, expected: str) -> None:
    monkeypatch.setenv("TOLLGATE_WORKER_METRICS", raw)
    assert env_listen_address("TOLLGATE_WORKER_METRICS") == expected


@pytest.mark.parametrize(
    "raw",
    ["9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "metrics.example:9464",
     "::1:9464", "[127.0.0.1]:9464", "256.0.0.1:9464"],
)  # fmt: skip
def test_a_bad_worker_metrics_address_names_the_variable(monkeypatch: Any, raw: str) -> None:
    monkeypatch.setenv("TOLLGATE_WORKER_METRICS", raw)
    with pytest.raises(ImproperlyConfigured, match=r"^TOLLGATE_WORKER_METRICS must be ip:port .*got "):
        env_listen_address("TOLLGATE_WORKER_METRICS")


def test_the_worker_refuses_to_start_with_a_port_out_of_range_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "run_worker"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=worker_env(TOLLGATE_WORKER_METRICS="127.0.0.1:70000"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tollgate: configuration error: TOLLGATE_WORKER_METRICS must be ip:port with a port from 1 to 65535 "
        "(for example 127.0.0.1:9464 or [::1]:9464), got '127.0.0.1:70000'"
    ]


def test_the_worker_refuses_to_start_when_its_metrics_port_is_taken(
    run_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = run_worker(TOLLGATE_WORKER_METRICS=address, TEMPORAL_ADDRESS="127.0.0.1:1")
        assert proc.wait(60) == 2
    lines = [line for line in output(proc).splitlines() if line.strip()]
    assert lines[-1].startswith(f"tollgate: configuration error: TOLLGATE_WORKER_METRICS {address}: ")
    assert "Address already in use" in lines[-1]


# ---- the endpoint, scraped from a real worker ------------------------------------------------


@pytest.mark.integration
def test_the_worker_serves_the_sdks_metrics_after_running_an_approval(
    cast: dict[str, Any], dev_server: Any, run_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    from temporalio.client import Client

    from monitoring.snapshot import SNAPSHOT_SCHEDULE_ID

    queue = f"approvals-{uuid.uuid4().hex[:8]}"
    metrics = f"127.0.0.1:{free_port(spare_above=0)}"
    proc = run_worker(TEMPORAL_ADDRESS=dev_server.address, TEMPORAL_TASK_QUEUE=queue, TOLLGATE_WORKER_METRICS=metrics)
    workflow_id = f"approval-{uuid.uuid4().hex[:8]}"
    request = {"request_id": workflow_id, "title": "Metrics laptop", "requested_by": "alice"}

    async def decide_and_wait() -> dict[str, Any]:
        client = await Client.connect(dev_server.address)
        handle = client.get_workflow_handle(workflow_id)
        await handle.signal("decide", decision("bob"))
        return await asyncio.wait_for(handle.result(), 30)

    async def drop_schedule() -> None:  # run_worker created it on this queue; nobody will poll it
        client = await Client.connect(dev_server.address)
        await client.get_schedule_handle(SNAPSHOT_SCHEDULE_ID).delete()

    try:
        eventually(
            lambda: "worker polling task queue" in output(proc) or proc.poll() is not None, timeout=60, every=0.2
        )
        assert proc.poll() is None, output(proc)
        start(dev_server.address, queue, "ApprovalWorkflow", request, workflow_id=workflow_id)
        eventually(lambda: ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").exists(), timeout=30)
        assert run_async(decide_and_wait)["outcome"] == "approved"
        # The core exports on its own schedule; the counters appear once something has counted.
        text = eventually(
            lambda: (t := scrape(metrics)) and "temporal_activity_execution_latency" in t and t, timeout=30
        )
    finally:
        run_async(drop_schedule)

    found = samples(text)
    exported = names(text)
    # What an operator graphs (README, "Metrics and traces"): the names as the SDK's core emits them.
    for name in (
        "temporal_worker_task_slots_available",
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        "temporal_activity_schedule_to_start_latency_bucket",
        "temporal_workflow_task_execution_latency_count",
        "temporal_activity_execution_latency_count",
        "temporal_sticky_cache_size",
        "temporal_sticky_cache_hit",  # the decision's workflow task found the workflow in the cache
        "temporal_workflow_completed",
        "temporal_num_pollers",
    ):
        assert name in exported, f"{name} not exported; got {sorted(exported)}"
    queue_label = f'task_queue="{queue}"'
    slots = {k: v for k, v in found.items() if k.startswith("temporal_worker_task_slots_available{")}
    assert any(queue_label in k and 'worker_type="ActivityWorker"' in k and v > 0 for k, v in slots.items()), slots
    completed = [v for k, v in found.items() if k.startswith("temporal_workflow_completed{") and queue_label in k]
    assert completed and sum(completed) >= 1
    # Our activities (load_policy, register_task, check_eligibility, complete_task...) ran on this worker.
    ran = {
        re.search(r'activity_type="([^"]+)"', k)[1]  # type: ignore[index]
        for k, v in found.items()
        if k.startswith("temporal_activity_execution_latency_count{") and queue_label in k and v > 0
    }
    assert {"load_policy", "register_task", "complete_task"} <= ran, ran
