"""Writes that span models or cause side effects.

Two kinds of callers: the workflow's activities (register, escalate, complete,
notify, check eligibility) and the web (request, decide). Activity-side
functions are idempotent: Temporal may run them more than once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals import audit, live, mail
from approvals.models import (
    DEFAULT_CLAIM_FOR,
    ApprovalTask,
    BulkDecision,
    Decision,
    Delegation,
    MailPreference,
    Notification,
    Policy,
    PolicyLevel,
    PolicyVersion,
    TaskAssignment,
    TaskClaim,
    TaskComment,
)
from workflows import client as temporal
from workflows.types import (
    CompleteTaskInput,
    EscalateInput,
    LevelSnapshot,
    NotifyInput,
    PolicyChangeInput,
    RegisterTaskInput,
    VoteInput,
)

log = logging.getLogger(__name__)
# A digest lists at most this many tasks (soonest due first); the inbox has the rest.
DIGEST_MAX_TASKS = 50


def _when(value: str) -> datetime:
    parsed = parse_datetime(value.replace("Z", "+00:00"))
    if parsed is None:
        raise ValueError(f"not an ISO 8601 time: {value!r}")
    return parsed


# ---- activity side: keep the read model current -------------------------------


def _assign(task: ApprovalTask, level: int, assignees: LevelSnapshot, *, at: datetime) -> None:
    for group in Group.objects.filter(name__in=assignees.groups):
        TaskAssignment.objects.get_or_create(task=task, level=level, group=group)
    for user in User.objects.filter(username__in=assignees.users):
        TaskAssignment.objects.get_or_create(task=task, level=level, user=user)
    assign_delegates(task=task, level=level, at=at)


def assign_delegates(*, task: ApprovalTask, level: int, at: datetime) -> int:
    """Out of office: whoever is away gets their delegate assigned beside them."""
    assigned = task.assignments.filter(level__lte=level)
    away = Delegation.objects.active_on(timezone.localdate(at)).filter(
        Q(user__in=assigned.exclude(user=None).values("user"))
        | Q(user__groups__in=assigned.exclude(group=None).values("group"))
    )
    added = 0
    for delegation in away.select_related("user", "delegate").distinct():
        _, created = TaskAssignment.objects.get_or_create(
            task=task, level=level, user=delegation.delegate, defaults={"delegate_for": delegation.user}
        )
        if created:
            added += 1
            _audit(
                task,
                key=f"delegate:{level}:{delegation.pk}",
                kind="delegated",
                at=at,
                level=level,
                message=f"Assigned to {delegation.delegate} as delegate of {delegation.user} (out of office)",
            )
            live.task_changed(task, "assigned")
    return added


def _audit(
    task: ApprovalTask,
    *,
    key: str,
    kind: str,
    at: datetime,
    actor: str = "",
    level: int | None,
    message: str,
    record: dict[str, Any] | None = None,
) -> None:
    audit.append_entry(
        task=task,
        event_key=f"{task.workflow_id}:{key}",
        kind=kind,
        at=at,
        actor=actor,
        level=level,
        message=message,
        record=record,
    )


def register_task(*, data: RegisterTaskInput) -> ApprovalTask:
    request = data.request
    with transaction.atomic():
        earlier = ApprovalTask.objects.select_for_update().filter(workflow_id=data.workflow_id).first()
        if earlier is not None and not earlier.is_open and earlier.run_id and earlier.run_id != data.run_id:
            # The caller reused a workflow id: keep the closed task (and its
            # decisions) under a new key, and give the new run a row of its own.
            earlier.workflow_id = f"{data.workflow_id}#{earlier.run_id}"[:1000]
            earlier.save(update_fields=["workflow_id", "updated_at"])
        task, _ = ApprovalTask.objects.select_for_update().get_or_create(
            workflow_id=data.workflow_id,
            defaults={"request_id": request.request_id, "title": request.title, "created_at": _when(data.started_at)},
        )
        if not task.is_open:
            return task  # a retried activity after the task was closed
        task.run_id = data.run_id
        task.request_id = request.request_id
        task.title = request.title
        task.description = request.description
        task.requested_by = request.requested_by
        task.requester = User.objects.filter(username=request.requested_by).first() if request.requested_by else None
        task.payload = request.payload
        task.policy = Policy.objects.filter(slug=data.policy.slug).first()
        task.policy_snapshot = asdict(data.policy)
        task.status = ApprovalTask.Status.PENDING
        task.level = 1
        task.due_at = _when(data.due_at)
        task.start_error = ""
        task.request_type = request.request_type
        task.policy_version = data.policy.version or None
        task.required_approvals = data.policy.levels[0].required_approvals
        task.parent_workflow_id = data.parent_workflow_id
        task.parent_run_id = data.parent_run_id
        task.parent_workflow_type = data.parent_workflow_type
        task.save()
        started = _when(data.started_at)
        _assign(task, 1, data.policy.levels[0], at=started)
        _audit(
            task,
            key="requested",
            kind="requested",
            at=started,
            actor=request.requested_by,
            level=None,
            message=f"Requested under policy {data.policy.name}",
        )
        _audit(
            task,
            key="assigned:1",
            kind="assigned",
            at=started,
            level=1,
            message=f"Assigned to {_describe(data.policy.levels[0])}",
        )
        live.task_changed(task, "assigned")
    return task


def escalate_task(*, data: EscalateInput) -> None:
    with transaction.atomic():
        task = ApprovalTask.objects.select_for_update().get(workflow_id=data.workflow_id)
        if task.status != ApprovalTask.Status.PENDING:
            return
        _assign(task, data.level, data.assignees, at=_when(data.at))
        if data.level > task.level:
            task.level = data.level
            task.escalations = data.escalations
            task.due_at = _when(data.due_at)
            task.required_approvals = data.assignees.required_approvals
            task.save(update_fields=["level", "escalations", "due_at", "required_approvals", "updated_at"])
        _audit(
            task,
            key=f"escalated:{data.level}",
            kind="escalated",
            at=_when(data.at),
            level=data.level,
            message=f"Escalated to level {data.level}: {_describe(data.assignees)}",
        )
        live.task_changed(task, "escalated")


# Ways an ApprovalWorkflow can end without running its own ending: the task's status and the verb.
# ("canceled": a cancellation request that arrived before the workflow could catch it, e.g. while it
# loaded its policy; once it waits, it catches the request and closes the task itself.)
ENDED_OUTSIDE = {
    "terminated": ("cancelled", "terminated"),
    "canceled": ("cancelled", "cancelled"),
    "timed_out": ("failed", "timed out"),
    "failed": ("failed", "failed"),
}
ENDED_REASONS = {f"the workflow was {verb}" for _, verb in ENDED_OUTSIDE.values()}


def close_task_from_workflow(*, workflow_id: str) -> bool:
    """Close a task at once from how its workflow really ended, if it ended without closing it.

    The one way both callers close such tasks: the monitoring refresh (for the runs it saw end) and a
    decision that found its workflow gone (a parent terminated its child approval; an operator
    terminated it). Describes the workflow's latest run, so a reset's new run keeps the task open. A
    completed approval has closed its task itself (``complete_task`` runs before it completes).
    Raises ``temporal.TemporalError`` when Temporal cannot say."""
    state = temporal.run(temporal.describe_run, workflow_id=workflow_id)
    if state is None or state.status not in ENDED_OUTSIDE:
        return False
    return close_task_ended_outside(workflow_id=workflow_id, status=state.status, at=state.close_time or timezone.now())


def close_task_ended_outside(*, workflow_id: str, status: str, at: datetime) -> bool:
    """Close a task whose workflow was terminated, timed out or failed in Temporal (found by the
    monitoring refresh): pending decisions are marked ignored, the audit trail says what happened."""
    task_status, verb = ENDED_OUTSIDE[status]
    with transaction.atomic():
        task = (
            ApprovalTask.objects.select_for_update()
            .filter(workflow_id=workflow_id, status__in=[ApprovalTask.Status.PENDING, ApprovalTask.Status.STARTING])
            .first()
        )
        if task is None:
            return False
        message = f"The workflow was {verb} in Temporal, outside Tollgate: the request can no longer be decided."
        task.status, task.decided_at, task.comment = task_status, at, message
        task.save(update_fields=["status", "decided_at", "comment", "updated_at"])
        task.decisions.filter(result=Decision.Result.PENDING).update(
            result=Decision.Result.IGNORED, result_reason=f"the workflow was {verb}"
        )
        _audit(task, key=f"ended-outside:{status}", kind=task_status, at=at, level=task.level, message=message)
        live.task_changed(task, "closed")
    return True


def complete_task(*, data: CompleteTaskInput) -> None:
    with transaction.atomic():
        task = ApprovalTask.objects.select_for_update().filter(workflow_id=data.workflow_id).first()
        if task is None:
            return  # cancelled before the task was registered: nothing to close
        decided_at = _when(data.decided_at)
        task.status = data.outcome
        task.decided_by = data.decided_by or ""
        task.decided_at = decided_at
        task.comment = data.comment
        task.level = data.level
        task.escalations = data.escalations
        task.save(update_fields=["status", "decided_by", "decided_at", "comment", "level", "escalations", "updated_at"])
        if data.decision_id:
            Decision.objects.filter(task=task, decision_id=data.decision_id).update(
                result=Decision.Result.APPLIED, result_reason=""
            )
        reasons = {entry["decision_id"]: entry["reason"] for entry in data.ignored if entry.get("decision_id")}
        by = f" by {data.decided_by}" if data.decided_by else ""
        fallback = f"the task was already {data.outcome}{by}"
        for decision in task.decisions.filter(result=Decision.Result.PENDING).exclude(decision_id=data.decision_id):
            decision.result = Decision.Result.IGNORED
            decision.result_reason = reasons.get(str(decision.decision_id), fallback)
            decision.save(update_fields=["result", "result_reason"])
        verb = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired", "cancelled": "Cancelled"}
        message = f"{verb.get(data.outcome, data.outcome)}{by}" + (f": {data.comment}" if data.comment else "")
        _audit(
            task,
            key="completed",
            kind=data.outcome,
            at=decided_at,
            actor=data.decided_by or "",
            level=data.level,
            message=message,
        )
        live.task_changed(task, "closed")
        for entry in data.ignored:
            _audit(
                task,
                key=f"ignored:{entry.get('decision_id') or uuid.uuid4()}",
                kind="ignored",
                at=decided_at,
                actor=entry.get("user", ""),
                level=None,
                message=f"Decision ignored: {entry['reason']}",
            )


def record_vote(*, data: VoteInput) -> None:
    """A vote on a level that needs several approvals: counted, shown, not final."""
    with transaction.atomic():
        task = ApprovalTask.objects.select_for_update().filter(workflow_id=data.workflow_id).first()
        if task is None:
            return
        task.approvals, task.rejections, task.required_approvals = data.approvals, data.rejections, data.required
        task.save(update_fields=["approvals", "rejections", "required_approvals", "updated_at"])
        Decision.objects.filter(task=task, decision_id=data.decision_id, result=Decision.Result.PENDING).update(
            result=Decision.Result.APPLIED, result_reason=f"vote counted: {data.approvals} of {data.required} approvals"
        )
        verb = "approved" if data.decision == "approve" else "rejected"
        _audit(
            task,
            key=f"vote:{data.decision_id}",
            kind="vote",
            at=_when(data.at),
            actor=data.user,
            level=data.level,
            message=f"{data.user} {verb} ({data.approvals} of {data.required} approvals so far)"
            + (f": {data.comment}" if data.comment else ""),
        )
        live.task_changed(task, "vote")


def apply_policy_change(*, data: PolicyChangeInput) -> None:
    """A new policy version reached a running workflow: show it on the task."""
    with transaction.atomic():
        task = ApprovalTask.objects.select_for_update().filter(workflow_id=data.workflow_id).first()
        if task is None or task.status != ApprovalTask.Status.PENDING:
            return
        at = _when(data.at)
        level = data.policy.levels[data.level - 1]
        task.policy_version = data.policy.version or None
        task.policy_snapshot = asdict(data.policy)
        task.level = data.level
        task.due_at = _when(data.due_at)
        task.required_approvals = level.required_approvals
        task.save()
        _assign(task, data.level, level, at=at)
        _audit(
            task,
            key=f"policy:{data.policy.version}:{data.at}",
            kind="policy",
            at=at,
            actor=data.by,
            level=data.level,
            # The deadline is data, shown in each viewer's zone; a time written into the (hashed)
            # message would be the worker's zone, unnamed, beside the header's "due 23:20 CET".
            message=f"Now following policy {data.policy.name} version {data.policy.version}, "
            f"pushed by {data.by or 'an admin'}",
            record={"due_at": audit.iso_utc(task.due_at)},
        )
        live.task_changed(task, "policy")


def approver_groups(user: User) -> list[Group]:
    """The user's groups that approve something: named at a level of some policy or in some task's
    assignments (a request's own ``approvers`` may name a group no policy does)."""
    in_policies = PolicyLevel.groups.through.objects.filter(group_id=OuterRef("pk"))
    in_tasks = TaskAssignment.objects.filter(group_id=OuterRef("pk"))
    return list(user.groups.filter(Exists(in_policies) | Exists(in_tasks)).order_by("name"))


def delegate_refusal(*, user: User, delegate: User) -> str:
    """Why ``user`` may not name ``delegate`` (empty when they may). The rule: the delegate shares at
    least one approver group with the user, so a stand-in is someone already trusted with that kind
    of request; an outsider would otherwise receive every task of the user's groups. Admins are not
    held to it (the view does not ask)."""
    groups = approver_groups(user)
    if not groups:
        return "You are in no approver group, so nobody can stand in for you from here: ask an admin."
    if delegate.groups.filter(pk__in=[g.pk for g in groups]).exists():
        return ""
    names = ", ".join(g.name for g in groups)
    return (
        f"{delegate} shares none of your approver groups ({names}): a delegate must be a member of one of "
        "them, or an admin must set this delegation."
    )


def apply_delegation(*, delegation: Delegation) -> int:
    """A new out-of-office entry covering today reaches the open tasks at once."""
    now = timezone.now()
    if not (delegation.starts_on <= timezone.localdate(now) <= delegation.ends_on):
        return 0
    added = 0
    for task in ApprovalTask.objects.visible_to(delegation.user).pending():
        added += assign_delegates(task=task, level=task.level, at=now)
    return added


def end_delegation(*, delegation: Delegation, by: User) -> None:
    """End it now; the delegate loses the open tasks they had only as a stand-in."""
    today = timezone.localdate()
    with transaction.atomic():
        stand_ins = TaskAssignment.objects.filter(
            user=delegation.delegate, delegate_for=delegation.user, task__status=ApprovalTask.Status.PENDING
        ).select_related("task")
        for assignment in stand_ins:
            _audit(assignment.task, key=f"undelegate:{delegation.pk}:{assignment.pk}", kind="delegated",
                   at=timezone.now(), actor=by.get_username(), level=assignment.level,
                   message=f"{delegation.delegate} no longer stands in for {delegation.user}")  # fmt: skip
            live.task_changed(assignment.task, "assigned")
        stand_ins.delete()
        if delegation.starts_on >= today:
            delegation.delete()  # had not begun: nothing to keep
        else:
            delegation.ends_on = today - timedelta(days=1)
            delegation.save(update_fields=["ends_on"])


def push_payload(*, version: PolicyVersion, user: User) -> dict[str, Any]:
    """The ``update_policy`` signal's argument for one version."""
    return {"policy": {**version.snapshot, "version": version.number}, "by": user.get_username()}


def push_policy_version(*, version: PolicyVersion, tasks: list[ApprovalTask], user: User) -> tuple[int, list[str]]:
    """Send a version to running tasks; returns (sent, problems)."""
    payload = push_payload(version=version, user=user)
    sent, problems = 0, []
    for task in tasks:
        try:
            temporal.run(temporal.signal_workflow, workflow_id=task.workflow_id, name="update_policy", payload=payload)
            sent += 1
        except (temporal.TemporalError, temporal.WorkflowClosed) as exc:
            problems.append(f"{task.title}: {exc}")
    return sent, problems


def fail_task(*, workflow_id: str, error: str) -> None:
    """Mark a request made here as failed; rows are never created for bad input."""
    ApprovalTask.objects.filter(workflow_id=workflow_id, status=ApprovalTask.Status.STARTING).update(
        status=ApprovalTask.Status.FAILED, start_error=error[:2000], updated_at=timezone.now()
    )


def check_eligibility(*, workflow_id: str, username: str, level: int) -> tuple[bool, str]:
    """The workflow's question, answered by the task page's own rule (``ApprovalTask.decision_refusal``)."""
    task = ApprovalTask.objects.filter(workflow_id=workflow_id).first()
    if task is None:
        return False, "the task is unknown"
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        return False, "no such active user"
    refusal = task.decision_refusal(user, up_to_level=level)
    return not refusal, refusal


def _describe(level: LevelSnapshot) -> str:
    parts = [f"group {g}" for g in level.groups] + list(level.users)
    return ", ".join(parts) or "nobody"


def recipients_for(task: ApprovalTask, level: int, *, only_level: bool) -> list[User]:
    """Each approver once for one event, however many ways they are assigned (directly, through
    several groups, at several levels): active, with an address, not the requester (who may not
    decide) and not someone who has already decided."""
    assignments = task.assignments.filter(level=level) if only_level else task.assignments.filter(level__lte=level)
    reached = Q(pk__in=assignments.exclude(user=None).values("user")) | Q(
        groups__in=assignments.exclude(group=None).values("group")
    )
    users = User.objects.filter(reached, is_active=True).exclude(email="").exclude(pk__in=task.decisions.values("user"))
    if task.requester_id is not None:
        users = users.exclude(pk=task.requester_id)
    return list(users.distinct().order_by("username"))


def wants_immediate_mail(user: User) -> bool:
    preference = MailPreference.objects.filter(user=user).first()
    return preference is None or preference.delivery == MailPreference.Delivery.IMMEDIATE


def send_notification(*, data: NotifyInput) -> bool:
    """Mail the approvers about one event: one mail per approver (with links that decide as them),
    once. Returns False when already sent.

    The ``Notification`` row (one per event key) is locked while mailing and lists the addresses
    already mailed; when the mail server fails half-way, that progress is kept and the error raised
    after, so the activity's retry mails only those still missing."""
    task = ApprovalTask.objects.get(workflow_id=data.workflow_id)
    if task.status != ApprovalTask.Status.PENDING:
        return False
    failure: Exception | None = None
    with transaction.atomic():
        note, _ = Notification.objects.select_for_update().get_or_create(
            event_key=data.event_key, defaults={"task": task, "kind": data.kind}
        )
        if note.sent_at is not None:
            return False
        # A reminder goes to everyone who may decide; an escalation or first
        # assignment to the level that was just added. Users who chose a daily digest or no mail
        # hear of it in their digest, or not at all.
        recipients = [
            user
            for user in recipients_for(task, data.level, only_level=data.kind != "reminder")
            if wants_immediate_mail(user)
        ]
        mailed = list(note.recipients)
        for user in recipients:
            if user.email in mailed:
                continue  # an earlier attempt reached them
            try:
                mail.task_mail(task=task, user=user, kind=data.kind, level=data.level).send()
            except Exception as exc:  # the mail server: keep what was sent, retry the rest
                failure = exc
                break
            mailed.append(user.email)
        note.recipients = mailed
        if failure is None:
            note.sent_at = timezone.now()
        note.save(update_fields=["recipients", "sent_at"])
    if failure is not None:
        raise failure
    if data.kind == "reminder":
        count = len(note.recipients)
        _audit(
            task,
            key=f"reminder:{data.event_key}",
            kind="reminded",
            at=timezone.now(),
            level=data.level,
            message=f"Reminder mailed to {count} approver{pluralize(count)}",
        )
    return True


def send_digests(*, now: datetime | None = None) -> tuple[int, int]:
    """The daily digest: each user who chose it gets one mail listing the open tasks they may
    decide, at most once a day (``last_digest_on``), so a retried activity mails nobody twice.
    Returns (mails sent, users with nothing open)."""
    today = timezone.localdate(now or timezone.now())
    due = MailPreference.objects.filter(delivery=MailPreference.Delivery.DIGEST, user__is_active=True).exclude(
        user__email=""
    )
    sent = empty = 0
    for preference in due.exclude(last_digest_on=today).select_related("user"):
        user = preference.user
        candidates = ApprovalTask.objects.visible_to(user).pending().select_related("policy").order_by("due_at", "pk")
        mine = {d.task_id for d in Decision.objects.filter(user=user, task__in=candidates)}
        tasks = [t for t in candidates[:DIGEST_MAX_TASKS] if t.pk not in mine and not t.decision_refusal(user)]
        if tasks:
            mail.digest_mail(user=user, tasks=tasks).send()
            sent += 1
        else:
            empty += 1
        MailPreference.objects.filter(pk=preference.pk).update(last_digest_on=today)
    return sent, empty


# ---- web side: requests ---------------------------------------------------------


def create_request(
    *,
    user: User,
    title: str,
    description: str,
    policy: Policy | None,
    payload: dict[str, Any],
    request_type: str = "",
) -> ApprovalTask:
    """Save the request and start its workflow once the row is committed."""
    request_id = uuid.uuid4().hex[:12]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{request_id}",
        request_id=request_id,
        title=title,
        description=description,
        requested_by=user.get_username(),
        requester=user,
        payload=payload,
        policy=policy,
        request_type=request_type,
    )
    transaction.on_commit(lambda: start_task_workflow(task_id=task.pk), robust=True)
    return task


