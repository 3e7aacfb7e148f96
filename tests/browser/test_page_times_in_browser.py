"""In Chromium: the Assigned-to card follows the workflow's registration like the history beside it,
and times carry a relative hint that stays current."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from approvals import policies, services
from approvals.models import ApprovalTask
from workflows.types import ApprovalInput, RegisterTaskInput

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def logged_in(page: Any, live_server: Any, user: Any) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"]
    page.context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])


def test_the_assigned_card_never_contradicts_the_history_and_times_say_how_far(
    page: Any, live_server: Any, cast: dict[str, Any]
) -> None:
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title="Buy a laptop", requested_by="alice",
        requester=cast["alice"],
    )  # fmt: skip
    logged_in(page, live_server, cast["alice"])
    page.goto(live_server.url + task.get_absolute_url())
    card = page.locator("#task-assignees")
    assert "Nobody yet" in card.inner_text()

    # The worker registers the task (its register_task activity's service) after the page was drawn.
    started = timezone.now()
    register = RegisterTaskInput(
        workflow_id=task.workflow_id, run_id="run-1",
        request=ApprovalInput(request_id=token, title="Buy a laptop", requested_by="alice"),
        policy=policies.snapshot_policy(slug="standard", approvers=None), started_at=started.isoformat(),
        due_at=(started + timedelta(hours=3)).isoformat(),
    )  # fmt: skip
    # In a thread of its own, as in the worker: Playwright's event loop runs in this one, and the
    # service announces the change through the channel layer (async_to_sync) on commit.
    thread = threading.Thread(target=lambda: services.register_task(data=register))
    thread.start()
    thread.join()
    # What live.js does on the socket's event (or on its 15 s poll when the socket is down).
    page.evaluate(f"htmx.trigger(document.body, 'tollgate:changed', {{task: {task.pk}, kind: 'assigned'}})")
    page.locator("#task-history", has_text="Assigned to group approvers").wait_for()
    page.locator("#task-assignees", has_text="Level 1: group approvers").wait_for()
    assert "Nobody" not in card.inner_text()

    # Every time shown has its hint beside it, computed in the browser, and it moves on.
    due = page.locator("#task-meta time[data-relative] + .relative-hint").last  # created, then due
    due.wait_for()
    assert due.inner_text() == " (in 3 hours)"
    page.clock.install()  # Playwright's fake clock from here on: let two hours pass
    page.clock.fast_forward("02:00:00")
    page.evaluate("window.tollgateRelativeTimes()")
    assert due.inner_text() == " (in 1 hour)"
    history_hint = page.locator("#task-history time[data-relative] + .relative-hint").first
    assert history_hint.inner_text().endswith("ago)")
