"""Deterministic monitoring workflows: no Django, ORM, settings or I/O imports.

The worker registers ``WORKFLOWS``; the activity and the schedule that starts this
workflow live in ``monitoring/snapshot.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

SNAPSHOT_WORKFLOW = "MonitoringSnapshotWorkflow"


@dataclass(frozen=True)
class RefreshSnapshotInput:
    """Input of ``MonitoringSnapshotWorkflow`` (room for options later)."""

    reason: str = "schedule"


@dataclass(frozen=True)
class RefreshSnapshotResult:
    closed_read: int = 0
    running_read: int = 0
    described: int = 0
    watermark: str = ""


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


WORKFLOWS: list[type] = [MonitoringSnapshotWorkflow]
