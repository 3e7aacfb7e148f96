"""Numbers too large for a timedelta or a database column get a form error naming the field, never a 500."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from approvals.durations import parse_duration
from approvals.models import Policy, PolicyLevel
from config.ports import free_port
from tests.support.data import pending_task, policy_post

pytestmark = pytest.mark.django_db
HUGE = "99999999999999999999"


def as_admin(cast: dict[str, Any]) -> Client:
    client = Client(raise_request_exception=False)  # a 500 is an answer to look at, not an exception
    client.force_login(cast["admin"])
    return client


@pytest.mark.parametrize("text", ["99999999999999d", "1000000000000000000000s", "3651d", "9" * 5000 + "w"])
def test_a_duration_beyond_ten_years_is_refused_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"at most 3650 days|at most"):
        parse_duration(text)


def test_ten_years_is_still_a_duration() -> None:
    assert parse_duration("3650d") == timedelta(days=3650)


@pytest.mark.parametrize("field", ["timeout", "reminder"])
@pytest.mark.parametrize("action", ["save", "preview"])
def test_the_policy_editor_refuses_an_overflowing_duration_on_its_field(
    cast: dict[str, Any], field: str, action: str
) -> None:
    extra: dict[str, Any] = {f"levels-0-{field}": "99999999999999d"}
    data = policy_post(action=action, **extra)
    response = as_admin(cast).post(reverse("approvals:policy_new"), data)
    assert response.status_code in (200, 422)
    assert "A duration must be at most 3650 days (ten years)." in response.content.decode()
    assert field in response.context["levels"].forms[0].errors
    assert not Policy.objects.filter(slug="large").exists()


@pytest.mark.parametrize("field", ["groups", "users"])
def test_the_policy_editor_refuses_an_id_no_row_can_have(cast: dict[str, Any], field: str) -> None:
    extra: dict[str, Any] = {f"levels-0-{field}": [HUGE]}
    response = as_admin(cast).post(reverse("approvals:policy_new"), policy_post(**extra))
    assert response.status_code == 422
    assert f"Select a valid choice. {HUGE} is not one of the available choices." in response.content.decode()


def test_the_policy_editor_refuses_an_overflowing_revision(cast: dict[str, Any]) -> None:
    standard = Policy.objects.get(slug="standard")
    data = policy_post(name="Standard", slug="standard", revision=HUGE)  # type: ignore[arg-type]
    response = as_admin(cast).post(reverse("approvals:policy_edit", args=[standard.pk]), data)
    assert response.status_code == 422
    assert "This form&#x27;s revision is out of range: reload the page." in response.content.decode()


def test_the_django_admin_refuses_a_level_longer_than_ten_years(cast: dict[str, Any]) -> None:
    level = PolicyLevel(policy=Policy.objects.get(slug="standard"), order=9, timeout=timedelta(days=3651))
    with pytest.raises(ValidationError, match="at most 3650 days"):
        level.clean()


def test_a_policy_push_naming_an_impossible_task_says_which_and_sends_nothing(cast: dict[str, Any]) -> None:
    standard = Policy.objects.get(slug="standard")
    other = pending_task("Another policy's task", requester=cast["alice"])  # no policy: not this policy's
    response = as_admin(cast).post(
        reverse("approvals:policy_push", args=[standard.pk]), {"task": [HUGE, str(other.pk), "-1"]}, follow=True
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert f"Not sent to task &#x27;{HUGE}&#x27;: this policy has no running task with that id." in page
    assert f"Not sent to task &#x27;{other.pk}&#x27;" in page and "Not sent to task &#x27;-1&#x27;" in page
    assert "sent to" not in page.replace("Not sent to", "")


def test_an_order_quantity_beyond_what_the_ledger_holds_is_refused(cast: dict[str, Any], settings: Any) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # nothing may be started either way
    client = Client()
    client.force_login(cast["alice"])
    response = client.post(
        reverse("reference:start_kind", args=["order"]),
        {"order-amount": "1500", "order-items": f"desk:{HUGE}"},
    )
    assert response.status_code == 422
    assert (
        f"“desk:{HUGE}”: the quantity after the colon must be a whole number up to 1000000"
        in response.context["forms"][0].errors["items"]
    )
