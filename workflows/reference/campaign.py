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
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

from workflows.parsing import (
    MAX_NODES,
    InputError,
    json_object,
    json_type,
    known_keys,
    string_field,
    whole_number,
)
from workflows.reference.common import failure_message, parse_input
from workflows.types import OUTCOMES, PARENT_TYPE_MEMO, ApprovalResult

MAX_CAMPAIGN_PAYLOAD = 4_000  # bytes of JSON: copied into every child's start event (see workflows/campaign.py)
MAX_REJECTIONS = 50  # rejecters (and failures) a campaign's result lists; the counts cover everyone


MAX_APPROVERS = 100_000  # about 2 MB of usernames: Temporal refuses larger payloads
CAMPAIGN_FIELDS = (
    "campaign_id",
    "title",
    "approvers",
    "requested_by",
    "description",
    "payload",
    "policy",
    "fan_out_limit",
    "approvals_queue",
    "part",
)


@dataclass(frozen=True)
class CampaignInput:
    """Input of ``ApprovalCampaignWorkflow``; a sub-campaign gets the same shape with its
    share of the approvers and ``part`` set (e.g. "2.1"): the campaign id stays the root's."""

    campaign_id: str
    title: str
    approvers: list[str]
    requested_by: str = ""
    description: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    policy: str = ""
    fan_out_limit: int = 500
    approvals_queue: str = ""
    part: str = ""  # "" for the campaign itself

    @classmethod
    def parse(cls, raw: Any) -> CampaignInput:
        raw = json_object(raw, max_nodes=MAX_APPROVERS + MAX_NODES)
        known_keys(raw, CAMPAIGN_FIELDS)
        approvers = raw.get("approvers")
        if not isinstance(approvers, list) or not approvers:
            raise InputError("approvers", "must be a non-empty array of usernames")
        if len(approvers) > MAX_APPROVERS:
            raise InputError("approvers", f"must list at most {MAX_APPROVERS} usernames")
        unique: list[str] = []  # first-seen order, so the tree's shape follows the caller's list
        for number, name in enumerate(approvers):
            if not isinstance(name, str) or not name.strip() or len(name.strip()) > 150:
                raise InputError(f"approvers[{number}]", "must be a username (1 to 150 characters)")
            if name.strip() not in unique:
                unique.append(name.strip())
        payload = raw.get("payload", {})
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InputError("payload", f"must be a JSON object, got {json_type(payload)}")
        encoded = json.dumps(payload)
        if "\\u0000" in encoded:
            raise InputError("payload", "must not contain NUL characters")
        if len(encoded) > MAX_CAMPAIGN_PAYLOAD:
            raise InputError(
                "payload", f"must be at most {MAX_CAMPAIGN_PAYLOAD} bytes of JSON (each approver gets a copy)"
            )
        limit = whole_number(raw, "fan_out_limit", default=500, minimum=2, maximum=1000)
        requested_by = string_field(raw, "requested_by", required=False, max_length=150)
        if requested_by and requested_by in unique:
            raise InputError("approvers", f"must not include the requester {requested_by!r} (four-eyes rule)")
        part = string_field(raw, "part", required=False, max_length=200)
        if part and not all(piece.isdigit() for piece in part.split(".")):
            raise InputError("part", "must be dot-separated numbers (set by the parent campaign)")
        return cls(
            campaign_id=string_field(raw, "campaign_id", required=True, max_length=100),
            title=string_field(raw, "title", required=True, max_length=300),
            approvers=unique,
            requested_by=requested_by,
            description=string_field(raw, "description", required=False),
            payload=payload,
            policy=string_field(raw, "policy", required=False, max_length=100),
            fan_out_limit=limit,
            approvals_queue=string_field(raw, "approvals_queue", required=False, max_length=200),
            part=part,
        )


@dataclass(frozen=True)
class CampaignResult:
    campaign_id: str
    status: str  # completed | cancelled
    total: int
    counts: dict[str, int]  # approved, rejected, expired, cancelled, failed
    rejections: list[dict[str, Any]]  # {"user", "comment", "decided_at"}, the first MAX_REJECTIONS
    failures: list[dict[str, Any]]  # {"user", "error"}: children that failed (unknown user, bad policy...)
    part: str = ""


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
        campaign = self._campaign = parse_input(CampaignInput.parse, raw)
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
