"""Admins' pages: policies (versions, validation, locking, retire), routing rules, out of office."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from approvals.models import Delegation, Policy, PolicyVersion, RoutingRule
from approvals.policies import current_version
from tests.support.data import make_policy, pending_task, policy_post

pytestmark = pytest.mark.django_db


def as_user(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


PAGES = [
    ("get", "approvals:policies", False),
    ("get", "approvals:policy_new", False),
    ("get", "approvals:policy_detail", True),
    ("get", "approvals:policy_edit", True),
    ("post", "approvals:policy_duplicate", True),
    ("post", "approvals:policy_retire", True),
    ("post", "approvals:policy_push", True),
    ("get", "approvals:routing", False),
]


@pytest.mark.parametrize(("method", "name", "needs_pk"), PAGES)
def test_only_admins_with_the_policy_permission_get_in(
    client: Client, cast: dict[str, Any], method: str, name: str, needs_pk: bool
) -> None:
    policy = Policy.objects.get(slug="standard")
    before = Policy.objects.count()
    url = reverse(name, args=[policy.pk] if needs_pk else [])
    assert getattr(client, method)(url).status_code == 302  # anonymous: to the login page
    staff_without_permission = User.objects.create_user("eve", is_staff=True)
    for user in (cast["dave"], cast["bob"], cast["oscar"], staff_without_permission):
        assert getattr(as_user(client, user), method)(url).status_code == 403, user
    assert getattr(as_user(client, cast["admin"]), method)(url).status_code in (200, 302)
    assert Policy.objects.count() - before in (0, 1)  # the admin's duplicate, at most


@pytest.mark.parametrize(
    ("name", "method"), [("approvals:policy_duplicate", "get"), ("approvals:policy_retire", "get"),
                         ("approvals:policy_push", "get"), ("approvals:policies", "post")],
)  # fmt: skip
def test_policy_views_refuse_the_wrong_method(client: Client, cast: dict[str, Any], name: str, method: str) -> None:
    args = [] if name == "approvals:policies" else [Policy.objects.get(slug="standard").pk]
    assert getattr(as_user(client, cast["admin"]), method)(reverse(name, args=args)).status_code == 405


def test_an_admin_creates_a_policy_as_version_one(client: Client, cast: dict[str, Any]) -> None:
    response = as_user(client, cast["admin"]).post(reverse("approvals:policy_new"), policy_post())
    policy = Policy.objects.get(slug="large")
    assert response.status_code == 302 and response["Location"] == reverse("approvals:policy_detail", args=[policy.pk])
    version = current_version(policy)
    assert (version.number, version.changes, version.created_by) == (1, ["Created"], cast["admin"])
    assert version.snapshot["levels"] == [
        {"groups": ["approvers"], "users": [], "timeout_seconds": 129600, "reminder_seconds": 14400,
         "required_approvals": 1},
        {"groups": ["managers"], "users": [], "timeout_seconds": 172800, "reminder_seconds": None,
         "required_approvals": 1},
    ]  # fmt: skip
    page = client.get(reverse("approvals:policy_detail", args=[policy.pk])).content.decode()
    for text in ("Ask level 1: group approvers", "4h", "Remind level 1", "1d 12h",
                 "Escalate to level 2: group managers",
                 "3d 12h", "the request is rejected automatically"):  # fmt: skip
        assert text in page, text
    edit = client.get(reverse("approvals:policy_edit", args=[policy.pk])).content.decode()
    assert 'value="1d 12h"' in edit and 'value="4h"' in edit  # shown the way it was typed


def test_every_save_is_a_new_version_with_a_readable_diff(client: Client, cast: dict[str, Any]) -> None:
    admin = as_user(client, cast["admin"])
    admin.post(reverse("approvals:policy_new"), policy_post())
    policy = Policy.objects.get(slug="large")
    changes: dict[str, Any] = {"levels-1-timeout": "3d", "levels-1-users": [cast["carol"].pk]}
    data = policy_post(revision=policy.revision, **changes)
    assert admin.post(reverse("approvals:policy_edit", args=[policy.pk]), data).status_code == 302
    version = current_version(policy)
    assert version.number == 2
    assert version.changes == ["Level 2 users: + carol", "Level 2 timeout: 2d → 3d"]
    assert PolicyVersion.objects.get(policy=policy, number=1).snapshot["levels"][1]["timeout_seconds"] == 172800


def test_the_second_of_two_concurrent_edits_is_refused(client: Client, cast: dict[str, Any]) -> None:
    admin = as_user(client, cast["admin"])
    admin.post(reverse("approvals:policy_new"), policy_post())
    policy = Policy.objects.get(slug="large")
    opened_at = policy.revision
    first = admin.post(reverse("approvals:policy_edit", args=[policy.pk]), policy_post(revision=opened_at, name="A"))
    second = admin.post(reverse("approvals:policy_edit", args=[policy.pk]), policy_post(revision=opened_at, name="B"))
    assert first.status_code == 302 and second.status_code == 422
    assert "was changed by admin after you opened it" in second.content.decode()
    policy.refresh_from_db()
    assert policy.name == "A" and current_version(policy).number == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"levels-0-groups": [], "levels-1-groups": []}, "Choose at least one group or user for this level."),
        ({"levels-0-timeout": "soon"}, "is not a duration"),
        ({"levels-0-timeout": "0m"}, "longer than zero"),
        ({"levels-0-reminder": "2d"}, "A reminder must come before the level escalates."),
        ({"levels-0-reminder": "1m"}, "At most 50 reminders per level"),
        ({"levels-0-required_approvals": "5"}, "Needs 5 approvals but only 1 people can approve."),
        ({"slug": "not a slug"}, "Enter a valid"),
        ({"levels-0-DELETE": "on", "levels-1-DELETE": "on"}, "A policy needs at least one level."),
    ],
)
def test_invalid_policies_get_clear_errors_and_nothing_is_saved(
    client: Client, cast: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    response = as_user(client, cast["admin"]).post(reverse("approvals:policy_new"), policy_post(**change))
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Policy.objects.filter(slug="large").exists()


def test_preview_shows_the_timeline_without_saving(client: Client, cast: dict[str, Any]) -> None:
    response = as_user(client, cast["admin"]).post(reverse("approvals:policy_new"), policy_post(action="preview"))
    page = response.content.decode()
    assert response.status_code == 200 and 'id="preview"' in page and "Escalate to level 2: group managers" in page
    assert not Policy.objects.filter(slug="large").exists()


def test_add_level_offers_one_more_empty_level(client: Client, cast: dict[str, Any]) -> None:
    page = as_user(client, cast["admin"]).post(reverse("approvals:policy_new"), policy_post(action="add_level"))
    assert "Level 3" in page.content.decode() and not Policy.objects.filter(slug="large").exists()


def test_duplicate_copies_the_levels_as_a_new_policy(client: Client, cast: dict[str, Any]) -> None:
    standard = Policy.objects.get(slug="standard")
    response = as_user(client, cast["admin"]).post(reverse("approvals:policy_duplicate", args=[standard.pk]))
    copy = Policy.objects.get(slug="standard-copy")
    assert response["Location"] == reverse("approvals:policy_edit", args=[copy.pk])
    assert current_version(copy).snapshot["levels"] == current_version(standard).snapshot["levels"]
    assert not copy.is_default


def test_retiring_says_what_still_uses_the_policy(client: Client, cast: dict[str, Any]) -> None:
    admin = as_user(client, cast["admin"])
    standard = Policy.objects.get(slug="standard")
    page = admin.post(reverse("approvals:policy_retire", args=[standard.pk]), follow=True).content.decode()
    assert "it is the default policy" in page
    quick = Policy.objects.get(slug="quick-demo")
    RoutingRule.objects.create(request_type="access", policy=quick)
    task = pending_task(requester=cast["alice"])
    task.policy = quick
    task.save()
    page = admin.post(reverse("approvals:policy_retire", args=[quick.pk]), follow=True).content.decode()
    assert "routing rules send requests to it: type “access”" in page and "1 running task(s) follow it" in page
    quick.refresh_from_db()
    assert quick.retired_at is None
    RoutingRule.objects.all().delete()
    task.status = "approved"
    task.save()
    admin.post(reverse("approvals:policy_retire", args=[quick.pk]))
    quick.refresh_from_db()
    assert quick.retired_at is not None
    assert (
        quick
        not in as_user(client, cast["alice"]).get(reverse("approvals:new")).context["form"].fields["policy"].queryset
    )


def test_routing_rules_refuse_unreachable_rules_and_preview_a_payload(client: Client, cast: dict[str, Any]) -> None:
    admin = as_user(client, cast["admin"])
    large = make_policy("large", [{"groups": ["managers"], "timeout": timedelta(days=2)}])
    rule = {"action": "add", "order": "1", "request_type": "purchase", "field": "amount", "operator": ">=",
            "value": "10000", "policy": large.pk}  # fmt: skip
    assert admin.post(reverse("approvals:routing"), rule).status_code == 302
    same_again = admin.post(reverse("approvals:routing"), {**rule, "order": "2"})
    assert same_again.status_code == 422 and "This rule can never match" in same_again.content.decode()
    catch_all_first = {**rule, "order": "0", "field": "", "value": ""}
    refused = admin.post(reverse("approvals:routing"), catch_all_first)
    assert "would make “type “purchase” and amount ≥ 10000” unreachable" in refused.content.decode()
    assert RoutingRule.objects.count() == 1
    page = admin.get(reverse("approvals:routing"), {"preview": "1", "request_type": "purchase",
                                                     "payload": '{"amount": 25000}'}).content.decode()  # fmt: skip
    assert "→ Large" in page and "Ask level 1: group managers" in page
    small = admin.get(reverse("approvals:routing"), {"preview": "1", "request_type": "purchase",
                                                      "payload": '{"amount": 20}'}).content.decode()  # fmt: skip
    assert "→ Standard" in small
    bad = admin.get(reverse("approvals:routing"), {"preview": "1", "payload": "{not json"}).content.decode()
    assert "is not valid JSON" in bad


def test_an_approver_sets_a_delegate_who_then_gets_the_open_tasks(client: Client, cast: dict[str, Any]) -> None:
    # The delegate shares an approver group with bob (see test_out_of_office.py); the task is bob's own.
    erin = User.objects.create(username="erin")
    erin.groups.add(Group.objects.get(name="approvers"))
    task = pending_task("Covered", requester=cast["alice"], groups=(), users=(cast["bob"],))
    bob = as_user(client, cast["bob"])
    response = bob.post(reverse("approvals:away"), {
        "user": cast["carol"].pk,  # ignored: bob may only set his own
        "delegate": erin.pk, "starts_on": date.today(), "ends_on": date.today() + timedelta(days=3),
        "reason": "holiday"})  # fmt: skip
    assert response.status_code == 302
    delegation = Delegation.objects.get()
    assert (delegation.user, delegation.delegate, delegation.created_by) == (cast["bob"], erin, cast["bob"])
    assert "Covered" in as_user(Client(), erin).get(reverse("approvals:inbox")).content.decode()
    assert task.audit.filter(kind="delegated", message__contains="erin as delegate of bob").exists()
    assert bob.post(reverse("approvals:away"), {"action": "end", "delegation": "not-a-number"}).status_code == 302
    bob.post(reverse("approvals:away"), {"action": "end", "delegation": delegation.pk})
    assert not Delegation.objects.active_on(date.today()).exists()
    assert "Covered" not in as_user(Client(), erin).get(reverse("approvals:inbox")).content.decode()
    assert task.audit.filter(message="erin no longer stands in for bob").exists()


def test_a_delegation_that_begins_later_covers_tasks_already_open_when_it_begins(
    client: Client, cast: dict[str, Any]
) -> None:
    pending_task("Opened before", requester=cast["alice"])
    Delegation.objects.create(user=cast["bob"], delegate=cast["dave"], starts_on=date.today(), ends_on=date.today())
    assert "Opened before" in as_user(client, cast["dave"]).get(reverse("approvals:inbox")).content.decode()


def test_a_malformed_add_level_request_gets_a_page_not_an_error(client: Client, cast: dict[str, Any]) -> None:
    extra: dict[str, Any] = {"levels-TOTAL_FORMS": "lots"}
    data = policy_post(action="add_level", **extra)
    assert as_user(client, cast["admin"]).post(reverse("approvals:policy_new"), data).status_code == 200


def test_a_delegation_with_its_dates_reversed_is_refused(client: Client, cast: dict[str, Any]) -> None:
    response = as_user(client, cast["bob"]).post(reverse("approvals:away"), {
        "delegate": cast["dave"].pk, "starts_on": date.today(),
        "ends_on": date.today() - timedelta(days=1)})  # fmt: skip
    assert response.status_code == 422 and "The last day comes after the first." in response.content.decode()
    assert not Delegation.objects.exists()


def test_a_save_in_the_django_admin_is_a_version_and_stales_open_editor_forms(
    client: Client, cast: dict[str, Any]
) -> None:
    from django.contrib.admin.sites import site
    from django.test import RequestFactory

    policy = Policy.objects.get(slug="standard")
    current_version(policy)  # version 1, as the seed left it
    opened_at = policy.revision  # an editor form opened now
    request = RequestFactory().post("/admin/")
    request.user = cast["admin"]
    admin = site._registry[Policy]
    policy.name = "Renamed in admin"
    admin.save_model(request, policy, form=None, change=True)
    admin.save_related(request, type("Form", (), {"instance": policy, "save_m2m": lambda self: None})(), [], True)
    assert current_version(policy).changes == ["Name: Standard → Renamed in admin"]
    response = as_user(client, cast["admin"]).post(
        reverse("approvals:policy_edit", args=[policy.pk]), policy_post(slug="standard", revision=opened_at)
    )
    assert response.status_code == 422 and "after you opened it" in response.content.decode()


def test_the_admin_checks_a_level_with_the_editors_rules(cast: dict[str, Any]) -> None:
    from django.core.exceptions import ValidationError

    from approvals.models import PolicyLevel

    level = PolicyLevel(policy=Policy.objects.get(slug="standard"), order=9, timeout=timedelta(hours=1),
                        reminder_interval=timedelta(minutes=1))  # fmt: skip
    with pytest.raises(ValidationError, match="At most 50 reminders per level"):
        level.clean()
