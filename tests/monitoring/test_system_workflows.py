"""Tollgate's own workflows (the snapshot's schedule) are hidden by default in the explorer, the
overview and the trends, and a toggle shows them; running rows show their real history length or "—"."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from temporalio.client import Client as TemporalClient

from monitoring.models import Execution, SnapshotState
from monitoring.snapshot import refresh_snapshot
from tests.support.temporal import eventually, run_async, start
from tests.support.web import logged_in


def start_unpolled(address: str, workflow_type: str, workflow_id: str) -> None:
    """A run that stays Running: no worker polls its task queue."""
    start(address, f"nobody-{uuid.uuid4().hex[:6]}", workflow_type, workflow_id=workflow_id)


def visible(address: str, query: str) -> int:
    async def go() -> int:
        client = await TemporalClient.connect(address)
        return (await client.count_workflows(query)).count

    return int(run_async(go))


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
    eventually(lambda: visible(address, 'ExecutionStatus = "Running"') == 3, timeout=20)
    client = logged_in(cast["oscar"])

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
    client = logged_in(cast["oscar"])
    mine = client.get(reverse("monitoring:trends"), {"format": "json", "window": "1h"}).json()
    assert sum(p["closed"] for p in mine["series"]) == 1 and sum(p["failed"] for p in mine["series"]) == 1
    assert list(mine["durations"]) == []  # the only completed runs are Tollgate's own
    everything = client.get(reverse("monitoring:trends"), {"format": "json", "window": "1h", "system": "1"}).json()
    assert sum(p["closed"] for p in everything["series"]) == 6
    assert list(everything["durations"]) == ["MonitoringSnapshotWorkflow"]
    assert (
        'name="system" value="1" checked' in client.get(reverse("monitoring:trends"), {"system": "1"}).content.decode()
    )
