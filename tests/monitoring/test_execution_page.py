"""The execution page an operator debugs from: grouped activities and timers, events that open to
their decoded attributes, a timeline, pending work with attempts and next retries, the workflow
task's last failure, the outcome in words, and queries run from the page. Real dev server."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from temporalio.client import Client as TemporalClient

from tests.support.sample_workflows import SAMPLE_ACTIVITIES, SAMPLE_WORKFLOWS
from tests.support.waiting_workflows import WAITING_ACTIVITIES, WAITING_WORKFLOWS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


# ---- local helpers -----------------------------------------------------------------------------


def _in_thread(make: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextmanager
def worker_for(address: str, queue: str) -> Iterator[None]:
    """The sample and waiting workflows on a worker thread of their own."""
    from temporalio.worker import Worker

    ready, box, errors = threading.Event(), dict[str, Any](), list[BaseException]()

    async def main() -> None:
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        try:
            client = await TemporalClient.connect(address)
            with ThreadPoolExecutor(max_workers=4) as executor:
                async with Worker(
                    client, task_queue=queue, workflows=[*SAMPLE_WORKFLOWS, *WAITING_WORKFLOWS],
                    activities=[*SAMPLE_ACTIVITIES, *WAITING_ACTIVITIES], activity_executor=executor,
                ):  # fmt: skip
                    ready.set()
                    await box["stop"].wait()
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30) and not errors, errors
    try:
        yield
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


def start(address: str, queue: str, workflow: str, *args: Any) -> tuple[str, str]:
    workflow_id = f"{workflow.lower()}-{uuid.uuid4().hex[:8]}"

    async def go() -> str:
        client = await TemporalClient.connect(address)
        handle = await client.start_workflow(workflow, *args, id=workflow_id, task_queue=queue)
        return handle.result_run_id or ""

    return workflow_id, _in_thread(go)


def result(address: str, workflow_id: str) -> Any:
    async def go() -> Any:
        client = await TemporalClient.connect(address)
        return await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), 30)

    return _in_thread(go)


def raw_description(address: str, workflow_id: str) -> Any:
    async def go() -> Any:
        client = await TemporalClient.connect(address)
        return (await client.get_workflow_handle(workflow_id).describe()).raw_description

    return _in_thread(go)


def until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not met within {timeout}s")


def login(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def section(html: str, element_id: str) -> str:
    """The inside of the element with this id, up to the end of its section."""
    return html.split(f'id="{element_id}"', 1)[1].split(">", 1)[1].split("</section>", 1)[0]


# ---- the page ------------------------------------------------------------------------------------


def test_a_finished_run_groups_its_activity_and_timer_opens_its_events_and_says_its_outcome(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with worker_for(own_server.address, queue):
        workflow_id, run_id = start(
            own_server.address, queue, "MonOutcomeWorkflow", {"outcome": "rejected", "fail_times": 2, "who": "<i>x</i>"}
        )
        assert result(own_server.address, workflow_id)["outcome"] == "rejected"
    oscar = login(cast["oscar"])
    url = reverse("monitoring:execution", args=[workflow_id, run_id])
    data = oscar.get(url, {"format": "json"}).json()
    assert data["outcome"] == "rejected"
    html = oscar.get(url).content.decode()
    meta = section(html, "execution-meta")
    assert re.sub(r"<[^>]+>", "", meta).split("MonOutcomeWorkflow")[0].strip() == "Completed: rejected"

    # One row per activity and per timer, with the attempts the activity needed and its last failure.
    activity, timer = (g for g in data["groups"] if g["kind"] in ("activity", "timer"))
    assert (activity["name"], activity["state"], activity["attempt"]) == ("mon_flaky_step", "completed", 3)
    assert activity["failure"] == "RuntimeError: step failed <attempt 2>" and len(activity["event_ids"]) == 3
    assert timer["name"] == "timer 1 (0.5s)" and timer["state"] == "fired"
    compact = section(html, "compact")
    assert "mon_flaky_step" in compact and "step failed &lt;attempt 2&gt;" in compact and "fired" in compact

    # Each event opens to its attributes, payloads decoded and escaped.
    history = section(html, "history")
    assert history.count('<details class="event">') == len(data["events"])
    started = data["events"][0]
    assert started["type"] == "Workflow execution started" and '"who": "<i>x</i>"' in started["attributes"]
    assert "&quot;who&quot;: &quot;&lt;i&gt;x&lt;/i&gt;&quot;" in history and "<i>x</i>" not in html
    completed = data["events"][-1]
    assert '"outcome": "rejected"' in completed["attributes"]

    # The timeline draws the activity and the timer, server-side.
    timeline = section(html, "timeline")
    assert "<svg" in timeline and 'class="bar bar-activity bar-completed"' in timeline
    assert 'class="bar bar-timer bar-fired"' in timeline


def test_a_retrying_activity_shows_its_attempt_last_failure_and_next_retry(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with worker_for(own_server.address, queue):
        workflow_id, run_id = start(own_server.address, queue, "MonRetryWorkflow", "ledger <locked>")
        until(lambda: any(p.attempt >= 2 for p in raw_description(own_server.address, workflow_id).pending_activities))
        oscar = login(cast["oscar"])
        url = reverse("monitoring:execution", args=[workflow_id, run_id])
        [pending] = oscar.get(url, {"format": "json"}).json()["pending_activities"]
        html = oscar.get(url).content.decode()
    assert pending["activity_type"] == "mon_always_fails" and pending["attempt"] >= 2
    assert pending["last_failure"] == "ledger <locked>" and pending["next_attempt_at"]
    table = section(html, "pending-activities")
    assert re.search(r'class="attempt">\d+ <span class="muted small">\(no limit\)', table)
    assert 'class="last-failure">ledger &lt;locked&gt;<' in table
    assert re.search(r'class="next-retry"><time datetime="[^"]+" title="[^"]+">(in \d|\d+ms ago|\d+s ago)', table)


def test_a_failing_workflow_task_shows_its_last_failure(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with worker_for(own_server.address, queue):
        workflow_id, run_id = start(own_server.address, queue, "MonBrokenWorkflow")
        until(lambda: raw_description(own_server.address, workflow_id).pending_workflow_task.attempt >= 2)
        html = login(cast["oscar"]).get(reverse("monitoring:execution", args=[workflow_id, run_id])).content.decode()
    box = section(html, "workflow-task")
    assert "Workflow task failing" in box and "RuntimeError: a bug in the workflow code" in box


def test_a_long_history_is_cut_at_the_cap_and_says_so(
    own_settings: Any, own_server: Any, cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("monitoring.visibility.HISTORY_PAGE", 2)
    monkeypatch.setattr("monitoring.visibility.HISTORY_CAP", 5)
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with worker_for(own_server.address, queue):
        workflow_id, run_id = start(own_server.address, queue, "MonFlakyWorkflow", [0, 0, 0])
        result(own_server.address, workflow_id)
    data = login(cast["oscar"]).get(reverse("monitoring:execution", args=[workflow_id, run_id]), {"format": "json"})
    body = data.json()
    assert [e["id"] for e in body["events"]] == [1, 2, 3, 4, 5] and body["events_truncated"] is True
    page = login(cast["oscar"]).get(reverse("monitoring:execution", args=[workflow_id, run_id])).content.decode()
    assert "Only the first 5 events are shown" in page


# ---- queries -------------------------------------------------------------------------------------


def test_an_operator_lists_and_runs_a_query_and_sees_the_answer_escaped(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with worker_for(own_server.address, queue):
        workflow_id, run_id = start(own_server.address, queue, "MonInboxWorkflow")
        oscar = login(cast["oscar"])
        listed = oscar.get(
            reverse("monitoring:queries", args=[workflow_id, run_id]), {"type": "MonInboxWorkflow"},
            headers={"HX-Request": "true"},
        ).content.decode()  # fmt: skip
        assert 'value="progress"' in listed and 'value="__stack_trace"' in listed and 'id="queries-declared"' in listed
        url = reverse("monitoring:query", args=[workflow_id, run_id])
        answer = oscar.post(url, {"query": "progress"}, headers={"HX-Request": "true"})
        unknown = oscar.post(url, {"query": "no_such_query"}, headers={"HX-Request": "true"})
        plain = oscar.post(url, {"query": "progress"})
    html = answer.content.decode()
    assert answer.status_code == 200 and "<html" not in html
    assert '"note": "&lt;b&gt;not bold&lt;/b&gt;"' in html.replace("&quot;", '"') and "<b>" not in html
    assert '"poked": false' in html.replace("&quot;", '"')
    assert unknown.status_code == 200 and 'id="query-problem"' in unknown.content.decode()
    assert "no_such_query" in unknown.content.decode() and "Traceback" not in unknown.content.decode()
    assert (
        plain.status_code == 200 and "<html" in plain.content.decode() and 'id="query-result"' in plain.content.decode()
    )


def test_a_query_nobody_answers_says_so_and_only_operators_may_ask(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    workflow_id, run_id = start(own_server.address, f"nobody-{uuid.uuid4().hex[:6]}", "MonInboxWorkflow")
    url = reverse("monitoring:query", args=[workflow_id, run_id])
    response = login(cast["oscar"]).post(url, {"query": "progress"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "no answer within 5 s" in response.content.decode()
    listed = login(cast["oscar"]).get(
        reverse("monitoring:queries", args=[workflow_id, run_id]), {"type": "ApprovalWorkflow"}
    ).content.decode()  # fmt: skip
    assert 'id="queries-known"' in listed and 'value="status"' in listed  # Tollgate's list for the type
    assert login(cast["oscar"]).post(url, {"query": ""}).status_code == 400
    assert login(cast["dave"]).post(url, {"query": "progress"}).status_code == 403
    assert login(cast["oscar"]).get(url).status_code == 405
    assert login(cast["oscar"], enforce_csrf_checks=True).post(url, {"query": "progress"}).status_code == 403
