"""The monitoring snapshot: what the worker refreshes every few seconds from Temporal visibility.

``MonitoringSnapshotWorkflow`` (monitoring/workflows.py) runs the ``refresh_monitoring_snapshot``
activity below on a Temporal schedule (``ensure_snapshot_schedule``, created by the worker at
start). The refresh reads what changed since its watermark and upserts it into the ``Execution``
rows the monitoring pages read (``monitoring/services.py``); it is idempotent and safe to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from approvals import live
from approvals import services as approval_services
from approvals.models import ApprovalTask
from monitoring import visibility
from monitoring.models import Execution, SnapshotState
from monitoring.services import ATTEMPTS_WINDOW, NUL, storable, store_window_health
from monitoring.workflows import SNAPSHOT_WORKFLOW, RefreshSnapshotInput, RefreshSnapshotResult
from workflows import client as temporal

log = logging.getLogger(__name__)
T = TypeVar("T")
SNAPSHOT_SCHEDULE_ID = "tollgate-monitoring-snapshot"


@dataclass(frozen=True)
class RefreshResult:
    closed_read: int
    running_read: int
    described: int
    watermark: datetime | None
    truncated: bool


def refresh_snapshot() -> RefreshResult:
    """Read what changed since the watermark and upsert it; idempotent, safe to retry."""
    state = SnapshotState.current()
    now = timezone.now()
    since = state.close_watermark or now - timedelta(days=settings.MONITORING_BACKFILL_DAYS)
    since -= timedelta(seconds=settings.MONITORING_VISIBILITY_LAG_SECONDS)
    described_at, waiting_read_at = {}, {}
    for wid, rid, at, waiting in Execution.objects.filter(status="running", described_at__isnull=False).values_list(
        "workflow_id", "run_id", "described_at", "waiting"
    ):
        described_at[(wid, rid)] = at
        if isinstance(waiting, dict) and "at_length" in waiting:
            waiting_read_at[(wid, rid)] = waiting["at_length"]
    try:
        changes = temporal.run(
            visibility.read_changes,
            closed_query=f'CloseTime > "{visibility.visibility_time(since)}"',
            max_closed=settings.MONITORING_MAX_CLOSED_PER_REFRESH,
            running_limit=settings.MONITORING_RUNNING_LIMIT,
            describe_limit=settings.MONITORING_DESCRIBE_LIMIT,
            described_at=described_at,
            waiting_read_at=waiting_read_at,
        )
    except temporal.TemporalError as exc:
        SnapshotState.objects.filter(pk=state.pk).update(last_error=str(exc)[:2000])
        raise
    closed, running = [i for i in changes.closed if _storable(i)], [i for i in changes.running if _storable(i)]
    if skipped := len(changes.closed) + len(changes.running) - len(closed) - len(running):
        log.warning(
            "monitoring refresh left out %d runs whose ids hold a NUL character (no database text can)", skipped
        )
    with transaction.atomic():
        _upsert(closed, now=now, closed=True)
        _upsert(running, now=now, closed=False)
        for described in changes.described:
            if _storable(described.info):
                _apply_describe(described, now=now)
        for (workflow_id, run_id), message in changes.failures.items():
            if storable(workflow_id, run_id):
                Execution.objects.filter(workflow_id=workflow_id, run_id=run_id).update(
                    failure_message=_without_nul(message[:5000])
                )
        newest = max((i.close_time for i in changes.closed if i.close_time), default=None)
        watermark = max(filter(None, [state.close_watermark, newest])) if newest else state.close_watermark
        if watermark is None:
            watermark = now - timedelta(days=settings.MONITORING_BACKFILL_DAYS)
        SnapshotState.objects.filter(pk=state.pk).update(
            close_watermark=watermark,
            refreshed_at=now,
            last_error="",
            last_closed_read=len(changes.closed),
            last_running_read=len(changes.running),
            truncated=changes.truncated,
        )
    store_window_health(now)
    read_closed_attempts(now=now)
    close_tasks_ended_outside(closed)
    live.monitoring_changed()
    if changes.truncated:
        log.warning("monitoring refresh read its limit of %d closed runs", settings.MONITORING_MAX_CLOSED_PER_REFRESH)
    return RefreshResult(
        len(changes.closed), len(changes.running), len(changes.described), watermark, changes.truncated
    )


def read_closed_attempts(*, now: datetime, limit: int | None = None) -> int:
    """Read the activity attempts of up to ``limit`` closed runs of the last 7 days not read yet,
    newest first: one history read each, so a refresh's cost stays bounded and a backlog drains
    over the following refreshes. Failing here never fails the refresh: the next one tries again."""
    limit = settings.MONITORING_ATTEMPTS_PER_REFRESH if limit is None else limit
    runs = list(
        Execution.objects.filter(close_time__gte=now - ATTEMPTS_WINDOW, activity_attempts__isnull=True)
        .order_by("-close_time")
        .values_list("workflow_id", "run_id")[:limit]
    )
    if not runs:
        return 0
    try:
        found = temporal.run(visibility.read_activity_attempts, runs=runs)
    except temporal.TemporalError as exc:
        log.warning("could not read activity attempts: %s", exc)
        return 0
    for (workflow_id, run_id), counts in found.items():
        Execution.objects.filter(workflow_id=workflow_id, run_id=run_id).update(activity_attempts=_without_nul(counts))
    return len(found)


def close_tasks_ended_outside(closed: list[visibility.ExecutionInfo], *, limit: int = 20) -> int:
    """Close the tasks of approval workflows that ended without running their own ending.

    A terminated, timed-out or failed ``ApprovalWorkflow`` never calls ``complete_task``, so its task
    would stay pending in the inbox, inviting decisions that can no longer apply. The refresh sees
    those runs close; before closing a task it checks that the workflow id has no run still going
    (a reset terminates the old run and goes on in a new one), through the function a decision that
    finds its workflow closed uses too. At most ``limit`` checks per refresh.
    """
    candidates = {
        i.workflow_id
        for i in closed
        if i.workflow_type == "ApprovalWorkflow" and i.status in approval_services.ENDED_OUTSIDE
    }
    if not candidates:
        return 0
    open_ids = ApprovalTask.objects.filter(
        workflow_id__in=list(candidates), status__in=[ApprovalTask.Status.PENDING, ApprovalTask.Status.STARTING]
    ).values_list("workflow_id", flat=True)
    done = 0
    for workflow_id in list(open_ids)[:limit]:
        try:
            done += approval_services.close_task_from_workflow(workflow_id=workflow_id)
        except temporal.TemporalError:
            break  # the next refresh tries again
    return done


def _storable(info: visibility.ExecutionInfo) -> bool:
    """One run with a NUL in its names would fail the whole refresh: such runs stay out of the
    snapshot; the explorer and their execution page still show them, live."""
    return storable(info.workflow_id, info.run_id, info.workflow_type, info.task_queue)


def _without_nul(value: T) -> T:
    """Messages and activity details as the snapshot stores them: a NUL, which neither PostgreSQL
    text nor jsonb can hold, becomes U+FFFD (the replacement character)."""
    if isinstance(value, str):
        return value.replace(NUL, "\ufffd")  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_without_nul(v) for v in value]  # type: ignore[return-value]
    return value


def _upsert(infos: list[visibility.ExecutionInfo], *, now: datetime, closed: bool) -> None:
    if not infos:
        return
    rows = [
        Execution(
            workflow_id=i.workflow_id,
            run_id=i.run_id,
            workflow_type=i.workflow_type,
            status=i.status,
            task_queue=i.task_queue,
            start_time=i.start_time,
            close_time=i.close_time,
            duration=i.duration,
            history_length=i.history_length or 0,
            pending_activities=[],
            progress_at=i.close_time or i.start_time,
            seen_at=now,
        )
        for i in infos
    ]
    # A running run's visibility record lags its history length: describes keep that current.
    fields = ["workflow_type", "status", "task_queue", "start_time", "seen_at"]
    if closed:
        fields += ["close_time", "duration", "history_length", "pending_activities", "progress_at"]
    Execution.objects.bulk_create(
        rows, batch_size=500, update_conflicts=True, unique_fields=["workflow_id", "run_id"], update_fields=fields
    )


def _apply_describe(described: visibility.Described, *, now: datetime) -> None:
    info = described.info
    row = Execution.objects.filter(workflow_id=info.workflow_id, run_id=info.run_id).first()
    if row is None:
        return
    length = info.history_length or 0
    if row.history_length != length or row.progress_at is None:
        row.progress_at = now
    row.history_length = length
    row.pending_activities = _without_nul(described.pending_activities)
    row.described_at = now
    row.workflow_task_attempt = described.workflow_task_attempt
    children = len(described.pending_children)
    if described.waiting is not None:
        row.waiting = _without_nul({**described.waiting, "children": children})
    elif described.pending_activities or children:
        # Busy: what an earlier idle read found no longer applies (and is read again once idle).
        row.waiting = {"children": children}
    # else: idle or failing at the length already read: the stored reading still holds.
    row.save(
        update_fields=["history_length", "pending_activities", "progress_at", "described_at", "workflow_task_attempt",
                       "waiting"]
    )  # fmt: skip


# ---- the worker's side: the activity and its schedule ------------------------------------


@activity.defn(name="refresh_monitoring_snapshot")
def refresh_monitoring_snapshot(data: RefreshSnapshotInput) -> RefreshSnapshotResult:
    result = refresh_snapshot()
    watermark = result.watermark.isoformat() if result.watermark else ""
    return RefreshSnapshotResult(result.closed_read, result.running_read, result.described, watermark)


ACTIVITIES: list[Callable[..., Any]] = [refresh_monitoring_snapshot]


async def ensure_snapshot_schedule(client: Client, *, task_queue: str | None = None) -> bool:
    """Create the monitoring snapshot schedule unless it exists; True when created."""
    queue = task_queue or settings.TEMPORAL_TASK_QUEUE
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SNAPSHOT_WORKFLOW,
            RefreshSnapshotInput(),
            id=f"{SNAPSHOT_SCHEDULE_ID}-run",
            task_queue=queue,
            execution_timeout=timedelta(minutes=10),
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.MONITORING_REFRESH_SECONDS))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(SNAPSHOT_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        return False
    log.info(
        "created schedule %r: monitoring snapshot every %ss", SNAPSHOT_SCHEDULE_ID, settings.MONITORING_REFRESH_SECONDS
    )
    return True
