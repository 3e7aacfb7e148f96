"""Escalation policy editing: saves that version, previews, routing checks.

Views call these; every write that spans rows happens in one transaction, so
a form error never leaves a policy saved half-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from approvals.durations import format_duration
from approvals.models import ApprovalTask, Policy, PolicyLevel, PolicyVersion, RoutingRule
from approvals.services import save_policy_version


class StaleEdit(Exception):
    """Someone saved the policy after this form was opened."""


class PolicyInUse(Exception):
    """Retiring would strand routing rules or running tasks."""


@dataclass(frozen=True)
class LevelData:
    groups: list[Group]
    users: list[User]
    timeout: timedelta
    reminder: timedelta | None
    required_approvals: int


def eligible_count(groups: list[Group], users: list[User]) -> int:
    """Distinct active people a level can ask (for the quorum check)."""
    members = User.objects.filter(is_active=True).filter(
        Q(pk__in=[u.pk for u in users]) | Q(groups__in=[g.pk for g in groups])
    )
    return members.distinct().count()


def save_policy(
    *, policy: Policy | None, fields: dict[str, Any], levels: list[LevelData], user: User, revision: int = 0
) -> PolicyVersion:
    """Create or update a policy and its levels, and freeze the result as a new version."""
    with transaction.atomic():
        if policy is None:
            policy = Policy.objects.create(**fields)
        else:
            changed = Policy.objects.filter(pk=policy.pk, revision=revision).update(
                revision=F("revision") + 1, updated_at=timezone.now(), **fields
            )
            if not changed:
                latest = Policy.objects.get(pk=policy.pk).versions.order_by("-number").first()
                who = f" by {latest.created_by}" if latest and latest.created_by else ""
                raise StaleEdit(f"This policy was changed{who} after you opened it. Reload to see the new version.")
            policy.refresh_from_db()
        if fields.get("is_default"):
            Policy.objects.exclude(pk=policy.pk).filter(is_default=True).update(is_default=False)
        policy.levels.all().delete()
        for order, data in enumerate(levels, start=1):
            level = PolicyLevel.objects.create(
                policy=policy,
                order=order,
                timeout=data.timeout,
                reminder_interval=data.reminder,
                required_approvals=data.required_approvals,
            )
            level.groups.set(data.groups)
            level.users.set(data.users)
        return save_policy_version(policy=policy, user=user)


def duplicate_policy(*, policy: Policy, user: User) -> Policy:
    with transaction.atomic():
        base = slugify(f"{policy.slug}-copy")[:45]
        slug, n = base, 2
        while Policy.objects.filter(slug=slug).exists():
            slug, n = f"{base}-{n}", n + 1
        copy = Policy.objects.create(
            slug=slug,
            name=f"Copy of {policy.name}"[:200],
            description=policy.description,
            final_action=policy.final_action,
            rejection_is_veto=policy.rejection_is_veto,
        )
        for level in policy.levels.all():
            new = PolicyLevel.objects.create(
                policy=copy,
                order=level.order,
                timeout=level.timeout,
                reminder_interval=level.reminder_interval,
                required_approvals=level.required_approvals,
            )
            new.groups.set(level.groups.all())
            new.users.set(level.users.all())
        save_policy_version(policy=copy, user=user)
        return copy


def retire_policy(*, policy: Policy) -> None:
    """Retire a policy nothing depends on; otherwise say what uses it."""
    problems = []
    if policy.is_default:
        problems.append("it is the default policy (make another one the default first)")
    rules = list(policy.routing_rules.filter(enabled=True))
    if rules:
        problems.append("routing rules send requests to it: " + "; ".join(rule.describe() for rule in rules))
    running = policy.tasks.filter(status__in=[ApprovalTask.Status.STARTING, ApprovalTask.Status.PENDING]).count()
    if running:
        problems.append(f"{running} running task(s) follow it")
    if problems:
        raise PolicyInUse("Cannot retire: " + " and ".join(problems) + ".")
    Policy.objects.filter(pk=policy.pk).update(retired_at=timezone.now(), revision=F("revision") + 1)


def timeline(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """Who is asked when, when reminders go out, when escalations fire, and the end."""
    events: list[dict[str, Any]] = []
    start = 0
    levels = snapshot.get("levels", [])
    for number, level in enumerate(levels, start=1):
        who = ", ".join([f"group {g}" for g in level["groups"]] + list(level["users"])) or "nobody"
        quorum = level.get("required_approvals", 1)
        need = f" ({quorum} approvals needed)" if quorum > 1 else ""
        kind = "assigned" if number == 1 else "escalated"
        verb = "Ask" if number == 1 else "Escalate to"
        events.append({"at": start, "kind": kind, "text": f"{verb} level {number}: {who}{need}"})
        reminder = level.get("reminder_seconds")
        if reminder:
            count = 0
            at = reminder
            while at < level["timeout_seconds"] and count < 50:
                count += 1
                events.append({"at": start + at, "kind": "reminder", "text": f"Remind level {number} ({who})"})
                at += reminder
        start += level["timeout_seconds"]
    final = snapshot.get("final_action", "expire")
    outcome = {"expire": "expires", "approve": "is approved automatically", "reject": "is rejected automatically"}
    events.append({"at": start, "kind": "final", "text": f"Nobody decided: the request {outcome.get(final, final)}"})
    for event in events:
        event["after"] = format_duration(event["at"]) if event["at"] else "at once"
    return events


def shadowed_rules(rules: list[RoutingRule]) -> list[tuple[RoutingRule, RoutingRule]]:
    """(rule, earlier rule that always matches first) for rules that can never be reached."""
    found = []
    enabled = [rule for rule in rules if rule.enabled]
    for index, rule in enumerate(enabled):
        for earlier in enabled[:index]:
            same_type = not earlier.request_type or earlier.request_type == rule.request_type
            catches_all = not earlier.field
            identical = (earlier.field, earlier.operator, earlier.value) == (rule.field, rule.operator, rule.value)
            if same_type and (catches_all or identical):
                found.append((rule, earlier))
                break
    return found
