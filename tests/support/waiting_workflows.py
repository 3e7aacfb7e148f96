"""Workflows that wait in different ways, for the stuck rules and the execution page (imported by
the sandbox: stdlib and temporalio only)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy


@workflow.defn(name="MonIdleWorkflow")
class MonIdleWorkflow:
    """Waits on a condition nothing can ever make true: no timer, no activity, no signal handler."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn(name="MonInboxWorkflow")
class MonInboxWorkflow:
    """Waits for a ``poke`` signal, without a timer: idle, but a signal can wake it."""

    def __init__(self) -> None:
        self._poked = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._poked)

    @workflow.signal(name="poke")
    def poke(self) -> None:
        self._poked = True

    @workflow.query(name="progress")
    def progress(self) -> dict[str, Any]:
        return {"poked": self._poked, "note": "<b>not bold</b>"}


@activity.defn(name="mon_flaky_step")
def mon_flaky_step(fail_times: int) -> str:
    if activity.info().attempt <= fail_times:
        raise RuntimeError(f"step failed <attempt {activity.info().attempt}>")
    return f"done after {activity.info().attempt}"


@workflow.defn(name="MonOutcomeWorkflow")
class MonOutcomeWorkflow:
    """A flaky activity, a short timer, then the outcome it is given (``{"outcome": "rejected"}``)."""

    @workflow.run
    async def run(self, data: dict[str, Any]) -> dict[str, Any]:
        step = await workflow.execute_activity(
            "mon_flaky_step",
            data.get("fail_times", 1),
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0),
        )
        await asyncio.sleep(0.5)
        return {"outcome": data["outcome"], "step": step}


WAITING_WORKFLOWS = [MonIdleWorkflow, MonInboxWorkflow, MonOutcomeWorkflow]
WAITING_ACTIVITIES = [mon_flaky_step]
