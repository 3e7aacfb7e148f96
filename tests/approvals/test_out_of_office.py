"""Out of office: who may name whom as delegate, and ending someone else's absence is refused plainly."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from approvals.models import ApprovalTask, Delegation
from tests.support.data import pending_task
from tests.support.web import logged_in

pytestmark = pytest.mark.django_db


def away(delegate: Any, **extra: Any) -> dict[str, Any]:
    return {"delegate": delegate.pk, "starts_on": date.today(), "ends_on": date.today() + timedelta(days=3), **extra}


def colleague(name: str, *groups: str) -> User:
    user = User.objects.create(username=name)
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user


def test_an_approver_cannot_name_an_outsider_and_is_told_why(cast: dict[str, Any]) -> None:
    for n in range(3):
        pending_task(f"Group task {n}", requester=cast["alice"])
    response = logged_in(cast["bob"]).post(reverse("approvals:away"), away(cast["dave"]))
    assert response.status_code == 422
    message = (
        "dave shares none of your approver groups (approvers): a delegate must be a member of one of them, "
        "or an admin must set this delegation."
    )
    assert response.context["form"].errors["delegate"] == [message]
    assert not Delegation.objects.exists()
    assert not ApprovalTask.objects.visible_to(cast["dave"]).exists()


def test_an_approver_may_name_a_colleague_from_one_of_their_approver_groups(cast: dict[str, Any]) -> None:
    erin = colleague("erin", "approvers")
    assert logged_in(cast["bob"]).post(reverse("approvals:away"), away(erin)).status_code == 302
    assert Delegation.objects.get().delegate == erin


def test_a_group_counts_when_a_task_is_assigned_to_it_even_if_no_policy_names_it(cast: dict[str, Any]) -> None:
    finance = Group.objects.create(name="finance")
    cast["bob"].groups.add(finance)
    frank = colleague("frank", "finance")
    pending_task("Invoice", requester=cast["alice"], groups=("finance",))
    assert logged_in(cast["bob"]).post(reverse("approvals:away"), away(frank)).status_code == 302


def test_sharing_a_group_that_approves_nothing_is_not_enough(cast: dict[str, Any]) -> None:
    cast["bob"].groups.add(Group.objects.get(name="operators"))  # oscar's group: no policy or task names it
    response = logged_in(cast["bob"]).post(reverse("approvals:away"), away(cast["oscar"]))
    assert response.status_code == 422
    assert "oscar shares none of your approver groups (approvers)" in response.content.decode()


def test_someone_in_no_approver_group_is_sent_to_an_admin(cast: dict[str, Any]) -> None:
    response = logged_in(cast["alice"]).post(reverse("approvals:away"), away(cast["bob"]))
    assert response.status_code == 422
    assert "You are in no approver group, so nobody can stand in for you from here: ask an admin." in (
        response.content.decode()
    )


def test_an_admin_may_name_anyone(cast: dict[str, Any]) -> None:
    response = logged_in(cast["admin"]).post(reverse("approvals:away"), away(cast["dave"], user=cast["bob"].pk))
    assert response.status_code == 302
    delegation = Delegation.objects.get()
    assert (delegation.user, delegation.delegate) == (cast["bob"], cast["dave"])


def test_ending_someone_elses_out_of_office_is_refused_and_nothing_ends(cast: dict[str, Any]) -> None:
    erin = colleague("erin", "approvers")
    delegation = Delegation.objects.create(
        user=cast["bob"], delegate=erin, starts_on=date.today(), ends_on=date.today() + timedelta(days=3)
    )
    for intruder in (erin, cast["carol"]):  # the delegate, and anyone else
        client = logged_in(intruder)
        page = client.get(reverse("approvals:away")).content.decode()
        assert "End now" not in page
        response = client.post(reverse("approvals:away"), {"action": "end", "delegation": delegation.pk})
        assert response.status_code == 403
        text = response.content.decode()
        assert "Nothing ended: only bob or an admin may end bob&#x27;s out of office." in text
        assert "Out of office ended" not in text
        delegation.refresh_from_db()
        assert delegation.ends_on == date.today() + timedelta(days=3)
    assert Delegation.objects.active_on(date.today()).get() == delegation

    response = logged_in(cast["bob"]).post(
        reverse("approvals:away"), {"action": "end", "delegation": delegation.pk}, follow=True
    )
    assert "Out of office ended: erin no longer stands in for bob." in response.content.decode()
    assert not Delegation.objects.active_on(date.today()).exists()


def test_ending_an_entry_that_does_not_exist_says_so(cast: dict[str, Any]) -> None:
    for value in ("12345", "99999999999999999999", "x"):
        response = logged_in(cast["bob"]).post(
            reverse("approvals:away"), {"action": "end", "delegation": value}, follow=True
        )
        assert "Nothing ended: that out-of-office entry does not exist (any more)." in response.content.decode()
