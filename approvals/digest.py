"""The worker's side of the daily mail digest: the activity, and the Temporal schedule that runs
``MailDigestWorkflow`` (``approvals/digest_workflow.py``) once a day at ``TOLLGATE_DIGEST_HOUR`` in
``TIME_ZONE``. No Celery and no cron: like monitoring's snapshot, the schedule lives in Temporal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
)

from approvals import services
from approvals.digest_workflow import DIGEST_WORKFLOW, SendDigestsInput, SendDigestsResult

log = logging.getLogger(__name__)
DIGEST_SCHEDULE_ID = "tollgate-mail-digest"


@activity.defn(name="send_mail_digests")
def send_mail_digests(data: SendDigestsInput) -> SendDigestsResult:
    sent, nothing_open = services.send_digests()
    return SendDigestsResult(sent=sent, nothing_open=nothing_open)


ACTIVITIES: list[Callable[..., Any]] = [send_mail_digests]


def digest_schedule(*, task_queue: str | None = None) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DIGEST_WORKFLOW,
            SendDigestsInput(),
            id=f"{DIGEST_SCHEDULE_ID}-run",
            task_queue=task_queue or settings.TEMPORAL_TASK_QUEUE,
            execution_timeout=timedelta(hours=1),
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    hour=[ScheduleRange(settings.TOLLGATE_DIGEST_HOUR)],
                    minute=[ScheduleRange(0)],
                    second=[ScheduleRange(0)],
                )
            ],
            time_zone_name=settings.TIME_ZONE,
        ),
        # A worker that was down at the hour catches up once when it is back, within the day.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=12)),
    )


async def ensure_digest_schedule(client: Client, *, task_queue: str | None = None) -> bool:
    """Create the daily digest schedule unless it exists; True when created."""
    try:
        await client.create_schedule(DIGEST_SCHEDULE_ID, digest_schedule(task_queue=task_queue))
    except ScheduleAlreadyRunningError:
        return False
    log.info("created schedule %r: mail digests daily at %02d:00 %s", DIGEST_SCHEDULE_ID,
             settings.TOLLGATE_DIGEST_HOUR, settings.TIME_ZONE)  # fmt: skip
    return True
