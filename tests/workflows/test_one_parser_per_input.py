"""The start page, ``manage.py start_workflow`` and the workflow itself refuse the same inputs with
the same message: each reference workflow's own parser is the only one."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from config.ports import free_port
from tests.support.web import logged_in
from workflows.parsing import InputError
from workflows.reference.pipeline import DeploymentInput
from workflows.reference.saga import OrderInput

pytestmark = pytest.mark.django_db
LONG_ID = "d" * 150
HUGE = "99999999999999999999999"

CASES = [
    # (what the workflow gets, its parser, the page's fields, the command's options)
    (
        {"deployment_id": LONG_ID, "service": "checkout", "version": "1.4.2"},
        DeploymentInput.parse,
        ("deployment", {"deployment-deployment_id": LONG_ID, "deployment-service": "checkout",
                        "deployment-version": "1.4.2"}),
        ["deployment", "--deployment-id", LONG_ID, "--service", "checkout", "--version", "1.4.2"],
    ),
    (
        {"deployment_id": "d1", "service": "checkout", "version": "1.4.2", "rollout_seconds": 100_000},
        DeploymentInput.parse,
        ("deployment", {"deployment-deployment_id": "d1", "deployment-service": "checkout",
                        "deployment-version": "1.4.2", "deployment-rollout_seconds": "100000"}),
        ["deployment", "--deployment-id", "d1", "--service", "checkout", "--version", "1.4.2",
         "--rollout-seconds", "100000"],
    ),
    (
        {"order_id": "o1", "amount": 1500, "customer": "alice", "items": [{"sku": "desk", "quantity": int(HUGE)}]},
        OrderInput.parse,
        ("order", {"order-order_id": "o1", "order-amount": "1500", "order-items": "desk:2",
                   "order-approval_threshold": "-1"}),
        ["order", "--order-id", "o1", "--amount", "1500", "--item", "desk", "--approval-threshold", "-1"],
    ),
]  # fmt: skip


def refusal(parse: Callable[[Any], object], raw: dict[str, Any]) -> str:
    with pytest.raises(InputError) as refused:
        parse(raw)
    return str(refused.value)


@pytest.mark.parametrize(("raw", "parse", "page", "command"), CASES, ids=["long-id", "long-rollout", "quantity"])
def test_the_page_the_command_and_the_workflow_refuse_alike(
    cast: dict[str, Any], settings: Any, raw: dict[str, Any], parse: Any, page: Any, command: list[str]
) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # nothing may be started, whoever refuses
    kind, fields = page
    page_raw = {name.split("-", 1)[1]: value for name, value in fields.items()}
    if kind == "order":  # the page and the command type what the workflow gets in another shape
        raw = {**raw, "items": [{"sku": "desk", "quantity": 2}], "approval_threshold": -1}
    else:
        raw = {**raw, **{k: v for k, v in page_raw.items() if k not in raw}}
    message = refusal(parse, raw)
    response = logged_in(cast["alice"]).post(reverse("reference:start_kind", args=[kind]), fields)
    assert response.status_code == 422
    assert message in html.unescape(response.content.decode())
    with pytest.raises(CommandError) as refused:
        call_command("start_workflow", *command, "--requested-by", "alice")
    assert str(refused.value) == f"invalid input: {message}"


def test_a_quantity_beyond_the_ledger_is_refused_by_the_parser_and_the_item_text() -> None:
    order = {"order_id": "o1", "amount": 1500, "customer": "alice"}
    huge = {**order, "items": [{"sku": "desk", "quantity": int(HUGE)}]}
    assert refusal(OrderInput.parse, huge).startswith("items[0].quantity: must be between")
    too_many = {**order, "items": [{"sku": "desk", "quantity": 2_000_000}]}
    assert refusal(OrderInput.parse, too_many) == "items[0].quantity: must be a whole number from 1 to 1000000"
    with pytest.raises(CommandError, match="the quantity after the colon must be a whole number up to 1000000"):
        call_command("start_workflow", "order", "--amount", "10", "--item", f"desk:{HUGE}")