def workflow_input(task: ApprovalTask) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": task.request_id,
        "title": task.title,
        "description": task.description,
        "requested_by": task.requested_by,
        "payload": task.payload,
    }
    if task.policy is not None:
        data["policy"] = task.policy.slug
    if task.request_type:
        data["request_type"] = task.request_type
    return data


def start_task_workflow(*, task_id: int) -> bool:
    """Start the workflow of a task still ``starting``; the relay retries on failure."""
    task = ApprovalTask.objects.select_related("policy").get(pk=task_id)
    if task.status != ApprovalTask.Status.STARTING:
        return True
    try:
        run_id = temporal.run(temporal.start_approval, workflow_id=task.workflow_id, request=workflow_input(task))
        if not run_id and temporal.run(temporal.workflow_closed, workflow_id=task.workflow_id):
            # Started before, then closed without registering the task
            # (terminated, cancelled at once): it will never run again.
            ApprovalTask.objects.filter(pk=task.pk, status=ApprovalTask.Status.STARTING).update(
                status=ApprovalTask.Status.FAILED, start_error="the workflow closed before it registered the task"
            )
            return True
    except temporal.TemporalError as exc:
        ApprovalTask.objects.filter(pk=task.pk).update(start_error=str(exc)[:500])
        log.warning("could not start %s yet: %s", task.workflow_id, exc)
        return False
    if run_id:
        ApprovalTask.objects.filter(pk=task.pk, run_id="").update(run_id=run_id)
    return True


