"""Builds the worker: the approval workflow and its activities on one task queue."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DataError, close_old_connections
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
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows import activities, pipeline_activities, reference_activities
from workflows.campaign import ApprovalCampaignWorkflow
from workflows.monitoring_workflows import SNAPSHOT_WORKFLOW, MonitoringSnapshotWorkflow
from workflows.pipeline import DeploymentPipelineWorkflow
from workflows.reference import OrderSagaWorkflow, TeamBudgetWorkflow
from workflows.types import RefreshSnapshotInput
from workflows.workflows import ApprovalWorkflow

log = logging.getLogger(__name__)
WORKFLOWS: Sequence[type] = [
    ApprovalWorkflow,
    MonitoringSnapshotWorkflow,
    OrderSagaWorkflow,
    TeamBudgetWorkflow,
    ApprovalCampaignWorkflow,
    DeploymentPipelineWorkflow,
]
SNAPSHOT_SCHEDULE_ID = "tollgate-monitoring-snapshot"
# The sandbox re-imports a workflow's modules for every workflow run it starts; ``workflows.types``
# (stdlib-only frozen dataclasses and pure parsers, no state) is passed through instead, imported
# once: re-running it cost about 18% of the worker's CPU under load (bench/throughput_bench.py).
SANDBOX = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows.types"))


class _CloseConnections(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        # The interceptor itself runs on the event loop; only ``input.fn`` runs
        # in the pool thread that owns the Django connection. So wrap ``fn``:
        # Django's per-request clean-up never happens in a worker, and a
        # connection the database dropped must be replaced, not reused.
        if inspect.iscoroutinefunction(input.fn):
            return await self.next.execute_activity(input)
        fn = input.fn

        @functools.wraps(fn)
        def in_thread(*args: Any) -> Any:
            close_old_connections()
            try:
                return fn(*args)
            except DataError as exc:
                # A value the database refuses will be refused on every retry:
                # fail the activity for good instead of retrying forever.
                raise ApplicationError(f"database refused the data: {exc}", type="InvalidData", non_retryable=True)
            finally:
                close_old_connections()

        return await self.next.execute_activity(dataclasses.replace(input, fn=in_thread))


class DjangoConnectionInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CloseConnections(next)


def build_worker(
    client: Client, executor: ThreadPoolExecutor, *, task_queue: str | None = None, cache_workflows: bool = True
) -> Worker:
    """``cache_workflows=False`` turns off the workflow cache and with it sticky task queues, so a
    worker that stops leaves no workflow task bound to it (tests that stop a worker midway)."""
    return Worker(
        client,
        task_queue=task_queue or settings.TEMPORAL_TASK_QUEUE,
        workflows=list(WORKFLOWS),
        activities=[*activities.ALL, *reference_activities.ALL, *pipeline_activities.ALL],
        activity_executor=executor,
        max_concurrent_activities=executor._max_workers,  # one slot per pool thread
        interceptors=[DjangoConnectionInterceptor()],
        graceful_shutdown_timeout=timedelta(seconds=10),
        max_cached_workflows=settings.TOLLGATE_WORKFLOW_CACHE_SIZE if cache_workflows else 0,
        workflow_runner=SANDBOX,
    )


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


async def relay_outbox(stop: asyncio.Event, *, interval: float | None = None) -> None:
    """Deliver decisions and workflow starts that failed while Temporal was down."""
    from asgiref.sync import sync_to_async

    from approvals.services import deliver_outbox

    def tick() -> tuple[int, int]:
        close_old_connections()  # as around each activity: no connection the database dropped
        try:
            return deliver_outbox()
        finally:
            close_old_connections()

    every = interval or settings.TOLLGATE_OUTBOX_INTERVAL_SECONDS
    while not stop.is_set():
        try:
            delivered, started = await sync_to_async(tick, thread_sensitive=False)()
            if delivered or started:
                log.info("outbox: delivered %d decision(s), started %d workflow(s)", delivered, started)
        except Exception:  # keep relaying whatever one tick hit
            log.exception("outbox relay tick failed")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
