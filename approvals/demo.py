"""Demo data for the embedded default (``make run``): the cast from STYLE.md."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction

from approvals import services
from approvals.models import ApprovalTask, Policy, PolicyLevel

DEMO_PASSWORD = "tollgate-demo"
CAST = [
    # username, role, groups, staff, superuser
    ("alice", "requester", [], False, False),
    ("bob", "approver", ["approvers"], False, False),
    ("carol", "escalation approver", ["managers"], False, False),
    ("dave", "outsider", [], False, False),
    ("oscar", "operator", ["operators"], False, False),
    ("admin", "admin", [], True, True),
]


def seed_users_and_policies() -> None:
    User = get_user_model()
    with transaction.atomic():
        for name in ("approvers", "managers", "operators"):
            Group.objects.get_or_create(name=name)
        operators = Group.objects.get(name="operators")
        operators.permissions.add(
            *Permission.objects.filter(codename__in=["view_approvaltask", "view_monitoring", "act_on_workflows"])
        )
        for username, _role, groups, staff, superuser in CAST:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"email": f"{username}@example.com", "is_staff": staff, "is_superuser": superuser},
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            user.groups.add(*Group.objects.filter(name__in=groups))
        standard, created = Policy.objects.get_or_create(
            slug="standard",
            defaults={
                "name": "Standard",
                "description": "Approvers have a day, then managers two more; nobody deciding expires the request.",
                "final_action": Policy.FinalAction.EXPIRE,
                "is_default": not Policy.objects.filter(is_default=True).exists(),
            },
        )
        if created:
            _level(standard, 1, "approvers", timedelta(days=1), timedelta(hours=4))
            _level(standard, 2, "managers", timedelta(days=2), timedelta(days=1))
            # The demo's requests name no policy and show escalation: "Standard" takes over as the
            # default from the one-level policy a fresh database ships with (migration 0007).
            Policy.objects.filter(is_default=True).exclude(pk=standard.pk).update(is_default=False)
            Policy.objects.filter(pk=standard.pk).update(is_default=True)
        quick, created = Policy.objects.get_or_create(
            slug="quick-demo",
            defaults={
                "name": "Quick (demo)",
                "description": "Watch escalation live: approvers have 2 minutes, then managers 3; then it is rejected.",
                "final_action": Policy.FinalAction.REJECT,
            },
        )
        if created:
            _level(quick, 1, "approvers", timedelta(minutes=2), timedelta(minutes=1))
            _level(quick, 2, "managers", timedelta(minutes=3), None)


def _level(policy: Policy, order: int, group: str, timeout: timedelta, reminder: timedelta | None) -> None:
    level = PolicyLevel.objects.create(policy=policy, order=order, timeout=timeout, reminder_interval=reminder)
    level.groups.add(Group.objects.get(name=group))


def seed_requests() -> int:
    """A few pending requests from alice, once. Their workflows start on commit."""
    if ApprovalTask.objects.exists():
        return 0
    alice = get_user_model().objects.get(username="alice")
    requests = [
        ("New laptop for the design team", "standard", {"amount": "2400 EUR", "vendor": "Framework"}),
        ("Conference travel: PyCon", "standard", {"amount": "1850 EUR", "dates": "2027-05-12 to 2027-05-18"}),
        ("Production database access for on-call", "quick-demo", {"duration": "7 days", "reason": "on-call rota"}),
        ("<script>alert('escaped')</script> payload check", "standard", {"note": "<b>not bold</b>"}),
    ]
    with transaction.atomic():
        for title, slug, payload in requests:
            services.create_request(
                user=alice, title=title, description="", policy=Policy.objects.get(slug=slug), payload=payload
            )
    return len(requests)