# ---- web side: decisions ------------------------------------------------------------


@dataclass(frozen=True)
class DecideResult:
    """What the approver is told, honestly."""

    state: str  # applied | lost | recorded | delivered | refused
    message: str
    decision: Decision | None = None


def _hhmm(moment: datetime | None) -> str:
    """A time for a message shown now: in the viewer's zone (the request's), with its name."""
    return mail.when(moment)


def decide_task(*, task: ApprovalTask, user: User, choice: str, comment: str) -> DecideResult:
    """Record a decision durably, deliver it to the workflow, and say what happened.

    The task row is locked while we look for an earlier decision, so of two
    approvers clicking at once exactly one decision is recorded; the other is
    told who was first. The same approver clicking twice gets their first
    decision back.
    """
    recorded = record_decision(task=task, user=user, choice=choice, comment=comment)
    if isinstance(recorded, DecideResult):
        # The winner's decision is usually applied within moments: wait for it (outside the lock), so
        # the loser's page shows the outcome rather than a task that still looks open.
        if recorded.decision is not None and recorded.decision.delivered_at is not None:
            _wait_for_result(recorded.decision)
        return recorded
    deliver_decision(decision=recorded)
    return outcome_of(decision=recorded)


def record_decision(*, task: ApprovalTask, user: User, choice: str, comment: str) -> Decision | DecideResult:
    """The first half of every decision, single or bulk: under the task's row lock, store this
    approver's decision (or find their earlier one) with its audit entry, or say why there is none
    ("lost": someone else's decision came first, or the task is closed)."""
    with transaction.atomic():
        locked = ApprovalTask.objects.select_for_update().get(pk=task.pk)
        mine = locked.decisions.filter(user=user.pk).first()
        other = locked.decisions.select_related("user").exclude(user=user.pk).exclude(result=Decision.Result.IGNORED)
        first = other.order_by("created_at").first()
        if mine is not None:
            return mine  # a double click or a second tab: the first decision stands
        if first is not None and locked.required_approvals <= 1:
            return DecideResult("lost", f"Already decided by {first.user} at {_hhmm(first.created_at)}.", first)
        if locked.status != ApprovalTask.Status.PENDING:
            by = f" by {locked.decided_by}" if locked.decided_by else ""
            return DecideResult("lost", f"Already {locked.status}{by} at {_hhmm(locked.decided_at)}.")
        try:
            with transaction.atomic():
                decision = Decision.objects.create(task=locked, user=user, choice=choice, comment=comment)
                audit.append_decision(decision=decision)  # with the row, or neither
            live.task_changed(locked, "decision")
        except IntegrityError:  # the same approver, in another tab, a moment ago
            decision = Decision.objects.get(task=locked, user=user)
    return decision


