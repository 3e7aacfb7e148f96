"""The daily digest runs as a Temporal schedule and workflow (no Celery, no cron), on a real dev server
and the real worker."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.utils import timezone
from temporalio.client import Client

from approvals.digest import DIGEST_SCHEDULE_ID, ensure_digest_schedule
from approvals.digest_workflow import DIGEST_WORKFLOW, SendDigestsInput, SendDigestsResult
from approvals.models import ApprovalTask, MailPreference, TaskAssignment
from tests.support.temporal import run_async

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_digest_workflow_mails_each_digest_user_their_open_tasks_once_a_day(
    cast: dict[str, Any], worker: Any, settings: Any
) -> None:
    settings.TOLLGATE_BASE_URL = "http://testserver"
    MailPreference.objects.create(user=cast["bob"], delivery="digest")
    MailPreference.objects.create(user=cast["carol"], delivery="digest")  # nothing open for carol
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title="Buy a laptop", status="pending",
        due_at=timezone.now() + timedelta(days=1), requested_by="alice", requester=cast["alice"],
        payload={"amount": 1200},
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))

    async def run_twice() -> list[SendDigestsResult]:
        client = await Client.connect(settings.TEMPORAL_ADDRESS)
        results = []
        for attempt in range(2):
            results.append(
                await client.execute_workflow(
                    DIGEST_WORKFLOW,
                    SendDigestsInput(reason="test"),
                    id=f"digest-{token}-{attempt}",
                    task_queue=settings.TEMPORAL_TASK_QUEUE,
                    result_type=SendDigestsResult,
                )  # fmt: skip
            )
        return results

    first, second = run_async(run_twice)
    assert (first.sent, first.nothing_open) == (1, 1)
    assert (second.sent, second.nothing_open) == (0, 0)  # the same day: nobody twice
    (message,) = mail.outbox
    assert message.to == ["bob@example.com"] and message.subject == "1 request waiting for your decision"
    assert "Buy a laptop" in message.body and "amount: 1200" in message.body
    assert "Approve: http://testserver/approvals/mail/" in message.body


def test_the_worker_creates_the_daily_digest_schedule_once(worker: Any, settings: Any) -> None:
    settings.TOLLGATE_DIGEST_HOUR = 6

    async def ensure() -> tuple[bool, bool, Any]:
        client = await Client.connect(settings.TEMPORAL_ADDRESS)
        try:
            created = await ensure_digest_schedule(client, task_queue=settings.TEMPORAL_TASK_QUEUE)
            again = await ensure_digest_schedule(client, task_queue=settings.TEMPORAL_TASK_QUEUE)
            described = await client.get_schedule_handle(DIGEST_SCHEDULE_ID).describe()
        finally:
            await client.get_schedule_handle(DIGEST_SCHEDULE_ID).delete()
        return created, again, described

    created, again, described = run_async(ensure)
    assert (created, again) == (True, False)
    (calendar,) = described.schedule.spec.calendars
    assert [r.start for r in calendar.hour] == [6] and described.schedule.spec.time_zone_name == settings.TIME_ZONE
    assert described.schedule.action.workflow == DIGEST_WORKFLOW
