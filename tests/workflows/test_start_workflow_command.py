"""``manage.py start_workflow``: what it sends to the dev server, what it prints, how it refuses."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from approvals.models import ApprovalTask
from config.ports import free_port
from tests.support.temporal import DevServer, WorkerThread, eventually, run_async, started_event, workflow_result

pytestmark = pytest.mark.django_db


def start(*args: str) -> str:
    out = io.StringIO()
    call_command("start_workflow", *args, stdout=out)
    return out.getvalue()


def test_bad_input_names_the_field(settings: Any) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # never reached
    with pytest.raises(CommandError, match="invalid input: items: must be an array of 1 to 100 items"):
        start("order", "--amount", "10")
    with pytest.raises(CommandError, match="invalid input: fan_out_limit: must be a whole number from 2 to 1000"):
        start("campaign", "--title", "t", "--approver", "bob", "--fan-out-limit", "1")
    with pytest.raises(CommandError, match="--input: is not valid JSON"):
        start("budget", "--input", "{team")


def test_with_temporal_down_it_says_so(settings: Any) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match="cannot reach Temporal"):
        start("budget", "--team", "design", "--balance", "10", "--limit", "5")


@pytest.mark.integration
def test_options_build_the_input_and_it_prints_the_id_and_the_ui_link(
    temporal_settings: Any, dev_server: DevServer
) -> None:
    order_id = uuid.uuid4().hex[:8]
    output = start(
        "order", "--order-id", order_id, "--amount", "1500", "--item", "desk:2", "--item", "lamp",
        "--requested-by", "alice",
    )  # fmt: skip
    ui = f"http://127.0.0.1:{dev_server.port + 1000}/namespaces/default/workflows/order-{order_id}/"
    assert f"workflow id: order-{order_id}\n" in output
    assert f"Temporal UI: {ui}" in output
    assert started_event(dev_server.address, f"order-{order_id}") == (
        "OrderSagaWorkflow",
        temporal_settings.TEMPORAL_TASK_QUEUE,
        {"order_id": order_id, "amount": 1500.0, "customer": "alice",
         "items": [{"sku": "desk", "quantity": 2}, {"sku": "lamp", "quantity": 1}]},
    )  # fmt: skip
    with pytest.raises(CommandError, match="already exists"):
        start("order", "--order-id", order_id, "--amount", "1500", "--item", "desk")


@pytest.mark.integration
def test_input_json_with_options_on_top_starts_a_deployment_by_type_name(
    temporal_settings: Any, dev_server: DevServer
) -> None:
    deployment_id = uuid.uuid4().hex[:8]
    given = {"deployment_id": deployment_id, "service": "api", "version": "1.0", "flaky_failures": 3}
    output = start("deployment", "--input", json.dumps(given), "--version", "1.1", "--flaky-failures", "0")
    assert f"workflow id: deployment-{deployment_id}" in output
    assert started_event(dev_server.address, f"deployment-{deployment_id}") == (
        "DeploymentPipelineWorkflow",
        temporal_settings.TEMPORAL_TASK_QUEUE,
        {**given, "version": "1.1", "flaky_failures": 0, "requested_by": "cli"},
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_campaign_started_from_the_cli_runs_on_the_worker(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    campaign_id = uuid.uuid4().hex[:8]
    start("campaign", "--campaign-id", campaign_id, "--title", "Fire drill", "--approver", "bob,carol")

    async def cancel() -> None:
        from temporalio.client import Client

        client = await Client.connect(dev_server.address)
        await client.get_workflow_handle(f"campaign-{campaign_id}").cancel()

    eventually(lambda: ApprovalTask.objects.filter(request_id__startswith=f"campaign-{campaign_id}-").count() == 2)
    run_async(cancel)
    result = workflow_result(dev_server.address, f"campaign-{campaign_id}", timeout=30)
    assert (result["status"], result["counts"]["cancelled"], result["total"]) == ("cancelled", 2, 2)