def deliver_decision(*, decision: Decision) -> str:
    """Send the ``decide`` signal; on failure the decision stays in the outbox.

    Returns "delivered", "unreachable" (Temporal did not answer) or "error"
    (it answered with an error; kept on the row for an operator to see).
    """
    return deliver_decisions(decisions=[decision])[0]


def deliver_decisions(*, decisions: list[Decision]) -> list[str]:
    """``deliver_decision`` for several decisions, their signals sent concurrently (a bulk decision of
    200 tasks would otherwise wait for 200 round trips one after another). One state per decision."""
    todo = [d for d in decisions if d.delivered_at is None]
    Decision.objects.filter(pk__in=[d.pk for d in todo]).update(delivery_attempts=F("delivery_attempts") + 1)
    signals = [(d.task.workflow_id, d.signal_payload()) for d in todo]
    errors = dict(zip([d.pk for d in todo], temporal.run(temporal.signal_decisions, signals=signals), strict=True))
    # The signals that went through are marked delivered together: one UPDATE, not one per decision
    # (on SQLite each write waits for the worker's, which are applying these very decisions).
    sent = [d for d in todo if errors[d.pk] is None]
    now = timezone.now()
    Decision.objects.filter(pk__in=[d.pk for d in sent]).update(delivered_at=now, last_delivery_error="")
    for decision in sent:
        decision.delivered_at, decision.last_delivery_error = now, ""
    return [_delivered(d, errors[d.pk]) if errors.get(d.pk) is not None else "delivered" for d in decisions]


