"""The daily mail digest as a deterministic workflow: no Django, ORM, settings or I/O imports.

The worker registers ``WORKFLOWS``; the activity and the schedule that starts this workflow once a
day live in ``approvals/digest.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

DIGEST_WORKFLOW = "MailDigestWorkflow"


@dataclass(frozen=True)
class SendDigestsInput:
    """Input of ``MailDigestWorkflow`` (room for options later)."""

    reason: str = "schedule"


@dataclass(frozen=True)
class SendDigestsResult:
    sent: int = 0
    nothing_open: int = 0


@workflow.defn(name=DIGEST_WORKFLOW)
class MailDigestWorkflow:
    """One round of digests: every user who chose a daily digest gets their open tasks."""

    @workflow.run
    async def run(self, data: SendDigestsInput) -> SendDigestsResult:
        # Retries are safe: the activity marks each user's digest as sent for the day, so a retry
        # after a mail server hiccup mails only those still waiting.
        return await workflow.execute_activity(
            "send_mail_digests",
            data,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=30), maximum_attempts=5),
            result_type=SendDigestsResult,
        )


WORKFLOWS: list[type] = [MailDigestWorkflow]
