"""The explorer's ready filters for approvals ("Overdue approvals", "Pending for <user or group>"),
on a real dev server of the test's own: first without Tollgate's search attributes (the filters say
how to create them), then with them and approvals upserting them, listing exactly the right runs."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from temporalio.client import Client as TemporalClient

from approvals.models import Policy, PolicyLevel
from workflows.worker import build_worker, ensure_search_attributes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
QUICK_SECONDS = 6


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"still {value!r} after {timeout}s")


class AttributeWorker:
    """The app's real worker, built with ``search_attributes=True``, on a thread of its own."""

    def __init__(self, address: str, queue: str) -> None:
        self.address, self.queue = address, queue
        self.ready, self.stop_event = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        client = await TemporalClient.connect(self.address)
        with ThreadPoolExecutor(max_workers=4) as executor:
            async with build_worker(client, executor, task_queue=self.queue, search_attributes=True):
                self.ready.set()
                while not self.stop_event.is_set():
                    await asyncio.sleep(0.05)

    def __enter__(self) -> AttributeWorker:
        self.thread.start()
        assert self.ready.wait(30), "the worker did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)


def temporal(address: str, make: Callable[[TemporalClient], Any]) -> Any:
    async def go() -> Any:
        return await make(await TemporalClient.connect(address))

    return asyncio.run(go())


def start(address: str, queue: str, request: dict[str, Any]) -> str:
    async def go(client: TemporalClient) -> str:
        handle = await client.start_workflow(
            "ApprovalWorkflow", request, id=f"approval-{request['request_id']}", task_queue=queue
        )
        return handle.id

    return temporal(address, go)


def counted(address: str, query: str) -> int:
    async def go(client: TemporalClient) -> int:
        return (await client.count_workflows(query)).count

    return temporal(address, go)


def listed(oscar: Client, params: dict[str, str]) -> set[str]:
    response = oscar.get(reverse("monitoring:executions"), {**params, "format": "json"})
    assert response.status_code == 200, response.content
    return {row["workflow_id"] for row in response.json()["executions"]}


def test_ready_filters_say_how_to_create_the_attributes_then_list_exactly_the_right_approvals(
    cast: dict[str, Any], own_server: Any, own_settings: Any
) -> None:
    oscar = Client()
    oscar.force_login(cast["operator"])
    cache.clear()

    # A fresh namespace lacks them: the filters say how to create them, the explorer refuses no less clearly.
    ready = oscar.get(reverse("monitoring:ready_filters"))
    words = unescape(ready.content.decode())
    assert ready.status_code == 200 and 'id="ready-missing"' in words
    assert "lacks ApprovalStatus, ApprovalRequestId, ApprovalRequestedBy" in words
    assert "temporal operator search-attribute create --namespace default --name ApprovalStatus --type Keyword" in words
    refused = oscar.get(reverse("monitoring:executions"), {"pending_for": "bob"})
    assert refused.status_code == 400
    assert "create them: <code>temporal operator search-attribute create" in unescape(refused.content.decode())

    assert temporal(own_server.address, ensure_search_attributes)
    cache.clear()  # the namespace's attributes are cached a minute
    assert 'id="ready-links"' in oscar.get(reverse("monitoring:ready_filters")).content.decode()

    quick = Policy.objects.create(slug="quick-ready", name="Quick", final_action=Policy.FinalAction.EXPIRE)
    level = PolicyLevel.objects.create(policy=quick, order=1, timeout=timedelta(seconds=QUICK_SECONDS))
    level.groups.set(Group.objects.filter(name="approvers"))
    queue, tag = own_settings.TEMPORAL_TASK_QUEUE, uuid.uuid4().hex[:6]
    address = own_server.address

    def request(name: str, **extra: Any) -> dict[str, Any]:
        return {"request_id": f"{tag}-{name}", "title": name, "requested_by": "alice", **extra}

    with AttributeWorker(address, queue):
        for_bobs_group = start(address, queue, request("group", policy="standard"))
        for_carol = start(address, queue, request("carol", policy="standard", approvers={"users": ["carol"]}))
        decided = start(address, queue, request("decided", policy="standard"))
        wait_for(lambda: counted(address, "ApprovalStatus = 'pending'") == 3)

        async def approve(client: TemporalClient) -> None:
            handle = client.get_workflow_handle(decided)
            await handle.signal(
                "decide", {"decision": "approve", "user": "bob", "comment": "ok", "decision_id": uuid.uuid4().hex}
            )
            await handle.result()

        temporal(address, approve)
        wait_for(lambda: counted(address, "ApprovalStatus = 'approved'") == 1)
        # Overdue: due in a few seconds, and its worker stops before then (the case the filter is for).
        overdue = start(address, queue, request("overdue", policy=quick.slug))
        started = time.monotonic()
        wait_for(lambda: counted(address, "ApprovalStatus = 'pending'") == 3, timeout=QUICK_SECONDS)
    assert time.monotonic() - started < QUICK_SECONDS, "the worker stopped too late to leave an overdue approval"
    time.sleep(max(QUICK_SECONDS + 1 - (time.monotonic() - started), 0))

    links = oscar.get(reverse("monitoring:ready_filters")).content.decode()
    found = re.search(r'id="ready-overdue" href="([^"]+)"', links)
    assert found, links
    href = unescape(found.group(1))
    query = parse_qs(urlsplit(href).query)["q"][0]
    assert re.fullmatch(r"ApprovalStatus = 'pending' AND ApprovalDueAt < '\d{4}-\d\d-\d\dT[\d:.]+Z'", query)
    overdue_page = oscar.get(href)
    assert overdue_page.status_code == 200 and overdue in overdue_page.content.decode()
    assert listed(oscar, {"q": query}) == {overdue}

    # bob: himself and his group, approvers; carol: herself and managers; a group by its name.
    assert listed(oscar, {"pending_for": "bob"}) == {for_bobs_group, overdue}
    assert listed(oscar, {"pending_for": "carol"}) == {for_carol}
    assert listed(oscar, {"pending_for": "approvers"}) == {for_bobs_group, overdue}
    assert listed(oscar, {"pending_for": "dave"}) == set()
    page = oscar.get(reverse("monitoring:executions"), {"pending_for": "bob"}).content.decode()
    assert "ApprovalAssignees IN (&quot;bob&quot;, &quot;approvers&quot;)" in page  # the query box shows it

    nul = oscar.get(reverse("monitoring:executions"), {"pending_for": "bob\x00"})
    assert nul.status_code == 400 and "Pending for: a NUL character" in nul.content.decode()
    unknown = oscar.get(reverse("monitoring:executions"), {"pending_for": "ghost"})
    assert unknown.status_code == 400
    assert "Pending for: no user or group is named &#x27;ghost&#x27;." in unknown.content.decode()