def _delivered(decision: Decision, exc: BaseException | None) -> str:
    """Record how one signal went, as ``deliver_decision`` always has."""
    if isinstance(exc, temporal.WorkflowClosed):
        # Closed without closing its task (terminated, timed out...): close it now rather than leave
        # it pending in inboxes until the next monitoring refresh; its pending decisions say why.
        try:
            close_task_from_workflow(workflow_id=decision.task.workflow_id)
        except temporal.TemporalError as error:
            log.warning("could not read how %s ended: %s", decision.task.workflow_id, error)
        # Only a decision still pending becomes "too late": complete_task may
        # have marked it applied while this (re)delivery was under way.
        Decision.objects.filter(pk=decision.pk, result=Decision.Result.PENDING).update(
            result=Decision.Result.IGNORED, result_reason="the workflow had already finished"
        )
    elif isinstance(exc, temporal.TemporalError):
        Decision.objects.filter(pk=decision.pk).update(last_delivery_error=str(exc)[:500])
        decision.refresh_from_db()
        return "unreachable" if isinstance(exc, temporal.TemporalUnavailable) else "error"
    elif exc is not None:
        raise exc
    Decision.objects.filter(pk=decision.pk).update(delivered_at=timezone.now(), last_delivery_error="")
    decision.refresh_from_db()
    return "delivered"


