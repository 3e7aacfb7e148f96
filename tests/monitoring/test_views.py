"""The monitoring pages: who may see them, honest errors, Temporal down, actions audited."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone
from temporalio.client import WorkflowExecutionStatus

from monitoring.models import ActionLog, Execution
from tests.support.data import RUN_ID, pending_task, snapshot_rows
from tests.support.temporal import DevServer, SampleWorker, closed, describe, eventually, run_async, start
from tests.support.web import logged_in


def pages() -> list[str]:
    return [
        reverse("monitoring:overview"),
        reverse("monitoring:executions"),
        reverse("monitoring:execution", args=["some/id", RUN_ID]),
        reverse("monitoring:retries"),
        reverse("monitoring:stuck"),
        reverse("monitoring:pending"),
        reverse("monitoring:trends"),
    ]


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_the_login_page(client: Client) -> None:
    for url in pages():
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url


@pytest.mark.django_db
def test_outsiders_and_approvers_get_403(cast: dict[str, Any]) -> None:
    for name in ("dave", "bob", "alice"):
        for url in pages():
            assert logged_in(cast[name]).get(url).status_code == 403, (name, url)
    url = reverse("monitoring:act", args=["x", RUN_ID])
    assert logged_in(cast["dave"]).post(url, {"action": "cancel", "confirm": "yes"}).status_code == 403
    assert not ActionLog.objects.exists()


@pytest.mark.django_db
def test_a_user_with_the_view_permission_but_no_group_may_look_but_not_act(
    cast: dict[str, Any], temporal_down: Any
) -> None:
    dave = cast["dave"]
    dave.user_permissions.add(Permission.objects.get(codename="view_monitoring"))
    client = logged_in(dave)
    assert client.get(reverse("monitoring:overview")).status_code == 200
    response = client.post(reverse("monitoring:act", args=["x", RUN_ID]), {"action": "cancel", "confirm": "yes"})
    assert response.status_code == 403
    assert not ActionLog.objects.exists()


@pytest.mark.django_db
def test_actions_need_a_csrf_token(cast: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["oscar"])
    response = client.post(reverse("monitoring:act", args=["x", RUN_ID]), {"action": "cancel", "confirm": "yes"})
    assert response.status_code == 403 and not ActionLog.objects.exists()


@pytest.mark.django_db
def test_wrong_methods_are_refused(cast: dict[str, Any]) -> None:
    client = logged_in(cast["oscar"])
    assert client.post(reverse("monitoring:overview")).status_code == 405
    assert client.post(reverse("monitoring:executions")).status_code == 405
    assert client.get(reverse("monitoring:act", args=["x", RUN_ID])).status_code == 405


@pytest.mark.django_db
def test_operators_see_the_link_in_the_header_and_others_do_not(cast: dict[str, Any]) -> None:
    assert 'href="/monitoring/"' in logged_in(cast["oscar"]).get(reverse("approvals:inbox")).content.decode()
    assert 'href="/monitoring/"' not in logged_in(cast["bob"]).get(reverse("approvals:inbox")).content.decode()


@pytest.mark.django_db
def test_with_temporal_down_every_page_renders_the_last_snapshot_and_says_so(
    cast: dict[str, Any], temporal_down: Any
) -> None:
    snapshot_rows()
    client = logged_in(cast["oscar"])
    for url in pages():
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        # The age as people read it; a slow run may see "3m 1s ago" by the last page.
        assert "refreshed <time" in html and re.search(r">3m( \d+s)? ago<", html), url
    overview = client.get(reverse("monitoring:overview")).content.decode()
    assert "Temporal is unreachable" in overview
    assert "PaymentWorkflow" in overview and "card declined &lt;b&gt;" in overview and "100.0%" in overview
    explorer = client.get(reverse("monitoring:executions")).content.decode()
    assert "Temporal is unreachable" in explorer and "pay-2" in explorer
    detail = client.get(reverse("monitoring:execution", args=["pay-1", RUN_ID])).content.decode()
    assert "Temporal is unreachable" in detail and "card declined &lt;b&gt;" in detail
    stuck = client.get(reverse("monitoring:stuck")).content.decode()
    assert "pay-2" in stuck
    data = client.get(reverse("monitoring:overview"), {"format": "json"}).json()
    assert data["status_counts_source"] == "snapshot" and data["temporal_error"].startswith("cannot reach Temporal")
    assert data["status_counts"] == {"failed": 1, "running": 1}
    assert 170 < data["snapshot"]["age_seconds"] < 200


@pytest.mark.django_db
def test_the_overview_refreshes_its_figures_through_htmx(cast: dict[str, Any], temporal_down: Any) -> None:
    snapshot_rows()
    response = logged_in(cast["oscar"]).get(reverse("monitoring:overview"), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<div id="health-region"')
    assert "<html" not in html and "PaymentWorkflow" in html
    page = logged_in(cast["oscar"]).get(reverse("monitoring:overview")).content.decode()
    assert "tollgate:changed[detail.event=='monitoring']" in page and 'hx-select="#health-region"' in page


@pytest.mark.django_db
def test_the_audit_log_is_read_only_in_the_admin(cast: dict[str, Any]) -> None:
    entry = ActionLog.objects.create(username="oscar", action="terminate", workflow_id="pay-9", reason="stuck", ok=True)
    admin = logged_in(cast["admin"])
    listing = admin.get(reverse("admin:monitoring_actionlog_changelist")).content.decode()
    assert "pay-9" in listing and "oscar" in listing
    assert admin.get(reverse("admin:monitoring_actionlog_add")).status_code == 403
    assert admin.post(reverse("admin:monitoring_actionlog_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert ActionLog.objects.filter(pk=entry.pk).exists()


@pytest.mark.django_db
def test_before_any_snapshot_the_overview_says_none_was_taken(cast: dict[str, Any], temporal_down: Any) -> None:
    html = logged_in(cast["oscar"]).get(reverse("monitoring:overview")).content.decode()
    assert "none has been taken yet" in html or "not taken yet" in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_malformed_query_shows_the_servers_message(cast: dict[str, Any], temporal_settings: Any) -> None:
    client = logged_in(cast["oscar"])
    response = client.get(reverse("monitoring:executions"), {"q": "WorkflowType = = 'x' ORDER"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Temporal refused the query" in html and 'id="query-error"' in html
    data = client.get(reverse("monitoring:executions"), {"q": "NoSuchField = 1", "format": "json"})
    assert data.status_code == 400 and "NoSuchField" in data.json()["error"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_the_explorer_pages_with_the_servers_token(
    cast: dict[str, Any], own_server: DevServer, sample_worker: SampleWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [start(own_server.address, sample_worker.task_queue, "MonMixWorkflow", {"mode": "hang"}) for _ in range(3)]
    monkeypatch.setattr("monitoring.views.PAGE_SIZE", 2)
    client = logged_in(cast["oscar"])
    url = reverse("monitoring:executions")
    eventually(lambda: client.get(url, {"format": "json"}).json()["total"] == 3)
    first = client.get(url, {"type": "MonMixWorkflow", "format": "json"}).json()
    assert first["query"] == 'WorkflowType = "MonMixWorkflow"'
    assert len(first["executions"]) == 2 and first["next_page"]
    second = client.get(url, {"type": "MonMixWorkflow", "page": first["next_page"], "format": "json"}).json()
    assert len(second["executions"]) == 1 and not second["next_page"]
    assert {e["workflow_id"] for e in first["executions"] + second["executions"]} == set(ids)
    html = client.get(url, {"type": "MonMixWorkflow"}).content.decode()
    assert "Next 2" in html and "3 executions match" in html

    # Any workflow id links to its page, escaped in the list and intact in the link.
    odd = "odd/id <b>x</b> ü?#"

    async def start_odd() -> str:
        from temporalio.client import Client as TemporalClient

        temporal = await TemporalClient.connect(own_server.address)
        handle = await temporal.start_workflow(
            "MonMixWorkflow", {"mode": "hang"}, id=odd, task_queue=sample_worker.task_queue
        )
        return handle.result_run_id or ""

    run_id = run_async(start_odd)
    html = eventually(lambda: odd.replace("<", "&lt;").replace(">", "&gt;") in (
        body := client.get(url, {"workflow_id": "odd/"}).content.decode()) and body)  # fmt: skip
    [href] = re.findall(r'<a href="(/monitoring/executions/odd[^"]+)"', html)
    match = resolve(unquote(href.replace("&amp;", "&")))
    assert match.kwargs == {"workflow_id": odd, "run_id": run_id}
    assert client.get(href.replace("&amp;", "&")).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_the_explorer_sorts_the_page_by_a_column_either_way(
    cast: dict[str, Any], own_server: DevServer, sample_worker: SampleWorker
) -> None:
    address, queue = own_server.address, sample_worker.task_queue
    quick = start(address, queue, "MonMixWorkflow", {"mode": "ok", "seconds": 0.1})
    slow = start(address, queue, "MonMixWorkflow", {"mode": "ok", "seconds": 1.5})
    running = start(address, queue, "MonMixWorkflow", {"mode": "hang"})
    closed(address, quick), closed(address, slow)
    client = logged_in(cast["oscar"])
    url = reverse("monitoring:executions")

    def order(sort: str) -> list[str]:
        return [e["workflow_id"] for e in client.get(url, {"sort": sort, "format": "json"}).json()["executions"]]

    def statuses() -> dict[str, str]:
        return {e["workflow_id"]: e["status"] for e in client.get(url, {"format": "json"}).json()["executions"]}

    eventually(lambda: statuses() == {quick: "completed", slow: "completed", running: "running"})
    # A running run has no duration: it comes last both ways.
    assert order("duration") == [quick, slow, running]
    assert order("-duration") == [slow, quick, running]
    assert order("id") == sorted([quick, slow, running])
    assert order("-id") == sorted([quick, slow, running], reverse=True)

    html = client.get(url, {"sort": "-duration", "type": "MonMixWorkflow"}).content.decode()
    assert html.index(slow) < html.index(quick) < html.index(running)
    # The sorted column says so and links to the other direction, keeping the filter.
    [href] = re.findall(r'<th aria-sort="descending"><a href="\?([^"]+)"', html)
    assert sorted(href.split("&amp;")) == ["sort=duration", "type=MonMixWorkflow"]
    assert "reorder this page of 3 only" in html
    # An unknown sort key is ignored, not an error.
    assert client.get(url, {"sort": "nonsense"}).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_the_explorers_total_is_cached_a_few_seconds_and_its_rows_are_live(
    cast: dict[str, Any], own_server: DevServer, sample_worker: SampleWorker, own_settings: Any
) -> None:
    from django.core.cache import cache

    address, queue = own_server.address, sample_worker.task_queue
    first = start(address, queue, "MonMixWorkflow", {"mode": "hang"})
    client = logged_in(cast["oscar"])
    url = reverse("monitoring:executions")
    eventually(lambda: client.get(url, {"format": "json"}).json()["total"] == 1)
    own_settings.MONITORING_LIVE_CACHE_SECONDS = 60
    cache.clear()
    assert client.get(url, {"format": "json"}).json()["total"] == 1  # counted, then cached
    second = start(address, queue, "MonMixWorkflow", {"mode": "hang"})

    def listed() -> dict[str, Any]:
        return client.get(url, {"format": "json"}).json()

    def with_second() -> dict[str, Any] | None:
        data = listed()
        return data if second in [e["workflow_id"] for e in data["executions"]] else None

    data = eventually(with_second)
    assert {e["workflow_id"] for e in data["executions"]} == {first, second} and data["total"] == 1
    cache.clear()
    assert listed()["total"] == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_actions_are_confirmed_permission_checked_and_audited(
    cast: dict[str, Any], own_server: DevServer, sample_worker: SampleWorker
) -> None:
    address, queue = own_server.address, sample_worker.task_queue
    workflow_id = start(address, queue, "MonMixWorkflow", {"mode": "hang", "blob": "<script>x</script>" * 40})
    run_id = describe(address, workflow_id).run_id
    detail_url = reverse("monitoring:execution", args=[workflow_id, run_id])
    act_url = reverse("monitoring:act", args=[workflow_id, run_id])
    oscar = logged_in(cast["oscar"])

    page = oscar.get(detail_url).content.decode()
    assert 'id="actions"' in page and "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert "<details>" in page  # the long input is folded

    # Terminate without a reason: refused, nothing sent, nothing logged.
    response = oscar.post(act_url, {"action": "terminate", "confirm": "yes"}, follow=True)
    assert "Terminating needs a reason" in response.content.decode()
    assert describe(address, workflow_id).status == WorkflowExecutionStatus.RUNNING

    # First a confirmation page, then the action.
    confirm = oscar.post(act_url, {"action": "signal", "signal": "poke", "input": '{"n": 1}'})
    assert confirm.status_code == 200 and "Yes, signal" in confirm.content.decode()
    assert not ActionLog.objects.exists()
    oscar.post(act_url, {"action": "signal", "signal": "poke", "input": '{"n": 1}', "confirm": "yes"})
    oscar.post(act_url, {"action": "terminate", "reason": "stuck since Monday", "confirm": "yes"})
    eventually(lambda: closed(address, workflow_id))
    assert describe(address, workflow_id).status == WorkflowExecutionStatus.TERMINATED

    log = list(ActionLog.objects.order_by("created_at").values_list("username", "action", "reason", "ok", "detail"))
    assert log == [
        ("oscar", "signal", "", True, {"signal": "poke", "input": {"n": 1}}),
        ("oscar", "terminate", "stuck since Monday", True, {}),
    ]
    page = oscar.get(detail_url).content.decode()
    assert "stuck since Monday" in page and 'value="cancel"' not in page  # closed: only a reset is left

    # Signalling a closed run: Temporal refuses, the page says why, and that is audited too.
    response = oscar.post(act_url, {"action": "signal", "signal": "poke", "confirm": "yes"}, follow=True)
    assert "Temporal refused" in response.content.decode()
    assert ActionLog.objects.filter(action="signal", ok=False, username="oscar").exists()

    # Reset (reason required) starts a new run from the first workflow task, and the page follows it.
    response = oscar.post(act_url, {"action": "reset", "confirm": "yes"}, follow=True)
    assert "Resetting needs a reason" in response.content.decode()
    response = oscar.post(act_url, {"action": "reset", "reason": "fixed the bug", "confirm": "yes"})
    entry = ActionLog.objects.get(action="reset")
    new_run = entry.detail["new_run_id"]
    assert (entry.username, entry.reason, entry.ok) == ("oscar", "fixed the bug", True) and new_run != run_id
    assert response["Location"] == reverse("monitoring:execution", args=[workflow_id, new_run])
    assert describe(address, workflow_id).run_id == new_run
    assert describe(address, workflow_id).status == WorkflowExecutionStatus.RUNNING


@pytest.mark.django_db
def test_metrics_need_the_token_or_an_allowed_address(client: Client, settings: Any) -> None:
    snapshot_rows()
    settings.MONITORING_METRICS_TOKEN = "s3cret"
    settings.MONITORING_METRICS_ALLOWED_IPS = []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert 'tollgate_workflows_running{workflow_type="PaymentWorkflow"} 1' in text
    assert 'tollgate_workflows_closed_last_hour{workflow_type="PaymentWorkflow",status="failed"} 1' in text
    assert 'tollgate_workflow_failure_rate_last_hour{workflow_type="PaymentWorkflow"} 1' in text
    assert "# TYPE tollgate_monitoring_snapshot_age_seconds gauge" in text
    settings.MONITORING_METRICS_TOKEN = ""
    settings.MONITORING_METRICS_ALLOWED_IPS = ["127.0.0.1"]
    assert client.get("/metrics").status_code == 200  # the test client comes from 127.0.0.1


@pytest.mark.django_db
def test_trends_draw_throughput_failure_rate_and_durations_from_the_snapshot(
    cast: dict[str, Any], temporal_down: Any
) -> None:
    snapshot_rows()
    now = timezone.now()
    for minutes, seconds in ((50, 0.5), (20, 30), (10, 30)):
        Execution.objects.create(
            workflow_id=f"ok-{minutes}", run_id="r", workflow_type="PaymentWorkflow", status="completed",
            start_time=now - timedelta(minutes=minutes, seconds=seconds), close_time=now - timedelta(minutes=minutes),
            duration=seconds,
        )  # fmt: skip
    client = logged_in(cast["oscar"])
    data = client.get(reverse("monitoring:trends"), {"window": "1h", "format": "json"}).json()
    assert sum(p["closed"] for p in data["series"]) == 4 and sum(p["failed"] for p in data["series"]) == 1
    assert data["durations"]["PaymentWorkflow"]["< 1s"] == 1 and data["durations"]["PaymentWorkflow"]["10s-1m"] == 2
    html = client.get(reverse("monitoring:trends"), {"window": "1h"}).content.decode()
    assert html.count('class="bar"><title>') == 24 and "<polyline" in html


@pytest.mark.django_db
def test_pending_shows_running_by_age_and_approval_figures(cast: dict[str, Any], temporal_down: Any) -> None:
    snapshot_rows()
    late = pending_task("Late one", requester=cast["alice"])
    late.due_at = timezone.now() - timedelta(hours=1)
    late.save(update_fields=["due_at"])
    pending_task("On time", requester=cast["alice"])
    data = logged_in(cast["oscar"]).get(reverse("monitoring:pending"), {"format": "json"}).json()
    assert data["running"][0]["workflow_type"] == "PaymentWorkflow" and data["running"][0]["ages"] == [0, 1, 0, 0]
    assert data["approvals"]["per_group"] == [{"group": "approvers", "pending": 2, "overdue": 1}]
    assert data["approvals"]["per_policy"] == [{"policy": "(none)", "pending": 2, "overdue": 1}]
    assert data["queues"] == [] and data["temporal_error"]
