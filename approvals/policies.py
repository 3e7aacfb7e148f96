"""Escalation policies: editing, versions, routing, and the snapshot a workflow follows.

Views and the workflow's ``load_policy`` activity call these; every write that
spans rows happens in one transaction, so a form error never leaves a policy
saved half-way. Pushing a version to running workflows (a side effect on
Temporal) is ``services.push_policy_version``.
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
from workflows.types import Approvers, LevelSnapshot, PolicySnapshot


class InvalidRequest(ValueError):
    """A request names a policy, group or user that does not exist."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


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
            inbox_fields=policy.inbox_fields,
            no_bulk_decisions=policy.no_bulk_decisions,
            claim_for=policy.claim_for,
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


# ---- policies ---------------------------------------------------------------


def policy_definition(policy: Policy) -> dict[str, Any]:
    """The policy's current definition as plain data (what a version stores)."""
    return {
        "slug": policy.slug,
        "name": policy.name,
        "final_action": policy.final_action,
        "rejection_is_veto": policy.rejection_is_veto,
        "levels": [
            {
                "groups": sorted(g.name for g in level.groups.all()),
                "users": sorted(u.get_username() for u in level.users.all()),
                "timeout_seconds": int(level.timeout.total_seconds()),
                "reminder_seconds": int(level.reminder_interval.total_seconds()) if level.reminder_interval else None,
                "required_approvals": level.required_approvals,
            }
            for level in policy.levels.prefetch_related("groups", "users").order_by("order")
        ],
    }


def save_policy_version(*, policy: Policy, user: User | None) -> PolicyVersion:
    """Freeze the policy's current definition as its next version, with a readable diff."""
    previous = policy.versions.order_by("-number").first()
    snapshot = policy_definition(policy)
    number = previous.number + 1 if previous else 1
    snapshot["version"] = number
    changes = describe_changes(previous.snapshot if previous else None, snapshot)
    return PolicyVersion.objects.create(
        policy=policy, number=number, snapshot=snapshot, changes=changes, created_by=user
    )


def current_version(policy: Policy) -> PolicyVersion:
    """The latest version; a policy made outside the editor gets its first one now."""
    version = policy.versions.order_by("-number").first()
    if version is None:
        with transaction.atomic():
            Policy.objects.select_for_update().get(pk=policy.pk)
            version = policy.versions.order_by("-number").first() or save_policy_version(policy=policy, user=None)
    return version


def describe_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two policy snapshots."""
    if old is None:
        return ["Created"]
    changes = []
    labels = {"name": "Name", "final_action": "Final action", "rejection_is_veto": "Any rejection ends it"}
    for key, label in labels.items():
        if old.get(key) != new.get(key):
            changes.append(f"{label}: {old.get(key)} → {new.get(key)}")
    old_levels, new_levels = old.get("levels", []), new.get("levels", [])
    for number in range(1, max(len(old_levels), len(new_levels)) + 1):
        before = old_levels[number - 1] if number <= len(old_levels) else None
        after = new_levels[number - 1] if number <= len(new_levels) else None
        if before is None:
            changes.append(f"Level {number} added: {_describe_level(after)}")
        elif after is None:
            changes.append(f"Level {number} removed (was {_describe_level(before)})")
        else:
            changes.extend(_level_changes(number, before, after))
    return changes or ["No change"]


def _describe_level(level: dict[str, Any] | None) -> str:
    if not level:
        return ""
    who = ", ".join([f"group {g}" for g in level.get("groups", [])] + level.get("users", []))
    text = f"{who}, {format_duration(level['timeout_seconds'])}"
    if level.get("reminder_seconds"):
        text += f", reminders every {format_duration(level['reminder_seconds'])}"
    if level.get("required_approvals", 1) > 1:
        text += f", {level['required_approvals']} approvals"
    return text


def _level_changes(number: int, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changes = []
    for key, label in (("groups", "groups"), ("users", "users")):
        added = sorted(set(after.get(key, [])) - set(before.get(key, [])))
        removed = sorted(set(before.get(key, [])) - set(after.get(key, [])))
        if added:
            changes.append(f"Level {number} {label}: + {', '.join(added)}")
        if removed:
            changes.append(f"Level {number} {label}: − {', '.join(removed)}")
    for key, label in (("timeout_seconds", "timeout"), ("reminder_seconds", "reminders every")):
        if before.get(key) != after.get(key):
            old = format_duration(before.get(key)) or "none"
            new = format_duration(after.get(key)) or "none"
            changes.append(f"Level {number} {label}: {old} → {new}")
    if before.get("required_approvals", 1) != after.get("required_approvals", 1):
        changes.append(
            f"Level {number} approvals needed: {before.get('required_approvals', 1)} → {after['required_approvals']}"
        )
    return changes


def route_policy(*, request_type: str, payload: dict[str, Any]) -> Policy | None:
    """The first enabled routing rule that matches picks the policy."""
    rules = RoutingRule.objects.filter(enabled=True, policy__retired_at=None).select_related("policy")
    for rule in rules.order_by("order", "pk"):
        if rule.matches(request_type, payload):
            return rule.policy
    return None


def snapshot_policy(
    *, slug: str, approvers: Approvers | None, request_type: str = "", payload: dict[str, Any] | None = None
) -> PolicySnapshot:
    """The policy as the workflow will follow it: named, else routed, else the default."""
    if slug:
        policy = Policy.objects.filter(slug=slug).first()
        if policy is None:
            raise InvalidRequest("policy", f"no escalation policy with slug {slug!r}")
        if policy.retired_at is not None:
            raise InvalidRequest("policy", f"policy {slug!r} is retired")
    else:
        policy = route_policy(request_type=request_type, payload=payload or {})
        policy = policy or Policy.objects.filter(is_default=True, retired_at=None).first()
        if policy is None:
            raise InvalidRequest("policy", "no policy named, no routing rule matched, and no default policy")
    version = current_version(policy)
    data = version.snapshot
    levels = [
        LevelSnapshot(
            groups=level["groups"],
            users=level["users"],
            timeout_seconds=level["timeout_seconds"],
            reminder_seconds=level.get("reminder_seconds"),
            required_approvals=level.get("required_approvals", 1),
        )
        for level in data["levels"]
    ]
    if not levels:
        raise InvalidRequest("policy", f"policy {policy.slug!r} has no levels")
    if approvers is not None:
        missing_groups = set(approvers.groups) - set(
            Group.objects.filter(name__in=approvers.groups).values_list("name", flat=True)
        )
        if missing_groups:
            raise InvalidRequest("approvers.groups", f"unknown group(s): {', '.join(sorted(missing_groups))}")
        found_users = User.objects.filter(username__in=approvers.users, is_active=True).values_list(
            "username", flat=True
        )
        missing_users = set(approvers.users) - set(found_users)
        if missing_users:
            raise InvalidRequest("approvers.users", f"unknown or inactive user(s): {', '.join(sorted(missing_users))}")
        first = levels[0]
        levels[0] = LevelSnapshot(
            approvers.groups, approvers.users, first.timeout_seconds, first.reminder_seconds, first.required_approvals
        )
    for number, level in enumerate(levels, start=1):
        if not level.groups and not level.users:
            raise InvalidRequest("policy", f"level {number} of policy {policy.slug!r} has no approvers")
    return PolicySnapshot(
        slug=policy.slug,
        name=data["name"],
        final_action=data["final_action"],
        levels=levels,
        version=version.number,
        rejection_is_veto=data.get("rejection_is_veto", True),
    )