def outcome_of(*, decision: Decision, wait: bool = True) -> DecideResult:
    """Wait briefly for the workflow to apply the decision (unless told not to), then describe it."""
    if decision.delivered_at is None:
        return DecideResult(
            "recorded",
            "Your decision is recorded; it will be applied when the workflow engine is back.",
            decision,
        )
    if wait:
        _wait_for_result(decision)
    if decision.result == Decision.Result.APPLIED:
        if decision.result_reason.startswith("vote counted"):
            return DecideResult(
                "applied", f"Your vote is counted ({decision.result_reason.removeprefix('vote counted: ')}).", decision
            )
        verb = "Approved" if decision.choice == Decision.Choice.APPROVE else "Rejected"
        return DecideResult("applied", f"{verb}.", decision)
    if decision.result == Decision.Result.IGNORED:
        if decision.result_reason in ENDED_REASONS:  # closed outside Tollgate (close_task_ended_outside)
            closed_at = ApprovalTask.objects.filter(pk=decision.task_id).values_list("decided_at", flat=True).first()
            what = decision.result_reason.removeprefix("the workflow was ")
            return DecideResult(
                "lost", f"This request was closed: its workflow was {what} at {_hhmm(closed_at)}.", decision
            )
        return DecideResult("lost", f"Not applied: {decision.result_reason}.", decision)
    return DecideResult(
        "delivered",
        "Your decision is recorded and delivered; it will be applied as soon as a worker picks it up.",
        decision,
    )


def _wait_for_result(decision: Decision) -> None:
    """Watch the decision's row for up to TOLLGATE_DECISION_WAIT_SECONDS until the workflow's
    activities mark it applied (a final decision or a counted vote) or ignored; the row rather than
    the workflow, since a vote does not end the workflow. Short looks first (a decision usually lands
    within ~100 ms), then longer ones: a fixed 50 ms step cost the approver 25 ms on average
    (bench/decision_bench.py)."""
    deadline, pause = time.monotonic() + settings.TOLLGATE_DECISION_WAIT_SECONDS, 0.01
    while decision.result == Decision.Result.PENDING and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 1.5, 0.1)
        decision.refresh_from_db(fields=["result", "result_reason"])


# ---- web side: a requester withdraws ----------------------------------------------------------


