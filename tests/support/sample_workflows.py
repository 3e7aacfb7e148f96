"""Small workflows with known outcomes, for the monitoring tests only (imported by the sandbox: keep it light)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError


@workflow.defn(name="MonMixWorkflow")
class MonMixWorkflow:
    """mode "ok" sleeps ``seconds`` then completes; "fail" fails with ``message``; "hang" waits an hour."""

    @workflow.run
    async def run(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["mode"] == "fail":
            raise ApplicationError(data["message"], type="Boom", non_retryable=True)
        await asyncio.sleep(data.get("seconds", 3600) if data["mode"] == "ok" else 3600)
        return {"done": True, "blob": data.get("blob", "")}


@activity.defn(name="mon_always_fails")
def mon_always_fails(message: str) -> None:
    raise RuntimeError(message)


@workflow.defn(name="MonRetryWorkflow")
class MonRetryWorkflow:
    """Runs an activity that fails on every attempt, retrying every second until cancelled."""

    @workflow.run
    async def run(self, message: str) -> None:
        await workflow.execute_activity(
            "mon_always_fails",
            message,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=1.0),
        )


@activity.defn(name="mon_flaky")
def mon_flaky(fail_times: int) -> int:
    """Fails its first ``fail_times`` attempts, then succeeds: decided by the attempt number."""
    attempt = activity.info().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"flaky, attempt {attempt}")
    return attempt


@workflow.defn(name="MonFlakyWorkflow")
class MonFlakyWorkflow:
    """Runs ``mon_flaky`` once for each entry of ``fail_times``, in turn."""

    @workflow.run
    async def run(self, fail_times: list[int]) -> list[int]:
        return [
            await workflow.execute_activity(
                "mon_flaky",
                n,
                start_to_close_timeout=timedelta(seconds=5),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0),
            )
            for n in fail_times
        ]


@workflow.defn(name="MonBrokenWorkflow")
class MonBrokenWorkflow:
    """A bug, not a failure: every workflow task fails and is retried by the server."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug in the workflow code")


SAMPLE_WORKFLOWS = [MonMixWorkflow, MonRetryWorkflow, MonFlakyWorkflow, MonBrokenWorkflow]
SAMPLE_ACTIVITIES: list[Callable[..., Any]] = [mon_always_fails, mon_flaky]
