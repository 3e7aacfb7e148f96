"""The tests' own data: the cast, policies and pending tasks, built here rather than by the demo seed
(``approvals/demo.py``), so editing the demo never changes what a test starts from."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from approvals.models import ApprovalTask, Policy, PolicyLevel, TaskAssignment
from monitoring.models import Execution, SnapshotState

# Every cast member's password. The demo's value, so a login written against the demo's password
# still works, but it is the tests' own constant.
PASSWORD = "tollgate-demo"

# username, groups, staff, superuser
CAST = [
    ("alice", [], False, False),  # requester
    ("bob", ["approvers"], False, False),  # approver
    ("carol", ["managers"], False, False),  # escalation approver
    ("dave", [], False, False),  # outsider: sees nothing
    ("oscar", ["operators"], False, False),  # operator
    ("admin", [], True, True),  # staff and superuser
]
OPERATOR_PERMISSIONS = ["view_approvaltask", "view_monitoring", "act_on_workflows"]


def build_cast() -> dict[str, Any]:
    """alice, bob, carol, dave, oscar (also as "operator") and admin; the groups approvers,
    managers and operators; the policies "standard" (the default) and "quick-demo"."""
    User = get_user_model()
    for name in ("approvers", "managers", "operators"):
        Group.objects.get_or_create(name=name)
    Group.objects.get(name="operators").permissions.add(*Permission.objects.filter(codename__in=OPERATOR_PERMISSIONS))
    for username, groups, staff, superuser in CAST:
        user = User(username=username, email=f"{username}@example.com", is_staff=staff, is_superuser=superuser)
        user.set_password(PASSWORD)
        user.save()
        user.groups.add(*Group.objects.filter(name__in=groups))
    standard = Policy.objects.create(
        slug="standard",
        name="Standard",
        description="Approvers have a day, then managers two more; nobody deciding expires the request.",
        final_action=Policy.FinalAction.EXPIRE,
    )
    # The default in the tests, in place of the one-level policy a fresh database ships (migration 0007).
    Policy.objects.filter(is_default=True).update(is_default=False)
    Policy.objects.filter(pk=standard.pk).update(is_default=True)
    _level(standard, 1, "approvers", timedelta(days=1), timedelta(hours=4))
    _level(standard, 2, "managers", timedelta(days=2), timedelta(days=1))
    quick = Policy.objects.create(
        slug="quick-demo",
        name="Quick (demo)",
        description="Approvers have 2 minutes, then managers 3; then it is rejected.",
        final_action=Policy.FinalAction.REJECT,
    )
    _level(quick, 1, "approvers", timedelta(minutes=2), timedelta(minutes=1))
    _level(quick, 2, "managers", timedelta(minutes=3), None)
    users = {u.username: u for u in User.objects.all()}
    users["operator"] = users["oscar"]
    return users


def _level(policy: Policy, order: int, group: str, timeout: timedelta, reminder: timedelta | None) -> None:
    level = PolicyLevel.objects.create(policy=policy, order=order, timeout=timeout, reminder_interval=reminder)
    level.groups.add(Group.objects.get(name=group))


def make_policy(
    slug: str,
    levels: list[dict[str, Any]],
    *,
    final_action: str = "expire",
    default: bool = False,
) -> Policy:
    """levels: [{"groups": [...], "users": [...], "timeout": timedelta, "reminder": timedelta|None}]"""
    if default:
        Policy.objects.filter(is_default=True).update(is_default=False)
    policy = Policy.objects.create(slug=slug, name=slug.title(), final_action=final_action, is_default=default)
    User = get_user_model()
    for order, spec in enumerate(levels, start=1):
        level = PolicyLevel.objects.create(
            policy=policy,
            order=order,
            timeout=spec["timeout"],
            reminder_interval=spec.get("reminder"),
            required_approvals=spec.get("required_approvals", 1),
        )
        level.groups.set(Group.objects.filter(name__in=spec.get("groups", [])))
        level.users.set(User.objects.filter(username__in=spec.get("users", [])))
    return policy


def policy_post(name: str = "Large purchases", slug: str = "large", revision: int = 0, **extra: Any) -> dict[str, Any]:
    """The policy editor's form data: approvers for 1d 12h (reminder 4h), then managers for 2d; reject."""
    approvers, managers = Group.objects.get(name="approvers"), Group.objects.get(name="managers")
    data = {
        "name": name, "slug": slug, "description": "", "final_action": "reject", "rejection_is_veto": "on",
        "revision": revision, "action": "save",
        "levels-TOTAL_FORMS": "2", "levels-INITIAL_FORMS": "0", "levels-MIN_NUM_FORMS": "0",
        "levels-MAX_NUM_FORMS": "10",
        "levels-0-groups": [approvers.pk], "levels-0-timeout": "1d 12h", "levels-0-reminder": "4h",
        "levels-0-required_approvals": "1",
        "levels-1-groups": [managers.pk], "levels-1-timeout": "2d", "levels-1-reminder": "",
        "levels-1-required_approvals": "1",
    }  # fmt: skip
    data.update(extra)
    return data


def pending_task(
    title: str = "Buy a laptop",
    *,
    requester: Any = None,
    groups: tuple[str, ...] = ("approvers",),
    users: tuple[Any, ...] = (),
    payload: dict[str, Any] | None = None,
) -> ApprovalTask:
    """A pending task row as the workflow's register activity leaves it (for view tests)."""
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}",
        request_id=token,
        title=title,
        status=ApprovalTask.Status.PENDING,
        due_at=timezone.now() + timedelta(days=1),  # the register activity always sets one
        requested_by=requester.username if requester else "system",
        requester=requester,
        payload=payload or {},
    )
    for group in Group.objects.filter(name__in=groups):
        TaskAssignment.objects.create(task=task, level=1, group=group)
    for user in users:
        TaskAssignment.objects.create(task=task, level=1, user=user)
    return task


# ---- monitoring snapshot rows ---------------------------------------------------------------

RUN_ID = "0d9b6c52-3f2c-4c55-9b0e-6d1f2a1b0c01"


def snapshot_rows() -> None:
    """A failed and a running PaymentWorkflow in the snapshot, refreshed three minutes ago."""
    now = timezone.now()
    Execution.objects.create(
        workflow_id="pay-1", run_id=RUN_ID, workflow_type="PaymentWorkflow", status="failed",
        start_time=now - timedelta(minutes=10), close_time=now - timedelta(minutes=5), duration=300,
        failure_message="card declined <b>",
    )  # fmt: skip
    Execution.objects.create(
        workflow_id="pay-2", run_id="r2", workflow_type="PaymentWorkflow", status="running",
        start_time=now - timedelta(hours=2), progress_at=now - timedelta(hours=1),
    )  # fmt: skip
    SnapshotState.objects.create(pk=1, refreshed_at=now - timedelta(minutes=3), close_watermark=now)


def test_database_url() -> str:
    """A URL for the database this test run uses, for server subprocesses."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test