def withdraw_request(*, task: ApprovalTask, user: User, reason: str) -> str:
    """Cancel a pending request as its requester: the workflow's own ``cancel`` signal, naming them
    (as an operator's cancel from monitoring does), so its result, the task and the audit trail say
    who withdrew it. Waits briefly for the workflow to close the task; returns what to tell them."""
    if task.requester_id != user.pk:
        raise PermissionError("only the requester withdraws a request")
    if task.status != ApprovalTask.Status.PENDING:
        return f"This request is {task.get_status_display().lower()}: there is nothing to withdraw."
    sent = {"user": user.get_username(), "reason": reason or "Withdrawn by the requester"}
    try:
        temporal.run(temporal.signal_workflow, workflow_id=task.workflow_id, name="cancel", payload=sent)
    except temporal.TemporalUnavailable:
        return "The workflow engine cannot be reached: nothing was withdrawn. Try again in a moment."
    except temporal.TemporalError as exc:
        return f"Temporal refused the withdrawal: {exc}"
    deadline = time.monotonic() + settings.TOLLGATE_DECISION_WAIT_SECONDS
    while time.monotonic() < deadline:
        if not ApprovalTask.objects.filter(pk=task.pk, status=ApprovalTask.Status.PENDING).exists():
            return "Request withdrawn: the approvers no longer see it."
        time.sleep(0.05)
    return "Withdrawal sent: the request closes as soon as a worker picks it up."


# ---- web side: task comments -------------------------------------------------------------------


def comment_on_task(*, task: ApprovalTask, user: User, body: str) -> TaskComment:
    """A question or an answer on a task: stored, chained into the audit trail, and sent to the other
    side once committed (from an approver to the requester; from the requester to everyone who may
    decide it so far), with a live refresh of the task's pages."""
    with transaction.atomic():
        comment = TaskComment.objects.create(task=task, author=user, body=body)
        _audit(
            task, key=f"comment:{comment.pk}", kind="comment", at=comment.created_at, actor=user.get_username(),
            level=task.level, message=f"{user}: {body}",
        )  # fmt: skip
        live.task_changed(task, "comment")
        recipients: list[str]
        if task.requester_id == user.pk:
            approvers = recipients_for(task, task.level, only_level=False)
            recipients = [approver.email for approver in approvers if approver.email != user.email]
        else:
            requester = task.requester
            recipients = [requester.email] if requester is not None and requester.email else []
        if recipients:
            subject = " ".join(f"{user} on “{task.title}”"[:200].split())
            text = f"{user} wrote on “{task.title}”:\n\n{body}\n\nAnswer here: "
            text += settings.TOLLGATE_BASE_URL + task.get_absolute_url()
            transaction.on_commit(lambda: send_mail(subject, text, None, recipients), robust=True)
    return comment


# ---- web side: claims ("I'm on it") ----------------------------------------------------------


def claim_task(*, task: ApprovalTask, user: User) -> str:
    """Mark the task as taken by ``user`` for the others who may decide it; returns what to tell them.
    Refused while someone else's claim holds; a lapsed claim (its time is computed on read) is replaced.
    Only for someone who may decide the task now; deciding is never limited by a claim."""
    refusal = task.decision_refusal(user)
    if refusal:
        return f"You cannot take this task: {refusal}."
    now = timezone.now()
    with transaction.atomic():
        locked = ApprovalTask.objects.select_for_update(of=("self",)).select_related("policy").get(pk=task.pk)
        holder = locked.active_claim(now=now)
        if holder is not None and holder.user_id != user.pk:
            return f"{holder.user} is already on it (until {_hhmm(holder.expires_at)})."
        holds_for = locked.policy.claim_for if locked.policy is not None else DEFAULT_CLAIM_FOR
        TaskClaim.objects.filter(task=locked).delete()
        claim = TaskClaim.objects.create(task=locked, user=user, claimed_at=now, holds_for=holds_for)
        _audit(
            locked, key=f"claimed:{uuid.uuid4().hex}", kind="claimed", at=now, actor=user.get_username(),
            level=locked.level, message=f"{user} is on it (until {_hhmm(claim.expires_at)})",
        )  # fmt: skip
        live.task_changed(locked, "claim")
    return f"You're on it until {_hhmm(claim.expires_at)}; the others see it in their inbox."


def release_claim(*, task: ApprovalTask, user: User) -> str:
    """Give the task back: only its holder releases a claim that still holds (a lapsed one has gone)."""
    now = timezone.now()
    with transaction.atomic():
        locked = ApprovalTask.objects.select_for_update().get(pk=task.pk)
        holder = locked.active_claim(now=now)
        if holder is None or holder.user_id != user.pk:
            return "You were not on this task."
        holder.delete()
        _audit(
            locked, key=f"released:{uuid.uuid4().hex}", kind="released", at=now, actor=user.get_username(),
            level=locked.level, message=f"{user} is no longer on it",
        )  # fmt: skip
        live.task_changed(locked, "claim")
    return "Released: the others see the task as free again."


# ---- web side: bulk decisions ---------------------------------------------------------

BULK_LABELS = {
    "applied": "Applied",
    "vote": "Vote counted",
    "lost": "Not applied",
    "recorded": "Recorded for later delivery",
    "delivered": "Delivered, being applied",
    "refused": "Refused",
}


def bulk_refusal(*, task: ApprovalTask, user: User) -> str:
    """Why this task may not be decided in bulk by ``user``, beyond what a single decision checks."""
    if task.policy is not None and task.policy.no_bulk_decisions:
        return f"Policy “{task.policy.name}” asks for one decision at a time: open the task to decide it."
    if task.requester_id is not None and task.requester_id == user.pk:
        return "Requesters may not decide their own request."
    return ""


