"""The public contract of ``ApprovalWorkflow``: its input, signals, activity arguments and result.

Standard library only (the worker's sandbox passes this module through). The
workflow's own input and the ``decide``/``cancel`` signal arguments arrive as
plain JSON objects from clients in any language, so they are parsed here by
hand (with ``workflows.parsing``): a wrong field gives an error that names it,
instead of a payload conversion failure that would retry the workflow task
forever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from workflows.parsing import (
    InputError,
    check_json,
    json_object,
    json_type,
    known_keys,
    string_field,
    string_list,
    whole_number,
)

OUTCOMES = ("approved", "rejected", "expired", "cancelled")
FINAL_ACTIONS = {"expire": "expired", "approve": "approved", "reject": "rejected"}
DECISIONS = {"approve": "approved", "reject": "rejected"}
# Memo key a parent sets on a child ApprovalWorkflow so the task page can name the parent's
# type (``workflow.info().parent`` carries only its id and run id). Optional: any parent works.
PARENT_TYPE_MEMO = "parent_type"
INPUT_FIELDS = ("request_id", "title", "description", "requested_by", "payload", "policy", "approvers", "request_type")
MAX_PAYLOAD_BYTES = 64_000  # bytes of JSON: the payload is copied into the history and the task row
MAX_LEVEL_SECONDS = 3650 * 86_400  # ten years: what a policy level may wait, and what timedelta and timers hold
# Custom search attributes ApprovalWorkflow keeps current (name -> Temporal's indexed value type), so any
# Temporal client can list approvals by status, requester, policy, level, deadline or assignee.
SEARCH_ATTRIBUTES = {
    "ApprovalStatus": "Keyword",
    "ApprovalRequestId": "Keyword",
    "ApprovalRequestedBy": "Keyword",
    "ApprovalPolicy": "Keyword",
    "ApprovalLevel": "Int",
    "ApprovalDueAt": "Datetime",
    "ApprovalAssignees": "KeywordList",
}

__all__ = ["InputError"]


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
    def parse(cls, raw: Any, *, strict: bool = True) -> ApprovalInput:
        """``strict=False`` is the parse of histories recorded before the contract refused unknown
        keys, non-object payloads and values beyond the limits (``workflow.patched``): a running
        workflow replays exactly as it ran."""
        if not isinstance(raw, dict):
            raise InputError("input", f"must be a JSON object, got {json_type(raw)}")
        if strict:
            known_keys(raw, INPUT_FIELDS)
            check_json(raw, "input")
            payload = raw.get("payload", {})
            if payload is None:
                payload = {}
        else:
            payload = raw.get("payload") or {}
        if not isinstance(payload, dict):
            raise InputError("payload", f"must be a JSON object, got {json_type(payload)}")
        encoded = json.dumps(payload)
        if "\\u0000" in encoded:
            raise InputError("payload", "must not contain NUL characters")
        if strict and len(encoded) > MAX_PAYLOAD_BYTES:
            raise InputError("payload", f"must be at most {MAX_PAYLOAD_BYTES} bytes of JSON")
        approvers = None
        if raw.get("approvers") is not None:
            value = raw["approvers"]
            if not isinstance(value, dict):
                raise InputError("approvers", "must be an object with 'groups' and/or 'users'")
            if strict:
                known_keys(value, ("groups", "users"), "approvers")
            approvers = Approvers(
                groups=string_list(value, "groups", "approvers"),
                users=string_list(value, "users", "approvers"),
            )
            if approvers.empty:
                raise InputError("approvers", "must name at least one group or user")
        return cls(
            request_id=string_field(raw, "request_id", required=True, max_length=200),
            title=string_field(raw, "title", required=True, max_length=300),
            description=string_field(raw, "description", required=False),
            requested_by=string_field(raw, "requested_by", required=False, max_length=150),
            payload=payload,
            policy=string_field(raw, "policy", required=False, max_length=100),
            approvers=approvers,
            request_type=string_field(raw, "request_type", required=False, max_length=100),
        )


@dataclass(frozen=True)
class DecisionSignal:
    decision: str
    user: str
    comment: str
    decision_id: str

    @classmethod
    def parse(cls, raw: Any) -> DecisionSignal:
        raw = json_object(raw, "decision")
        decision = string_field(raw, "decision", required=True, max_length=20)
        if decision not in DECISIONS:
            raise InputError("decision", "must be 'approve' or 'reject'")
        return cls(
            decision=decision,
            user=string_field(raw, "user", required=True, max_length=150),
            comment=string_field(raw, "comment", required=False),
            decision_id=string_field(raw, "decision_id", required=True, max_length=100),
        )


@dataclass(frozen=True)
class CancelSignal:
    user: str
    reason: str

    @classmethod
    def parse(cls, raw: Any) -> CancelSignal:
        raw = json_object(raw, "cancel")
        return cls(
            user=string_field(raw, "user", required=False, max_length=150),
            reason=string_field(raw, "reason", required=False),
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
            raise InputError(where, f"must be a JSON object, got {json_type(raw)}")
        timeout = raw.get("timeout_seconds")
        reminder = raw.get("reminder_seconds")
        required = raw.get("required_approvals", 1)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= MAX_LEVEL_SECONDS:
            raise InputError(f"{where}.timeout_seconds", f"must be a whole number from 1 to {MAX_LEVEL_SECONDS}")
        if reminder is not None and (
            isinstance(reminder, bool) or not isinstance(reminder, int) or not 0 < reminder < timeout
        ):
            raise InputError(f"{where}.reminder_seconds", "must be positive and shorter than the timeout")
        if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= 1000:
            raise InputError(f"{where}.required_approvals", "must be a whole number from 1 to 1000")
        level = cls(
            groups=string_list(raw, "groups", where),
            users=string_list(raw, "users", where),
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
        raw = json_object(raw, "policy")
        levels = raw.get("levels")
        if not isinstance(levels, list) or not 1 <= len(levels) <= 20:
            raise InputError("policy.levels", "must be an array of 1 to 20 levels")
        final_action = raw.get("final_action")
        if not isinstance(final_action, str) or final_action not in FINAL_ACTIONS:  # an array is unhashable
            raise InputError("policy.final_action", "must be expire, approve or reject")
        version = whole_number(raw, "version", default=0, minimum=0, maximum=2**31 - 1)
        return cls(
            slug=string_field(raw, "slug", required=True, max_length=100),
            name=string_field(raw, "name", required=True, max_length=200),
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
class RegisterTaskResult:
    """``search_attributes``: the worker found Tollgate's search attributes on the namespace, so the
    workflow may upsert them (recorded in the history, so a replay decides the same)."""

    search_attributes: bool = False


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
