"""One way to show a time, a task page that does not contradict itself, and plurals."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.template.loader import render_to_string
from django.test import Client
from django.utils import timezone

from approvals import policies, services
from approvals.audit import verify_task_chain
from approvals.models import ApprovalTask, AuditEntry, TaskAssignment
from config.ports import free_port
from workflows.types import PolicyChangeInput

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_temporal(settings: Any) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"


def open_task(cast: dict[str, Any]) -> ApprovalTask:
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title="Buy a laptop", status="pending",
        due_at=timezone.now() + timedelta(days=1), requested_by="alice", requester=cast["alice"],
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))
    return task


def test_a_policy_push_keeps_its_deadline_as_data_shown_in_the_viewers_zone(cast: dict[str, Any]) -> None:
    task = open_task(cast)
    due = datetime(2030, 12, 1, 22, 20, tzinfo=UTC)
    snapshot = policies.snapshot_policy(slug="standard", approvers=None)
    services.apply_policy_change(
        data=PolicyChangeInput(
            workflow_id=task.workflow_id,
            policy=snapshot,
            level=1,
            due_at=due.isoformat(),
            by="admin",
            at=timezone.now().isoformat(),
        )  # fmt: skip
    )
    entry = AuditEntry.objects.get(task=task, kind="policy")
    assert not re.search(r"\d\d:\d\d", entry.message)  # no time baked into the hashed message
    assert entry.record == {"due_at": "2030-12-01T22:20:00.000000+00:00"}
    client = Client()
    client.cookies["tollgate_tz"] = "Europe/Berlin"  # what static/js/timezone.js sets
    client.force_login(cast["bob"])
    page = client.get(task.get_absolute_url()).content.decode()
    # The history and the header agree, both in the viewer's zone, named.
    berlin = '<time datetime="2030-12-01T23:20:00+01:00" data-relative>2030-12-01 23:20 CET</time>'
    assert f"pushed by admin; level 1 due {berlin}" in page
    assert f"· due {berlin}" in page
    assert "22:20" not in page
    assert verify_task_chain(task, entries=list(task.audit.all()), decisions=[]).ok


def test_every_time_on_the_task_page_names_its_zone(cast: dict[str, Any]) -> None:
    task = open_task(cast)
    services._audit(task, key="requested", kind="requested", at=timezone.now(), level=None, message="Requested")
    client = Client()
    client.cookies["tollgate_tz"] = "Europe/Berlin"  # what static/js/timezone.js sets
    client.force_login(cast["bob"])
    page = client.get(task.get_absolute_url()).content.decode()
    shown = re.findall(r"<time [^>]*>([^<]*)</time>", page)
    assert len(shown) >= 3  # created, due, the history's entry
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d CES?T", text) for text in shown), shown


def test_before_the_workflow_assigns_anyone_the_page_says_so_and_the_card_refreshes_with_the_history(
    cast: dict[str, Any],
) -> None:
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title="Buy a laptop", requested_by="alice",
        requester=cast["alice"],
    )  # fmt: skip
    client = Client()
    client.force_login(cast["alice"])
    page = client.get(task.get_absolute_url()).content.decode()
    assert "the approvers are assigned when the workflow engine takes the request" in page
    # The card is a live region like the history: the one fetch each event makes refreshes both.
    live = re.search(r'<div id="task-live"[^>]* hx-select-oob="([^"]+)"', page)
    assert live is not None
    assert {"#task-assignees", "#task-history"} <= set(live.group(1).split(","))
    assert page.count('id="task-assignees"') == 1


@pytest.mark.parametrize(("count", "text"), [(1, "1 execution matches"), (2, "2 executions match")])
def test_the_explorer_counts_in_words_that_agree(count: int, text: str) -> None:
    html = render_to_string("monitoring/executions.html", {"total": count, "rows": [], "query": ""})
    assert text in html


def test_the_stuck_page_says_one_minute(cast: dict[str, Any], settings: Any) -> None:
    settings.MONITORING_DEADLINE_GRACE_MINUTES = 1
    client = Client()
    client.force_login(cast["operator"])
    page = client.get("/monitoring/stuck/?minutes=1").content.decode()
    assert "1 minutes" not in page
    assert "No progress for more than 1 minute," in page and "still open 1 minute after" in page