def not_decidable_message(task: ApprovalTask) -> str:
    """What a task the user may no longer decide says (the task page's message too)."""
    if task.status == ApprovalTask.Status.PENDING:
        return "Not yours any more: it is not assigned to you at its current level."
    by = f" by {task.decided_by}" if task.decided_by else ""
    return f"Already {task.status}{by}."


def decide_in_bulk(
    *, run: BulkDecision, tasks: list[ApprovalTask], user: User, missing: list[int] | None = None
) -> BulkDecision:
    """Approve or reject many tasks with one comment, each exactly as a single decision goes: checked
    for this user, stored under its row lock with its audit entry (``record_decision``), signalled after
    its commit, left in the outbox when Temporal is down. The signals go out together (concurrently),
    then the workflows are given ``TOLLGATE_DECISION_WAIT_SECONDS`` in all, not each, to confirm.
    ``run`` reports progress as it goes and ends with one result per task; ``missing`` are ticked ids
    the user can no longer see (reassigned away, or never theirs), reported without their titles."""
    results: dict[int, DecideResult] = {}
    recorded: list[Decision] = []
    began = report_at = time.monotonic()
    for n, task in enumerate(tasks, start=1):
        refusal = bulk_refusal(task=task, user=user)
        if refusal:
            results[task.pk] = DecideResult("refused", refusal)
        elif not task.can_be_decided_by(user) and not task.decisions.filter(user=user.pk).exists():
            results[task.pk] = DecideResult("lost", not_decidable_message(task))
        else:
            outcome = record_decision(task=task, user=user, choice=run.choice, comment=run.comment)
            if isinstance(outcome, DecideResult):
                results[task.pk] = outcome
            else:
                recorded.append(outcome)
        if time.monotonic() >= report_at:  # progress for the page, a few times a second
            BulkDecision.objects.filter(pk=run.pk).update(done=n)
            report_at = time.monotonic() + 0.25
    BulkDecision.objects.filter(pk=run.pk).update(phase=BulkDecision.Phase.SENDING)
    recorded_in = time.monotonic() - began
    deliver_decisions(decisions=recorded)
    sent_in = time.monotonic() - began - recorded_in
    BulkDecision.objects.filter(pk=run.pk).update(phase=BulkDecision.Phase.WAITING)
    _wait_for_results(recorded)
    log.info(
        "bulk %s of %d tasks by %s: recorded in %.2f s, signalled in %.2f s, confirmed after %.2f s more",
        run.choice,
        len(tasks),
        user,
        recorded_in,
        sent_in,
        time.monotonic() - began - recorded_in - sent_in,
    )
    for decision in recorded:
        results[decision.task_id] = outcome_of(decision=decision, wait=False)
    run.results = [
        {"task": task.pk, "title": task.title, "state": _bulk_state(results[task.pk]),
         "message": results[task.pk].message}
        for task in tasks
    ]  # fmt: skip
    run.results += [
        {
            "task": pk,
            "title": f"Task {pk}",
            "state": "lost",
            "message": "Not yours any more: it is not assigned to you.",
        }
        for pk in missing or []
    ]
    run.done, run.phase, run.finished_at = len(tasks), BulkDecision.Phase.DONE, timezone.now()
    run.save(update_fields=["results", "done", "phase", "finished_at"])
    return run


def _bulk_state(result: DecideResult) -> str:
    if result.state == "applied" and result.message.startswith("Your vote is counted"):
        return "vote"
    return result.state


def _wait_for_results(decisions: list[Decision]) -> None:
    """``_wait_for_result`` for many decisions at once: one look at all those still pending per step."""
    waiting = {d.pk: d for d in decisions if d.delivered_at is not None and d.result == Decision.Result.PENDING}
    deadline, pause = time.monotonic() + settings.TOLLGATE_DECISION_WAIT_SECONDS, 0.02
    while waiting and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 1.5, 0.2)
        settled = Decision.objects.filter(pk__in=list(waiting)).exclude(result=Decision.Result.PENDING)
        for pk, result, reason in settled.values_list("pk", "result", "result_reason"):
            waiting[pk].result, waiting[pk].result_reason = result, reason
            del waiting[pk]


def deliver_outbox(*, older_than: timedelta = timedelta(seconds=2), limit: int = 200) -> tuple[int, int]:
    """Deliver decisions and start workflows that an earlier attempt could not.

    Runs in the worker process (``run_worker``) on a timer, because it must work
    precisely when Temporal was unreachable. Returns (decisions, starts) done.
    """
    cutoff = timezone.now() - older_than
    delivered = 0
    waiting = Decision.objects.filter(delivered_at=None, created_at__lt=cutoff).select_related("task", "user")
    for decision in waiting.order_by("created_at")[:limit]:
        state = deliver_decision(decision=decision)
        if state == "unreachable":
            break  # try again on the next tick
        delivered += state == "delivered"  # an error stays on its row; the others go on
    started = 0
    starting = ApprovalTask.objects.filter(status=ApprovalTask.Status.STARTING, created_at__lt=cutoff)
    for task_id in starting.order_by("created_at").values_list("pk", flat=True)[:limit]:
        if not start_task_workflow(task_id=task_id):
            break
        started += 1
    return delivered, started
