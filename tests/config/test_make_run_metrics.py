"""`make run` gives the worker a metrics address, prints both metrics URLs, and both answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.stack import Stack, get

pytestmark = pytest.mark.integration


def test_make_run_serves_the_workers_sdk_metrics_and_prints_where(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.start()
    try:
        banner = stack.wait_for(lambda: re.search(r"http://(\S+)/metrics \(worker: Temporal SDK\)", stack.output()))
        address = banner[1]
        assert address == f"127.0.0.1:{stack.port + 1464}"
        assert f"Metrics:         http://127.0.0.1:{stack.port}/metrics (Tollgate)" in stack.output()
        # The demo requests keep the worker busy: its slots and the workflow task latencies show.
        text = stack.wait_for(
            lambda: (body := get(f"http://{address}/metrics")[1]) and "temporal_worker_task_slots_available{" in body
            and "temporal_workflow_task_schedule_to_start_latency_count{" in body and body,
            timeout=60,
        )  # fmt: skip
        assert 'task_queue="approvals"' in text
        status, own = get(f"http://127.0.0.1:{stack.port}/metrics")  # Tollgate's own, from loopback
        assert status == 200 and "tollgate_workflows_running" in own
    finally:
        stack.ctrl_c()
    with pytest.raises(OSError):
        get(f"http://{address}/metrics")  # gone with the worker
