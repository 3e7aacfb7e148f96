"""Reference workflow: a fan-out/fan-in approval campaign. Deterministic code only.

``ApprovalCampaignWorkflow`` asks every approver on a list at once, one child
``ApprovalWorkflow`` each (first level overridden to that one user), and adds up
the outcomes: how many approved, rejected, expired, were cancelled or failed,
and who rejected with which comment.

Bounded fan-out. Temporal's guidance is to keep a parent under about 1,000
child workflows: every child costs the parent's history at least three events
(initiated, started, completed or failed), and the initiated event carries the
child's whole input. So no campaign workflow has more than ``fan_out_limit``
(2..1000, default 500) children: with more approvers than that, it splits them
into at most ``fan_out_limit`` contiguous shares and starts one sub-campaign
(this same workflow type, ``part`` set) per share, recursively. A campaign of
N approvers is a tree of depth ceil(log_limit(N)); its leaves are approvals.

History cost, measured (bench/campaign_bench.py, dev server, 1,000 approvers
with limit 1,000, a 1 KB payload, cancelled at the end): 8,984 events, 2.82 MB,
of which the 1,000 child start events were 1.48 MB. The payload is capped at
4 KB of JSON (``MAX_CAMPAIGN_PAYLOAD``), so a full parent stays near 6 MB and
under 10,000 events: below Temporal's warnings (10 MB, 10,240 events), far
below its limits (50 MB, 51,200 events), with no need to continue as new.

Progress. The ``progress`` query returns the counts of this workflow's children
that have ended. A sub-campaign's outcomes are added when it ends (its own
``progress`` query, listed in ``running_parts``, shows them before): signalling
every outcome up the tree would cost the root one event per approver, which is
what the tree is there to avoid.

Cancellation. Cancelling a campaign cancels its children (approvals close
their tasks as cancelled; sub-campaigns pass the cancellation down), waits for
them, and returns the counts with status ``cancelled``. If a campaign is
terminated instead, its children are asked to cancel (``REQUEST_CANCEL`` parent
close policy), so no inbox keeps a task nobody waits for.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows.reference import failure_message
from workflows.types import (
    MAX_REJECTIONS,
    OUTCOMES,
    PARENT_TYPE_MEMO,
    ApprovalResult,
    CampaignInput,
    CampaignResult,
    InputError,
)

CAMPAIGN_WORKFLOW = "ApprovalCampaignWorkflow"
COUNTED = (*OUTCOMES, "failed")


def approval_id(campaign_id: str, user: str) -> str:
    """The child ApprovalWorkflow's id: the same for an approver wherever the tree puts them."""
    return f"approval-campaign-{campaign_id}-{user}"


def part_id(campaign_id: str, part: str) -> str:
    return f"campaign-{campaign_id}-part-{part}"


