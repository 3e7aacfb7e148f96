"""The "Start a workflow" page: access, CSRF, validation, Temporal down, and what a start sends.

The starts go to the real dev server; what was sent is read back from the started
workflow's first history event (type, task queue, input), so no worker is needed
for that, not even for DeploymentPipelineWorkflow, whose code lives elsewhere.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from approvals.models import ApprovalTask
from tests.support.temporal import DevServer, WorkerThread, eventually, started_event
from tests.support.web import logged_in

pytestmark = pytest.mark.django_db

START = reverse("reference:start")


def start_url(kind: str) -> str:
    return reverse("reference:start_kind", args=[kind])


ORDER = {"order-amount": "1500", "order-items": "desk:2, lamp"}
CAMPAIGN = {"campaign-title": "Sign the policy", "campaign-approvers": "bob, carol"}


def test_the_start_page_needs_a_login(client: Client, cast: dict[str, Any]) -> None:
    for response in (client.get(START), client.post(start_url("order"), ORDER)):
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_request_form_links_to_the_start_page(cast: dict[str, Any]) -> None:
    page = logged_in(cast["alice"]).get(reverse("approvals:new")).content.decode()
    assert f'href="{START}"' in page


def test_the_start_page_shows_one_form_per_kind(cast: dict[str, Any]) -> None:
    page = logged_in(cast["alice"]).get(START).content.decode()
    for kind in ("order", "budget", "campaign", "deployment"):
        assert f'action="{start_url(kind)}"' in page


def test_wrong_methods_and_unknown_kinds_are_refused(cast: dict[str, Any]) -> None:
    client = logged_in(cast["alice"])
    assert client.post(START).status_code == 405
    assert client.get(start_url("order")).status_code == 405
    assert client.post(start_url("rocket"), {}).status_code == 404


def test_csrf_is_enforced(cast: dict[str, Any], temporal_down: Any) -> None:
    response = logged_in(cast["alice"], enforce_csrf_checks=True).post(start_url("order"), ORDER)
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("kind", "data", "field", "message"),
    [
        ("order", {"order-amount": "-5", "order-items": "desk"}, "amount", "must be a positive number"),
        ("order", {"order-amount": "5", "order-items": "desk:two"}, "items", "must be a whole number"),
        ("budget", {"budget-team": "design", "budget-balance": "10"}, "limit", "This field is required"),
        (
            "campaign",
            {**CAMPAIGN, "campaign-fan_out_limit": "1"},
            "fan_out_limit",
            "must be a whole number from 2 to 1000",
        ),
        ("campaign", {**CAMPAIGN, "campaign-payload": "[1]"}, "payload", "must be a JSON object"),
        # found by the workflow's own parser, shown on the field it names:
        ("campaign", {**CAMPAIGN, "campaign-approvers": "bob alice"}, "approvers", "must not include the requester"),
        ("deployment", {"deployment-service": "api"}, "version", "This field is required"),
    ],
)
def test_a_bad_field_is_named_and_nothing_starts(
    cast: dict[str, Any], temporal_down: Any, kind: str, data: dict[str, str], field: str, message: str
) -> None:
    response = logged_in(cast["alice"]).post(start_url(kind), data)
    assert response.status_code == 422
    errors = response.context["forms"][list(("order", "budget", "campaign", "deployment")).index(kind)].errors
    assert message in " ".join(errors[field])


def test_with_temporal_down_the_page_says_so_and_keeps_the_input(cast: dict[str, Any], temporal_down: Any) -> None:
    response = logged_in(cast["alice"]).post(start_url("order"), ORDER)
    page = response.content.decode()
    assert response.status_code == 503
    assert "The workflow engine cannot be reached right now; nothing was started." in page
    assert 'value="desk:2, lamp"' in page
    assert "Traceback" not in page


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("kind", "data", "workflow_type", "expected"),
    [
        (
            "order",
            {**ORDER, "order-order_id": "web-1", "order-fail_payment": "on"},
            "OrderSagaWorkflow",
            {"order_id": "web-1", "amount": 1500.0, "customer": "alice", "fail_payment": True,
             "items": [{"sku": "desk", "quantity": 2}, {"sku": "lamp", "quantity": 1}]},
        ),
        (
            "budget",
            {"budget-team": "design", "budget-balance": "5000", "budget-limit": "500"},
            "TeamBudgetWorkflow",
            {"team": "design", "balance": 5000.0, "limit": 500.0},
        ),
        (
            "campaign",
            {**CAMPAIGN, "campaign-campaign_id": "web-2", "campaign-policy": "quick-demo",
             "campaign-fan_out_limit": "10", "campaign-payload": '{"doc": "v2"}'},
            "ApprovalCampaignWorkflow",
            {"campaign_id": "web-2", "title": "Sign the policy", "approvers": ["bob", "carol"], "policy": "quick-demo",
             "fan_out_limit": 10, "payload": {"doc": "v2"}, "requested_by": "alice"},
        ),
        (
            "deployment",
            {"deployment-deployment_id": "web-3", "deployment-service": "api", "deployment-version": "1.4.2",
             "deployment-flaky_failures": "0", "deployment-fail_with": "InvalidArtifact",
             "deployment-rollout_seconds": "1.5", "deployment-policy": "standard"},
            "DeploymentPipelineWorkflow",
            {"deployment_id": "web-3", "service": "api", "version": "1.4.2", "fail_with": "InvalidArtifact",
             "rollout_seconds": 1.5, "policy": "standard", "requested_by": "alice"},
        ),
    ],
)  # fmt: skip
def test_each_kind_starts_by_type_name_with_the_input_typed_in(
    cast: dict[str, Any],
    temporal_settings: Any,
    dev_server: DevServer,
    kind: str,
    data: dict[str, str],
    workflow_type: str,
    expected: dict[str, Any],
) -> None:
    data = {
        name: value.replace("web-", f"web-{temporal_settings.TEMPORAL_TASK_QUEUE[-8:]}-")
        for name, value in data.items()
    }
    client = logged_in(cast["alice"])
    response = client.post(start_url(kind), data)
    assert response.status_code == 302 and response["Location"] == START
    page = client.get(START).content.decode()
    workflow_id = re.search(r"Started <strong>" + workflow_type + r"</strong> <code>([^<]+)</code>", page)
    assert workflow_id, page
    key = next(field for field in expected if field.endswith("_id") or field == "team")
    assert workflow_id[1] == f"{kind}-{data[f'{kind}-{key}']}"
    # flaky_failures 0 is sent: zero is a value, not a blank.
    sent = {**expected, **({"flaky_failures": 0} if kind == "deployment" else {})}
    sent[key] = data[f"{kind}-{key}"]
    assert started_event(dev_server.address, workflow_id[1]) == (
        workflow_type,
        temporal_settings.TEMPORAL_TASK_QUEUE,
        sent,
    )
    assert "Open in Temporal UI" in page  # alice is no operator: no monitoring link
    assert "Follow it in monitoring" not in page
    # The same id twice is refused on the id's field, not restarted.
    again = client.post(start_url(kind), data)
    assert again.status_code == 422 and "already exists" in again.content.decode()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_campaign_from_the_web_reaches_the_approvers_inboxes_and_links_back(
    cast: dict[str, Any], worker: WorkerThread
) -> None:
    oscar = logged_in(cast["oscar"])
    response = oscar.post(start_url("campaign"), {**CAMPAIGN, "campaign-title": "Read the runbook"})
    assert response.status_code == 302
    page = oscar.get(START).content.decode()
    assert "Follow it in monitoring" in page  # an operator gets the monitoring link
    bob = logged_in(cast["bob"])
    eventually(lambda: "Read the runbook" in bob.get(reverse("approvals:inbox")).content.decode())
    task = eventually(
        lambda: ApprovalTask.objects.filter(title="Read the runbook", workflow_id__endswith="-bob").first()
    )
    detail = bob.get(reverse("approvals:detail", args=[task.pk])).content.decode()
    assert f"Part of <strong>ApprovalCampaignWorkflow</strong> <code>{task.parent_workflow_id}</code>" in detail
    assert task.requested_by == "oscar"
    eventually(lambda: ApprovalTask.objects.filter(title="Read the runbook", status="pending").count() == 2)
