"""Data shapes that cross the Temporal boundary. Standard library only.

The workflow's own input and the ``decide``/``cancel`` signal arguments arrive
as plain JSON objects from clients in any language, so they are parsed here by
hand: a wrong field gives an error that names it, instead of a payload
conversion failure that would retry the workflow task forever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("approved", "rejected", "expired", "cancelled")
FINAL_ACTIONS = {"expire": "expired", "approve": "approved", "reject": "rejected"}
DECISIONS = {"approve": "approved", "reject": "rejected"}
MAX_TEXT = 10_000
# Memo key a parent sets on a child ApprovalWorkflow so the task page can name the parent's
# type (``workflow.info().parent`` carries only its id and run id). Optional: any parent works.
PARENT_TYPE_MEMO = "parent_type"


class InputError(ValueError):
    """A field of a JSON object from a client is missing or of the wrong type."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


def _string(raw: dict[str, Any], name: str, *, required: bool, max_length: int = MAX_TEXT) -> str:
    value = raw.get(name)
    if value is None:
        if required:
            raise InputError(name, "is required")
        return ""
    if not isinstance(value, str):
        raise InputError(name, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if "\x00" in value:
        raise InputError(name, "must not contain NUL characters")
    if required and not value:
        raise InputError(name, "must not be empty")
    if len(value) > max_length:
        raise InputError(name, f"must be at most {max_length} characters")
    return value


def _string_list(raw: dict[str, Any], name: str, prefix: str) -> list[str]:
    value = raw.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(f"{prefix}.{name}", "must be a list of non-empty strings")
    return sorted({v.strip() for v in value})


@dataclass(frozen=True)
class Approvers:
    groups: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.groups and not self.users


@dataclass(frozen=True)
class ApprovalInput:
    request_id: str
    title: str
    description: str = ""
    requested_by: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    policy: str = ""
    approvers: Approvers | None = None
    request_type: str = ""

    @classmethod
    def parse(cls, raw: Any) -> ApprovalInput:
        if not isinstance(raw, dict):
            raise InputError("input", f"must be a JSON object, got {type(raw).__name__}")
        payload = raw.get("payload") or {}
        if not isinstance(payload, dict):
            raise InputError("payload", f"must be a JSON object, got {type(payload).__name__}")
        if "\\u0000" in json.dumps(payload):
            raise InputError("payload", "must not contain NUL characters")
        approvers = None
        if raw.get("approvers") is not None:
            value = raw["approvers"]
            if not isinstance(value, dict):
                raise InputError("approvers", "must be an object with 'groups' and/or 'users'")
            approvers = Approvers(
                groups=_string_list(value, "groups", "approvers"),
                users=_string_list(value, "users", "approvers"),
            )
            if approvers.empty:
                raise InputError("approvers", "must name at least one group or user")
        return cls(
            request_id=_string(raw, "request_id", required=True, max_length=200),
            title=_string(raw, "title", required=True, max_length=300),
            description=_string(raw, "description", required=False),
            requested_by=_string(raw, "requested_by", required=False, max_length=150),
            payload=payload,
            policy=_string(raw, "policy", required=False, max_length=100),
            approvers=approvers,
            request_type=_string(raw, "request_type", required=False, max_length=100),
        )


@dataclass(frozen=True)
class DecisionSignal:
    decision: str
    user: str
    comment: str
    decision_id: str

    @classmethod
    def parse(cls, raw: Any) -> DecisionSignal:
        if not isinstance(raw, dict):
            raise InputError("decision", "must be a JSON object")
        decision = _string(raw, "decision", required=True, max_length=20)
        if decision not in DECISIONS:
            raise InputError("decision", "must be 'approve' or 'reject'")
        return cls(
            decision=decision,
            user=_string(raw, "user", required=True, max_length=150),
            comment=_string(raw, "comment", required=False),
            decision_id=_string(raw, "decision_id", required=True, max_length=100),
        )


@dataclass(frozen=True)
class CancelSignal:
    user: str
    reason: str

    @classmethod
    def parse(cls, raw: Any) -> CancelSignal:
        if not isinstance(raw, dict):
            raise InputError("cancel", "must be a JSON object")
        return cls(
            user=_string(raw, "user", required=False, max_length=150),
            reason=_string(raw, "reason", required=False),
        )


# Activity arguments and results: one dataclass each, so fields can be added
# without breaking running workflows.


@dataclass(frozen=True)
class LevelSnapshot:
    groups: list[str]
    users: list[str]
    timeout_seconds: int
    reminder_seconds: int | None = None
    required_approvals: int = 1  # added with quorum; older histories lack it

    @classmethod
    def parse(cls, raw: Any, where: str) -> LevelSnapshot:
        if not isinstance(raw, dict):
            raise InputError(where, "must be an object")
        timeout = raw.get("timeout_seconds")
        reminder = raw.get("reminder_seconds")
        required = raw.get("required_approvals", 1)
        if not isinstance(timeout, int) or timeout <= 0:
            raise InputError(f"{where}.timeout_seconds", "must be a positive whole number")
        if reminder is not None and (not isinstance(reminder, int) or not 0 < reminder < timeout):
            raise InputError(f"{where}.reminder_seconds", "must be positive and shorter than the timeout")
        if not isinstance(required, int) or required < 1:
            raise InputError(f"{where}.required_approvals", "must be at least 1")
        level = cls(
            groups=_string_list(raw, "groups", where),
            users=_string_list(raw, "users", where),
            timeout_seconds=timeout,
            reminder_seconds=reminder,
            required_approvals=required,
        )
        if not level.groups and not level.users:
            raise InputError(where, "must name at least one group or user")
        return level


@dataclass(frozen=True)
class PolicySnapshot:
    slug: str
    name: str
    final_action: str
    levels: list[LevelSnapshot]
    version: int = 0
    rejection_is_veto: bool = True

    @classmethod
    def parse(cls, raw: Any) -> PolicySnapshot:
        """A policy version pushed to a running workflow by signal."""
        if not isinstance(raw, dict):
            raise InputError("policy", "must be an object")
        levels = raw.get("levels")
        if not isinstance(levels, list) or not levels:
            raise InputError("policy.levels", "must be a non-empty list")
        final_action = raw.get("final_action")
        if final_action not in FINAL_ACTIONS:
            raise InputError("policy.final_action", "must be expire, approve or reject")
        version = raw.get("version", 0)
        if not isinstance(version, int):
            raise InputError("policy.version", "must be a whole number")
        return cls(
            slug=_string(raw, "slug", required=True, max_length=100),
            name=_string(raw, "name", required=True, max_length=200),
            final_action=final_action,
            levels=[LevelSnapshot.parse(level, f"policy.levels[{i}]") for i, level in enumerate(levels)],
            version=version,
            rejection_is_veto=bool(raw.get("rejection_is_veto", True)),
        )


@dataclass(frozen=True)
class LoadPolicyInput:
    policy: str
    approvers: Approvers | None = None
    request_type: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VoteInput:
    """One counted vote on a level that needs several approvals."""

    workflow_id: str
    decision_id: str
    user: str
    decision: str
    comment: str
    approvals: int
    rejections: int
    required: int
    level: int
    at: str


@dataclass(frozen=True)
class PolicyChangeInput:
    workflow_id: str
    policy: PolicySnapshot
    level: int
    due_at: str
    by: str
    at: str


@dataclass(frozen=True)
class RegisterTaskInput:
    workflow_id: str
    run_id: str
    request: ApprovalInput
    policy: PolicySnapshot
    started_at: str
    due_at: str
    # When the approval runs as a child workflow (a saga, a budget, a campaign, a pipeline):
    # ``workflow.info().parent``, and the parent's type when it put it in the memo.
    parent_workflow_id: str = ""
    parent_run_id: str = ""
    parent_workflow_type: str = ""


@dataclass(frozen=True)
class EscalateInput:
    workflow_id: str
    level: int
    assignees: LevelSnapshot
    due_at: str
    escalations: int
    at: str


@dataclass(frozen=True)
class FailTaskInput:
    workflow_id: str
    error: str


@dataclass(frozen=True)
class NotifyInput:
    """``event_key`` makes the activity idempotent: one mail per event."""

    event_key: str
    workflow_id: str
    kind: str  # "assigned" | "reminder" | "escalated"
    level: int


@dataclass(frozen=True)
class EligibilityInput:
    workflow_id: str
    user: str
    level: int


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    reason: str = ""


@dataclass(frozen=True)
class CompleteTaskInput:
    workflow_id: str
    outcome: str
    decided_by: str | None
    comment: str
    decided_at: str
    level: int
    escalations: int
    decision_id: str | None = None
    ignored: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ApprovalResult:
    outcome: str
    decided_by: str | None
    comment: str
    decided_at: str
    level: int
    escalations: int
    decision_id: str | None = None
    request_id: str = ""


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


# ---- reference workflows (workflows/reference.py) -----------------------------------


def _positive_number(raw: dict[str, Any], name: str, default: float | None = None) -> float:
    value = raw.get(name, default)
    if value is None:
        raise InputError(name, "is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value <= 0:
        raise InputError(name, "must be a positive number")
    return float(value)


def _flag(raw: dict[str, Any], name: str) -> bool:
    value = raw.get(name, False)
    if not isinstance(value, bool):
        raise InputError(name, f"must be true or false, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class OrderItem:
    sku: str
    quantity: int = 1


@dataclass(frozen=True)
class OrderInput:
    order_id: str
    amount: float
    items: list[OrderItem]
    customer: str
    approval_threshold: float = 1000
    approvals_queue: str = ""  # where the child ApprovalWorkflow runs; the saga's own queue when empty
    fail_payment: bool = False  # demo switch: the charge is declined, so the compensations run
    hold_confirm: bool = False  # demo switch: confirmation waits for ``release_hold`` (crash-and-resume demo)

    @classmethod
    def parse(cls, raw: Any) -> OrderInput:
        if not isinstance(raw, dict):
            raise InputError("input", f"must be a JSON object, got {type(raw).__name__}")
        items = raw.get("items")
        if not isinstance(items, list) or not items:
            raise InputError("items", "must be a non-empty list")
        parsed: list[OrderItem] = []
        for number, item in enumerate(items):
            where = f"items[{number}]"
            if not isinstance(item, dict):
                raise InputError(where, "must be an object with 'sku' and 'quantity'")
            sku = _string(item, "sku", required=True, max_length=50)
            quantity = item.get("quantity", 1)
            if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
                raise InputError(f"{where}.quantity", "must be a whole number of at least 1")
            if any(other.sku == sku for other in parsed):
                raise InputError(f"{where}.sku", f"{sku!r} is listed twice")
            parsed.append(OrderItem(sku=sku, quantity=quantity))
        return cls(
            order_id=_string(raw, "order_id", required=True, max_length=50),
            amount=_positive_number(raw, "amount"),
            items=parsed,
            customer=_string(raw, "customer", required=True, max_length=150),
            approval_threshold=_positive_number(raw, "approval_threshold", 1000),
            approvals_queue=_string(raw, "approvals_queue", required=False, max_length=200),
            fail_payment=_flag(raw, "fail_payment"),
            hold_confirm=_flag(raw, "hold_confirm"),
        )


@dataclass(frozen=True)
class LedgerInput:
    """One saga step or compensation: ``action`` is unique per order in the ledger."""

    order_id: str
    action: str
    amount: float = 0
    quantity: int = 0
    undoes: str = ""  # for a compensation: the action it reverses
    fail: bool = False  # charge only: decline it (demo of compensation)
    hold: bool = False  # confirm only: wait for ``release_hold`` first


@dataclass(frozen=True)
class LedgerResult:
    action: str
    applied: bool  # False when a retry found the entry already there, or a compensation had nothing to undo


@dataclass(frozen=True)
class OrderResult:
    order_id: str
    status: str  # confirmed | rejected | expired | cancelled | failed
    done: list[str]  # steps that took effect, in order
    compensated: list[str]  # compensations run, in the order they ran (reverse of registration)
    approval: ApprovalResult | None = None
    error: str = ""


@dataclass(frozen=True)
class SpendSignal:
    amount: float
    by: str
    reason: str
    spend_id: str = ""  # the caller's key: a spend signalled twice is applied once

    @classmethod
    def parse(cls, raw: Any) -> SpendSignal:
        if not isinstance(raw, dict):
            raise InputError("spend", "must be a JSON object")
        return cls(
            amount=_positive_number(raw, "amount"),
            by=_string(raw, "by", required=True, max_length=150),
            reason=_string(raw, "reason", required=False, max_length=500),
            spend_id=_string(raw, "spend_id", required=False, max_length=100),
        )


def _number_at_least(raw: dict[str, Any], name: str, minimum: float, *, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < minimum:
        raise InputError(name, f"must be a number, at least {minimum}")
    return float(value)


@dataclass(frozen=True)
class BudgetInput:
    """A team's budget; also the state one run hands to the next through continue-as-new."""

    team: str
    balance: float
    limit: float  # spends above it need an approval
    max_events: int = 500  # spends handled per run before it continues as new
    approvals_queue: str = ""
    spent: float = 0
    runs: int = 1
    queued: list[dict[str, Any]] = field(default_factory=list)  # signals not yet handled when the run ended
    seen: list[str] = field(default_factory=list)  # recent spend ids, for de-duplication across runs
    recent: list[dict[str, Any]] = field(default_factory=list)  # what the ``balance`` query shows

    @classmethod
    def parse(cls, raw: Any) -> BudgetInput:
        if not isinstance(raw, dict):
            raise InputError("input", f"must be a JSON object, got {type(raw).__name__}")
        balance = raw.get("balance")
        if isinstance(balance, bool) or not isinstance(balance, int | float) or balance != balance or balance < 0:
            raise InputError("balance", "must be a number, zero or more")
        max_events = raw.get("max_events", 500)
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise InputError("max_events", "must be a whole number of at least 1")
        queued = raw.get("queued", [])
        seen = raw.get("seen", [])
        recent = raw.get("recent", [])
        for name, value in (("queued", queued), ("seen", seen), ("recent", recent)):
            if not isinstance(value, list):
                raise InputError(name, "must be a list (state carried by continue-as-new)")
        return cls(
            team=_string(raw, "team", required=True, max_length=100),
            balance=float(balance),
            limit=_positive_number(raw, "limit"),
            max_events=max_events,
            approvals_queue=_string(raw, "approvals_queue", required=False, max_length=200),
            spent=_number_at_least(raw, "spent", 0, default=0),
            runs=int(_number_at_least(raw, "runs", 1, default=1)),
            queued=queued,
            seen=[str(key) for key in seen],
            recent=[entry for entry in recent if isinstance(entry, dict)],
        )


MAX_CAMPAIGN_PAYLOAD = 4_000  # bytes of JSON: copied into every child's start event (see workflows/campaign.py)
MAX_REJECTIONS = 50  # rejecters (and failures) a campaign's result lists; the counts cover everyone


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
        if not isinstance(raw, dict):
            raise InputError("input", f"must be a JSON object, got {type(raw).__name__}")
        approvers = raw.get("approvers")
        if not isinstance(approvers, list) or not approvers:
            raise InputError("approvers", "must be a non-empty list of usernames")
        unique: list[str] = []  # first-seen order, so the tree's shape follows the caller's list
        for number, name in enumerate(approvers):
            if not isinstance(name, str) or not name.strip() or len(name.strip()) > 150:
                raise InputError(f"approvers[{number}]", "must be a username (1 to 150 characters)")
            if name.strip() not in unique:
                unique.append(name.strip())
        payload = raw.get("payload") or {}
        if not isinstance(payload, dict):
            raise InputError("payload", f"must be a JSON object, got {type(payload).__name__}")
        encoded = json.dumps(payload)
        if "\\u0000" in encoded:
            raise InputError("payload", "must not contain NUL characters")
        if len(encoded) > MAX_CAMPAIGN_PAYLOAD:
            raise InputError(
                "payload", f"must be at most {MAX_CAMPAIGN_PAYLOAD} bytes of JSON (each approver gets a copy)"
            )
        limit = raw.get("fan_out_limit", 500)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 2 <= limit <= 1000:
            raise InputError("fan_out_limit", "must be a whole number from 2 to 1000")
        requested_by = _string(raw, "requested_by", required=False, max_length=150)
        if requested_by and requested_by in unique:
            raise InputError("approvers", f"must not include the requester {requested_by!r} (four-eyes rule)")
        part = _string(raw, "part", required=False, max_length=200)
        if part and not all(piece.isdigit() for piece in part.split(".")):
            raise InputError("part", "must be dot-separated numbers (set by the parent campaign)")
        return cls(
            campaign_id=_string(raw, "campaign_id", required=True, max_length=100),
            title=_string(raw, "title", required=True, max_length=300),
            approvers=unique,
            requested_by=requested_by,
            description=_string(raw, "description", required=False),
            payload=payload,
            policy=_string(raw, "policy", required=False, max_length=100),
            fan_out_limit=limit,
            approvals_queue=_string(raw, "approvals_queue", required=False, max_length=200),
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


# ---- the deployment pipeline (workflows/pipeline.py) ----------------------------------

FAIL_WITH = ("", "InvalidArtifact")
MAX_ROLLOUT_SECONDS = 86_400


@dataclass(frozen=True)
class DeploymentInput:
    deployment_id: str
    service: str
    version: str
    requested_by: str = ""
    flaky_failures: int = 2  # the build fails this many times before it succeeds
    fail_with: str = ""  # "InvalidArtifact": verification fails for good
    rollout_seconds: float = 5
    policy: str = ""  # escalation policy of the human gate; the default policy when empty

    @classmethod
    def parse(cls, raw: Any) -> DeploymentInput:
        if not isinstance(raw, dict):
            raise InputError("input", f"must be a JSON object, got {type(raw).__name__}")
        flaky = raw.get("flaky_failures", 2)
        if isinstance(flaky, bool) or not isinstance(flaky, int) or flaky < 0:
            raise InputError("flaky_failures", "must be a whole number, zero or more")
        fail_with = raw.get("fail_with") or ""
        if fail_with not in FAIL_WITH:
            raise InputError("fail_with", "must be empty or 'InvalidArtifact'")
        rollout = _number_at_least(raw, "rollout_seconds", 0, default=5)
        if rollout > MAX_ROLLOUT_SECONDS:
            raise InputError("rollout_seconds", f"must be at most {MAX_ROLLOUT_SECONDS}")
        return cls(
            deployment_id=_string(raw, "deployment_id", required=True, max_length=100),
            service=_string(raw, "service", required=True, max_length=100),
            version=_string(raw, "version", required=True, max_length=100),
            requested_by=_string(raw, "requested_by", required=False, max_length=150),
            flaky_failures=flaky,
            fail_with=fail_with,
            rollout_seconds=rollout,
            policy=_string(raw, "policy", required=False, max_length=100),
        )


@dataclass(frozen=True)
class BuildInput:
    deployment_id: str
    service: str
    version: str
    flaky_failures: int = 0


@dataclass(frozen=True)
class VerifyInput:
    deployment_id: str
    artifact: str
    fail_with: str = ""


@dataclass(frozen=True)
class StepResult:
    """What a build or verify attempt reports: the attempt that succeeded."""

    attempt: int
    detail: str = ""


@dataclass(frozen=True)
class RolloutInput:
    deployment_id: str
    artifact: str
    seconds: float


@dataclass(frozen=True)
class RolloutResult:
    attempt: int
    resumed_from: float  # seconds of rollout already done (from heartbeat details) when this attempt began
    seconds: float


@dataclass(frozen=True)
class PipelineStep:
    name: str  # build | verify | approval | rollout
    status: str = "pending"  # pending | running | done | failed | skipped
    attempts: int = 0
    detail: str = ""


@dataclass(frozen=True)
class DeploymentResult:
    deployment_id: str
    service: str
    version: str
    outcome: str  # deployed | rejected | expired | cancelled (the gate's outcome when it stopped the pipeline)
    steps: list[PipelineStep]
    approved_by: str | None = None
    approval: ApprovalResult | None = None
