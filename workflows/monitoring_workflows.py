"""Deterministic monitoring workflows: no Django, ORM, settings or I/O imports."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.types import RefreshSnapshotInput, RefreshSnapshotResult

SNAPSHOT_WORKFLOW = "MonitoringSnapshotWorkflow"


@workflow.defn(name=SNAPSHOT_WORKFLOW)
class MonitoringSnapshotWorkflow:
    """One refresh of the monitoring snapshot; a schedule starts it every few seconds."""

    @workflow.run
    async def run(self, data: RefreshSnapshotInput) -> RefreshSnapshotResult:
        # Few attempts: the next scheduled run starts from the same watermark anyway.
        return await workflow.execute_activity(
            "refresh_monitoring_snapshot",
            data,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3),
            result_type=RefreshSnapshotResult,
        )
