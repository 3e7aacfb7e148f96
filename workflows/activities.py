"""Thin activities: load by id, call an app service, return a dataclass.

All are synchronous (the ORM is synchronous) and run on the worker's thread
pool; the worker's interceptor closes stale database connections around each.
All are idempotent: a retry finds the rows it wrote the first time.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from approvals import policies, services
from workflows.types import (
    CompleteTaskInput,
    Eligibility,
    EligibilityInput,
    EscalateInput,
    FailTaskInput,
    LoadPolicyInput,
    NotifyInput,
    PolicyChangeInput,
    PolicySnapshot,
    RegisterTaskInput,
    RegisterTaskResult,
    VoteInput,
)


@activity.defn(name="load_policy")
def load_policy(data: LoadPolicyInput) -> PolicySnapshot:
    try:
        return policies.snapshot_policy(
            slug=data.policy, approvers=data.approvers, request_type=data.request_type, payload=data.payload
        )
    except policies.InvalidRequest as exc:
        raise ApplicationError(str(exc), exc.field, type="InvalidInput", non_retryable=True) from None


# Set by the worker's interceptor around each activity (``build_worker(search_attributes=...)``):
# whether this worker found the search attributes on its namespace at start.
search_attributes_ready: ContextVar[bool] = ContextVar("search_attributes_ready", default=False)


@activity.defn(name="register_task")
def register_task(data: RegisterTaskInput) -> RegisterTaskResult:
    services.register_task(data=data)
    return RegisterTaskResult(search_attributes=search_attributes_ready.get())


@activity.defn(name="escalate_task")
def escalate_task(data: EscalateInput) -> None:
    services.escalate_task(data=data)


@activity.defn(name="complete_task")
def complete_task(data: CompleteTaskInput) -> None:
    services.complete_task(data=data)


@activity.defn(name="record_vote")
def record_vote(data: VoteInput) -> None:
    services.record_vote(data=data)


@activity.defn(name="apply_policy_change")
def apply_policy_change(data: PolicyChangeInput) -> None:
    services.apply_policy_change(data=data)


@activity.defn(name="fail_task")
def fail_task(data: FailTaskInput) -> None:
    services.fail_task(workflow_id=data.workflow_id, error=data.error)


@activity.defn(name="check_eligibility")
def check_eligibility(data: EligibilityInput) -> Eligibility:
    eligible, reason = services.check_eligibility(workflow_id=data.workflow_id, username=data.user, level=data.level)
    return Eligibility(eligible=eligible, reason=reason)


@activity.defn(name="send_notification")
def send_notification(data: NotifyInput) -> bool:
    return services.send_notification(data=data)


ACTIVITIES: list[Callable[..., Any]] = [
    load_policy,
    register_task,
    escalate_task,
    complete_task,
    check_eligibility,
    send_notification,
    fail_task,
    record_vote,
    apply_policy_change,
]
