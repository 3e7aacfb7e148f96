"""Tollgate's own workflows (the snapshot's schedule) are hidden by default in the explorer, the
overview and the trends, and a toggle shows them; running rows show their real history length or "—"."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from temporalio.client import Client as TemporalClient

from monitoring.models import Execution, SnapshotState
from monitoring.snapshot import refresh_snapshot


def _in_thread(make: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def start_unpolled(address: str, workflow_type: str, workflow_id: str) -> None:
    """A run that stays Running: no worker polls its task queue."""

    async def go() -> None:
        client = await TemporalClient.connect(address)
        await client.start_workflow(workflow_type, id=workflow_id, task_queue=f"nobody-{uuid.uuid4().hex[:6]}")

    _in_thread(go)


def visible(address: str, query: str) -> int:
    async def go() -> int:
        client = await TemporalClient.connect(address)
        return (await client.count_workflows(query)).count

    return int(_in_thread(go))


def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not met within {timeout}s")


def oscar(cast: dict[str, Any]) -> Client:
    client = Client()
    client.force_login(cast["oscar"])
    return client


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_the_explorer_and_the_overview_hide_tollgates_own_workflows_unless_asked(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    address = own_server.address
    user_run = f"order-{uuid.uuid4().hex[:6]}"
    start_unpolled(address, "OrderWorkflow", user_run)
    start_unpolled(address, "MonitoringSnapshotWorkflow", "tollgate-monitoring-snapshot-run-2026-01-01T00:00:00Z")
    start_unpolled(address, "SomethingElse", "tollgate-housekeeping")
    until(lambda: visible(address, 'ExecutionStatus = "Running"') == 3)
    client = oscar(cast)

    hidden = client.get(reverse("monitoring:executions"), {"format": "json"}).json()
    assert [e["workflow_id"] for e in hidden["executions"]] == [user_run] and hidden["total"] == 1
    assert hidden["query"] == "" and hidden["show_system"] is False
    assert 'WorkflowType != "MonitoringSnapshotWorkflow"' in hidden["visibility_query"]
    shown = client.get(reverse("monitoring:executions"), {"format": "json", "system": "1"}).json()
    assert shown["total"] == 3 and "MonitoringSnapshotWorkflow" in {e["workflow_type"] for e in shown["executions"]}
    # Asking for them by name finds them without the toggle; the page says what it searched for.
    named = client.get(reverse("monitoring:executions"), {"format": "json", "type": "MonitoringSnapshotWorkflow"})
    assert named.json()["total"] == 1
    html = client.get(reverse("monitoring:executions")).content.decode()
    assert "show Tollgate&#x27;s own workflows" in html or "show Tollgate's own workflows" in html
    assert 'name="system" value="1">' in html  # not ticked by default

    # Running rows: visibility knows no history length until they close: "—", never 0...
    cells = html.split('id="executions"')[1]
    assert '<td data-label="History">—</td>' in cells and '<td data-label="History">0</td>' not in cells
    assert hidden["executions"][0]["history_length"] is None
    # ...until the snapshot has described them.
    refresh_snapshot()
    described = client.get(reverse("monitoring:executions"), {"format": "json"}).json()["executions"][0]
    assert described["history_length"] == Execution.objects.get(workflow_id=user_run).history_length == 2

    overview = client.get(reverse("monitoring:overview"), {"format": "json"}).json()
    assert overview["status_counts"] == {"running": 1} and overview["status_counts_source"] == "temporal"
    assert {t["workflow_type"] for t in overview["types"]} == {"OrderWorkflow", "SomethingElse"}
    everything = client.get(reverse("monitoring:overview"), {"format": "json", "system": "1"}).json()
    assert everything["status_counts"] == {"running": 3}
    assert "MonitoringSnapshotWorkflow" in {t["workflow_type"] for t in everything["types"]}


@pytest.mark.django_db
def test_the_trends_leave_tollgates_own_runs_out_unless_asked(cast: dict[str, Any], settings: Any) -> None:
    now = timezone.now()
    SnapshotState.objects.create(pk=1, refreshed_at=now, close_watermark=now)
    times = {"start_time": now - timedelta(minutes=30), "close_time": now - timedelta(minutes=20), "duration": 1}
    for i in range(5):
        Execution.objects.create(
            workflow_id=f"tollgate-monitoring-snapshot-run-{i}", run_id=f"r{i}",
            workflow_type="MonitoringSnapshotWorkflow", status="completed", **times,
        )  # fmt: skip
    Execution.objects.create(workflow_id="order-1", run_id="r", workflow_type="OrderWorkflow", status="failed", **times)
    client = oscar(cast)
    mine = client.get(reverse("monitoring:trends"), {"format": "json", "window": "1h"}).json()
    assert sum(p["closed"] for p in mine["series"]) == 1 and sum(p["failed"] for p in mine["series"]) == 1
    assert list(mine["durations"]) == []  # the only completed runs are Tollgate's own
    everything = client.get(reverse("monitoring:trends"), {"format": "json", "window": "1h", "system": "1"}).json()
    assert sum(p["closed"] for p in everything["series"]) == 6
    assert list(everything["durations"]) == ["MonitoringSnapshotWorkflow"]
    assert (
        'name="system" value="1" checked' in client.get(reverse("monitoring:trends"), {"system": "1"}).content.decode()
    )
