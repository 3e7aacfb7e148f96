"""The execution page an operator debugs from: grouped activities and timers, events that open to
their decoded attributes, a timeline, pending work with attempts and next retries, the workflow
task's last failure, the outcome in words, and queries run from the page. Real dev server."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.urls import reverse

from tests.support.temporal import SampleWorker, describe, eventually, start_run, workflow_result
from tests.support.web import logged_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def section(html: str, element_id: str) -> str:
    """The inside of the element with this id, up to the end of its section."""
    return html.split(f'id="{element_id}"', 1)[1].split(">", 1)[1].split("</section>", 1)[0]


# ---- the page ------------------------------------------------------------------------------------


def test_a_finished_run_groups_its_activity_and_timer_opens_its_events_and_says_its_outcome(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with SampleWorker(own_server.address, queue):
        workflow_id, run_id = start_run(
            own_server.address, queue, "MonOutcomeWorkflow", {"outcome": "rejected", "fail_times": 2, "who": "<i>x</i>"}
        )
        assert workflow_result(own_server.address, workflow_id, timeout=30)["outcome"] == "rejected"
    oscar = logged_in(cast["oscar"])
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
    with SampleWorker(own_server.address, queue):
        workflow_id, run_id = start_run(own_server.address, queue, "MonRetryWorkflow", "ledger <locked>")
        eventually(
            lambda: any(
                p.attempt >= 2 for p in describe(own_server.address, workflow_id).raw_description.pending_activities
            ),
            timeout=30,
        )
        oscar = logged_in(cast["oscar"])
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
    with SampleWorker(own_server.address, queue):
        workflow_id, run_id = start_run(own_server.address, queue, "MonBrokenWorkflow")
        eventually(
            lambda: describe(own_server.address, workflow_id).raw_description.pending_workflow_task.attempt >= 2,
            timeout=30,
        )
        html = (
            logged_in(cast["oscar"]).get(reverse("monitoring:execution", args=[workflow_id, run_id])).content.decode()
        )
    box = section(html, "workflow-task")
    assert "Workflow task failing" in box and "RuntimeError: a bug in the workflow code" in box


def test_a_long_history_is_cut_at_the_cap_and_says_so(
    own_settings: Any, own_server: Any, cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("monitoring.visibility.HISTORY_PAGE", 2)
    monkeypatch.setattr("monitoring.visibility.HISTORY_CAP", 5)
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with SampleWorker(own_server.address, queue):
        workflow_id, run_id = start_run(own_server.address, queue, "MonFlakyWorkflow", [0, 0, 0])
        workflow_result(own_server.address, workflow_id, timeout=30)
    data = logged_in(cast["oscar"]).get(reverse("monitoring:execution", args=[workflow_id, run_id]), {"format": "json"})
    body = data.json()
    assert [e["id"] for e in body["events"]] == [1, 2, 3, 4, 5] and body["events_truncated"] is True
    page = logged_in(cast["oscar"]).get(reverse("monitoring:execution", args=[workflow_id, run_id])).content.decode()
    assert "Only the first 5 events are shown" in page


# ---- queries -------------------------------------------------------------------------------------


def test_an_operator_lists_and_runs_a_query_and_sees_the_answer_escaped(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with SampleWorker(own_server.address, queue):
        workflow_id, run_id = start_run(own_server.address, queue, "MonInboxWorkflow")
        oscar = logged_in(cast["oscar"])
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
    workflow_id, run_id = start_run(own_server.address, f"nobody-{uuid.uuid4().hex[:6]}", "MonInboxWorkflow")
    url = reverse("monitoring:query", args=[workflow_id, run_id])
    response = logged_in(cast["oscar"]).post(url, {"query": "progress"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "no answer within 5 s" in response.content.decode()
    listed = logged_in(cast["oscar"]).get(
        reverse("monitoring:queries", args=[workflow_id, run_id]), {"type": "ApprovalWorkflow"}
    ).content.decode()  # fmt: skip
    assert 'id="queries-known"' in listed and 'value="status"' in listed  # Tollgate's list for the type
    assert logged_in(cast["oscar"]).post(url, {"query": ""}).status_code == 400
    assert logged_in(cast["dave"]).post(url, {"query": "progress"}).status_code == 403
    assert logged_in(cast["oscar"]).get(url).status_code == 405
    assert logged_in(cast["oscar"], enforce_csrf_checks=True).post(url, {"query": "progress"}).status_code == 403