def shares(approvers: list[str], limit: int) -> list[list[str]]:
    """At most ``limit`` contiguous shares of nearly equal size (the first ones one longer)."""
    count = min(limit, -(-len(approvers) // limit))
    size, extra = divmod(len(approvers), count)
    result, start = [], 0
    for number in range(count):
        end = start + size + (1 if number < extra else 0)
        result.append(approvers[start:end])
        start = end
    return result


@workflow.defn(name=CAMPAIGN_WORKFLOW)
class ApprovalCampaignWorkflow:
    def __init__(self) -> None:
        self._campaign: CampaignInput | None = None
        self._counts = dict.fromkeys(COUNTED, 0)
        self._rejections: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._running_parts: list[str] = []

    @workflow.run
    async def run(self, raw: Any) -> CampaignResult:
        try:
            campaign = self._campaign = CampaignInput.parse(raw)
        except InputError as exc:
            raise ApplicationError(f"invalid input: {exc}", exc.field, type="InvalidInput", non_retryable=True)
        if len(campaign.approvers) <= campaign.fan_out_limit:
            jobs = [(self._ask(campaign, user), [user]) for user in campaign.approvers]
        else:
            jobs = [
                (self._delegate(campaign, number, share), share)
                for number, share in enumerate(shares(campaign.approvers, campaign.fan_out_limit), start=1)
            ]
        tasks = [(asyncio.create_task(job), users) for job, users in jobs]
        status = "completed"
        try:
            await workflow.wait_condition(lambda: all(task.done() for task, _ in tasks))
        except asyncio.CancelledError:
            # Cancelled through Temporal: pass it to every child and wait for their outcomes.
            status = "cancelled"
            for task, _ in tasks:
                task.cancel()
            await workflow.wait_condition(lambda: all(task.done() for task, _ in tasks))
        for task, users in tasks:
            if task.cancelled():  # cancelled before it could record anything
                self._counts["cancelled"] += len(users)
        return self._result(status)

    async def _ask(self, campaign: CampaignInput, user: str) -> None:
        try:
            result = await workflow.execute_child_workflow(
                "ApprovalWorkflow",
                {
                    "request_id": f"campaign-{campaign.campaign_id}-{user}",
                    "title": campaign.title,
                    "description": campaign.description,
                    "requested_by": campaign.requested_by,
                    "payload": campaign.payload,
                    "policy": campaign.policy or None,
                    "approvers": {"users": [user]},
                    "request_type": "campaign",
                },
                id=approval_id(campaign.campaign_id, user),
                task_queue=campaign.approvals_queue or workflow.info().task_queue,
                result_type=ApprovalResult,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                memo={PARENT_TYPE_MEMO: CAMPAIGN_WORKFLOW},
            )
        except (ChildWorkflowError, WorkflowAlreadyStartedError) as exc:
            self._counts["failed"] += 1
            self._keep(self._failures, {"user": user, "error": failure_message(exc)[:500]})
        except asyncio.CancelledError:
            self._counts["cancelled"] += 1
        else:
            self._counts[result.outcome if result.outcome in COUNTED else "failed"] += 1
            if result.outcome == "rejected":
                self._keep(
                    self._rejections, {"user": user, "comment": result.comment[:500], "decided_at": result.decided_at}
                )

    async def _delegate(self, campaign: CampaignInput, number: int, share: list[str]) -> None:
        part = f"{campaign.part}.{number}" if campaign.part else str(number)
        child_id = part_id(campaign.campaign_id, part)
        self._running_parts.append(child_id)
        try:
            result = await workflow.execute_child_workflow(
                CAMPAIGN_WORKFLOW,
                asdict(replace(campaign, approvers=share, part=part)),
                id=child_id,
                task_queue=workflow.info().task_queue,
                result_type=CampaignResult,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            )
        except (ChildWorkflowError, WorkflowAlreadyStartedError) as exc:
            self._counts["failed"] += len(share)
            self._keep(
                self._failures, {"user": f"{len(share)} approvers of part {part}", "error": failure_message(exc)[:500]}
            )
        except asyncio.CancelledError:
            self._counts["cancelled"] += len(share)
        else:
            for outcome, count in result.counts.items():
                self._counts[outcome] = self._counts.get(outcome, 0) + count
            for entry in result.rejections:
                self._keep(self._rejections, entry)
            for entry in result.failures:
                self._keep(self._failures, entry)
        finally:
            self._running_parts.remove(child_id)

    @staticmethod
    def _keep(entries: list[dict[str, Any]], entry: dict[str, Any]) -> None:
        if len(entries) < MAX_REJECTIONS:
            entries.append(entry)

    def _result(self, status: str) -> CampaignResult:
        campaign = self._campaign
        return CampaignResult(
            campaign_id=campaign.campaign_id if campaign else "",
            status=status,
            total=len(campaign.approvers) if campaign else 0,
            counts=dict(self._counts),
            rejections=list(self._rejections),
            failures=list(self._failures),
            part=campaign.part if campaign else "",
        )

    @workflow.query(name="progress")
    def progress(self) -> dict[str, Any]:
        """Counts of the children that have ended so far; ``pending`` is everyone else."""
        result = asdict(self._result("running"))
        result["finished"] = sum(self._counts.values())
        result["pending"] = result["total"] - result["finished"]
        result["running_parts"] = list(self._running_parts)
        return result
