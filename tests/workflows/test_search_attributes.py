"""Approvals are findable by their search attributes from the SDK and the ``temporal`` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle

from approvals.models import Policy
from tests.support.temporal import decision
from workflows.types import SEARCH_ATTRIBUTES
from workflows.worker import build_worker, create_search_attributes_command, ensure_search_attributes

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


async def listed(client: Client, query: str, want: int, timeout: float = 15.0) -> list[str]:
    """Workflow ids the visibility query lists, once it lists ``want`` of them (visibility lags)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ids = [execution.id async for execution in client.list_workflows(query)]
        if len(ids) == want or asyncio.get_running_loop().time() > deadline:
            return ids
        await asyncio.sleep(0.2)


def cli_list(address: str, query: str) -> list[dict[str, Any]]:
    # The CLI reads TEMPORAL_* from the environment too: give it only what this test means.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    out = subprocess.run(
        [str(TEMPORAL_CLI), "workflow", "list", "--address", address, "--query", query, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    ).stdout
    return json.loads(out) if out.strip() else []


@asynccontextmanager
async def an_approval(
    address: str, policy: Policy, *, search_attributes: bool
) -> AsyncIterator[tuple[Client, WorkflowHandle[Any, Any]]]:
    """alice's approval under ``policy``, on a task queue of its own, with a worker while the block runs."""
    client = await Client.connect(address)
    queue = f"approvals-{uuid.uuid4().hex[:8]}"
    request_id = uuid.uuid4().hex[:10]
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with build_worker(client, executor, task_queue=queue, search_attributes=search_attributes):
            handle = await client.start_workflow(
                "ApprovalWorkflow",
                {"request_id": request_id, "title": "Laptop", "requested_by": "alice", "policy": policy.slug},
                id=f"approval-{request_id}",
                task_queue=queue,
            )
            yield client, handle


async def test_the_worker_creates_missing_search_attributes_and_says_how(dev_server: Any) -> None:
    client = await Client.connect(dev_server.address)
    assert await ensure_search_attributes(client)
    listed_now = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    assert set(SEARCH_ATTRIBUTES) <= set(listed_now.custom_attributes)
    assert await ensure_search_attributes(client)  # already there: nothing to do
    command = create_search_attributes_command("prod")
    assert command.startswith("temporal operator search-attribute create --namespace prod --name ApprovalStatus")
    assert "--name ApprovalAssignees --type KeywordList" in command


async def test_an_approval_is_found_by_status_requester_level_deadline_and_assignee(
    dev_server: Any, settings: Any, two_levels: Policy
) -> None:
    settings.TEMPORAL_ADDRESS = dev_server.address
    async with an_approval(dev_server.address, two_levels, search_attributes=True) as (client, handle):
        ours = f"ApprovalRequestId = '{handle.id.removeprefix('approval-')}'"
        pending = f"{ours} AND ApprovalStatus = 'pending'"
        assert await listed(client, pending, 1) == [handle.id]
        in_two_days = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        overdue_soon = f"{pending} AND ApprovalDueAt < '{in_two_days}' AND ApprovalLevel = 1"
        assert await listed(client, overdue_soon, 1) == [handle.id]
        for_approvers = f"{pending} AND ApprovalAssignees = 'approvers' AND ApprovalRequestedBy = 'alice'"
        assert await listed(client, for_approvers, 1) == [handle.id]
        assert await listed(client, f"{ours} AND ApprovalPolicy = '{two_levels.slug}'", 1) == [handle.id]
        assert await listed(client, f"{ours} AND ApprovalAssignees = 'managers'", 0) == []
        rows = await asyncio.to_thread(cli_list, dev_server.address, pending)
        assert [row["execution"]["workflowId"] for row in rows] == [handle.id]

        await handle.signal("decide", decision("bob", "approve", "ok"))
        assert (await handle.result())["outcome"] == "approved"
        assert await listed(client, f"{ours} AND ApprovalStatus = 'approved'", 1) == [handle.id]
        assert await listed(client, pending, 0) == []


async def test_without_the_attributes_an_approval_runs_and_upserts_nothing(
    dev_server: Any, settings: Any, two_levels: Policy
) -> None:
    settings.TEMPORAL_ADDRESS = dev_server.address
    async with an_approval(dev_server.address, two_levels, search_attributes=False) as (_, handle):
        await handle.signal("decide", decision("bob", "reject", "no"))
        assert (await handle.result())["outcome"] == "rejected"
        history = await handle.fetch_history()
        upserted = {
            name
            for e in history.events
            if e.HasField("upsert_workflow_search_attributes_event_attributes")
            for name in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        }
        assert upserted == {"TemporalChangeVersion"}  # the SDK's own, for workflow.patched()
