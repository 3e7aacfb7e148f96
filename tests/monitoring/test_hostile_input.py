"""Hostile or malformed query strings: every monitoring page, and its JSON twin, answers with a clear
4xx or its normal page, never a 500 or a traceback. Against the session's real Temporal dev server."""

from __future__ import annotations

import base64
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from django.urls import reverse
from temporalio.client import WorkflowExecutionStatus

from monitoring.views import STUCK_MAX_MINUTES
from tests.support.data import RUN_ID, snapshot_rows
from tests.support.temporal import describe, start

pytestmark = [pytest.mark.django_db, pytest.mark.integration]
as_json = pytest.mark.parametrize("as_json", [False, True], ids=["html", "json"])


@pytest.fixture
def oscar(cast: dict[str, Any], temporal_settings: Any) -> Client:
    """The operator, logged in, with a snapshot to show. A 500 comes back as the site's error page,
    not as an exception, so each test sees the status a browser would."""
    snapshot_rows()
    client = Client(raise_request_exception=False)
    client.force_login(cast["oscar"])
    return client


def qs(**params: str) -> str:
    return urlencode(params)


def fetch(client: Client, path: str, query: str = "", *, as_json: bool) -> Any:
    """GET ``path?query`` as it came over the wire (``%ff`` stays a raw escape), or its JSON twin."""
    return client.get(f"{path}?{query}&format=json" if as_json else f"{path}?{query}")


def answered(response: Any, *, as_json: bool) -> Any:
    """Below 500, and the site's own page or a JSON object: the HTML text or the decoded JSON."""
    assert response.status_code < 500, response.content[:300]
    if as_json:
        assert response["Content-Type"] == "application/json"
        data = response.json()
        assert isinstance(data, dict)
        return data
    html = response.content.decode()
    assert "Traceback" not in html and "Tollgate" in html
    return html


# ---- the executions explorer ---------------------------------------------------------------

GARBAGE = base64.urlsafe_b64encode(b"\xff\xfe\x00\x80garbage\x00\xc3(" * 8).decode()
EXPLORER = [
    # Page tokens: undecodable ones are dropped (first page); decodable garbage reaches the server.
    pytest.param(qs(page="not base64 at all!"), "", id="token-not-base64"),
    pytest.param(qs(page=GARBAGE), "page token was not accepted", id="token-garbage-bytes"),
    pytest.param(qs(page="QUFB" * 25_000), "page token was not accepted", id="token-100k-chars"),
    # Sort keys and statuses outside their lists are ignored.
    pytest.param(qs(sort="nonsense"), "", id="sort-unknown"),
    pytest.param(qs(sort="-"), "", id="sort-dash"),
    pytest.param(qs(sort="--duration"), "", id="sort-double-dash"),
    pytest.param(qs(status="Exploded"), "", id="status-unknown"),
    pytest.param(qs(status='Running" OR 1=1'), "", id="status-injection"),
    # The filter builder quotes what it is given.
    pytest.param(qs(type='x" OR WorkflowId != "'), "", id="type-with-quotes"),
    pytest.param(qs(workflow_id="a\x00b"), "", id="workflow-id-nul"),
    # The raw query goes to the server as typed: it refuses what it cannot parse.
    pytest.param(qs(q='WorkflowType = "x'), "malformed", id="q-unbalanced-quote"),
    pytest.param(qs(q='WorkflowType = "x" OR 1=1; DROP TABLE'), "malformed", id="q-sql-injection"),
    pytest.param(qs(q="WorkflowType = 'x' AND " * 230), "malformed", id="q-5000-chars"),
    pytest.param(qs(q='WorkflowType = "a\x00b"'), "", id="q-nul-in-a-string"),
    pytest.param("q=WorkflowType%20%3D%20%22%ff%fe%22", "", id="q-non-utf8-in-a-string"),
    pytest.param("q=%ff%fe%fd", "malformed", id="q-non-utf8-bare"),
    pytest.param("q=%", "malformed", id="q-broken-escape"),
]


@as_json
@pytest.mark.parametrize("query, refusal", EXPLORER)
def test_the_explorer_shows_a_page_or_says_why_temporal_refused(
    oscar: Client, query: str, refusal: str, as_json: bool
) -> None:
    response = fetch(oscar, reverse("monitoring:executions"), query, as_json=as_json)
    assert response.status_code == (400 if refusal else 200)
    body = answered(response, as_json=as_json)
    if as_json:
        assert refusal in body["error"] and (body["error"] == "") == (not refusal)
    elif refusal:
        assert "Temporal refused the query" in body and 'id="query-error"' in body and refusal in body
    else:
        assert 'id="query-error"' not in body


# ---- windows: the overview and trends ----------------------------------------------------------

WINDOWS = [
    pytest.param(qs(window="forever"), "24h", id="unknown-window"),
    pytest.param(qs(window="custom"), "24h", id="custom-without-dates"),
    pytest.param(qs(window="custom", end="2025-01-01T00:00"), "24h", id="custom-without-start"),
    pytest.param(qs(window="custom", start="2025-01-02T00:00", end="2025-01-01T00:00"), "24h", id="end-before-start"),
    pytest.param(qs(window="custom", start="yesterday", end="today"), "24h", id="unparseable"),
    pytest.param(qs(window="custom", start="2025-02-30T00:00"), "24h", id="no-such-day"),
    pytest.param(qs(window="custom", start="2025-01-01T25:61"), "24h", id="no-such-time"),
    pytest.param("window=custom&start=%ff%00", "24h", id="non-utf8-and-nul"),
    pytest.param(qs(window="custom", start="0001-01-01T00:00:00+05:00"), "24h", id="before-year-1-in-utc"),
    # An end that cannot be read counts as no end: the window runs until now.
    pytest.param(
        qs(window="custom", start="2025-01-01T00:00", end="9999-12-31T23:59-05:00"), "custom", id="after-9999-in-utc"
    ),  # fmt: skip
    pytest.param(qs(window="custom", start="0001-01-01T00:00", end="9999-12-31T23:59"), "custom", id="year-1-to-9999"),
    pytest.param(qs(window="custom", start="9999-01-01T00:00", end="9999-12-31T00:00"), "custom", id="far-future"),
    pytest.param(qs(window="custom", start="1950-01-01T00:00", end="2050-01-01T00:00"), "custom", id="a-century"),
]


@as_json
@pytest.mark.parametrize("page", ["overview", "trends"])
@pytest.mark.parametrize("query, window", WINDOWS)
def test_a_window_that_cannot_be_used_falls_back_to_the_last_24_hours(
    oscar: Client, page: str, query: str, window: str, as_json: bool
) -> None:
    response = fetch(oscar, reverse(f"monitoring:{page}"), query, as_json=as_json)
    assert response.status_code == 200
    body = answered(response, as_json=as_json)
    if as_json:
        assert body["window"]["name"] == window


# ---- the stuck threshold ----------------------------------------------------------------------------

STUCK = [
    pytest.param("-5", 1, id="negative"),
    pytest.param("0", 1, id="zero"),
    pytest.param(str(10**10), STUCK_MAX_MINUTES, id="past-year-1"),
    pytest.param(str(10**30), STUCK_MAX_MINUTES, id="10**30"),
    pytest.param("abc", 30, id="letters"),
    pytest.param("1e3", 30, id="float"),
    pytest.param("", 30, id="empty"),
    pytest.param("9" * 5000, 30, id="5000-digits"),
]


@as_json
@pytest.mark.parametrize("minutes, threshold", STUCK)
def test_the_stuck_threshold_is_kept_between_a_minute_and_ten_years(
    oscar: Client, settings: Any, minutes: str, threshold: int, as_json: bool
) -> None:
    settings.MONITORING_STUCK_MINUTES = 30
    response = fetch(oscar, reverse("monitoring:stuck"), qs(minutes=minutes), as_json=as_json)
    assert response.status_code == 200
    body = answered(response, as_json=as_json)
    if as_json:
        assert body["threshold_minutes"] == threshold
    else:
        assert f"No progress for more than {threshold} minute{'' if threshold == 1 else 's'}," in body


# ---- every page, with parameters it does not know; /metrics -------------------------------------------

JUNK = [
    pytest.param(qs(format="xml"), id="other-format"),
    pytest.param("format=json&format=%ff", id="format-twice"),
    pytest.param("%ff=%fe&a=%00&b=" + "x" * 5000, id="junk-params"),
]


@as_json
@pytest.mark.parametrize("page", ["overview", "trends", "executions", "retries", "pending", "stuck"])
@pytest.mark.parametrize("query", JUNK)
def test_unknown_parameters_are_ignored(oscar: Client, page: str, query: str, as_json: bool) -> None:
    response = fetch(oscar, reverse(f"monitoring:{page}"), query, as_json=as_json)
    assert response.status_code == 200
    answered(response, as_json=as_json)


@pytest.mark.parametrize("query", ["format=json", "window=custom&start=0001-01-01T00:00", "%ff=%00"])
def test_metrics_ignore_the_query_string(oscar: Client, settings: Any, query: str) -> None:
    settings.MONITORING_METRICS_ALLOWED_IPS = ["127.0.0.1"]
    response = oscar.get(f"/metrics?{query}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert "# TYPE tollgate_workflows_running gauge" in response.content.decode()


# ---- the execution detail page ------------------------------------------------------------------------


def start_parked(settings: Any, workflow_id: str) -> str:
    """A run no worker picks up: it stays running, with a history of its own. Ids get a suffix, as the
    session's server outlives the test."""
    return start(
        settings.TEMPORAL_ADDRESS, settings.TEMPORAL_TASK_QUEUE, "ParkedWorkflow", {"x": 1},
        workflow_id=f"{workflow_id} {uuid.uuid4().hex[:8]}",
    )  # fmt: skip


def run_id_of(settings: Any, workflow_id: str) -> str:
    return str(describe(settings.TEMPORAL_ADDRESS, workflow_id).run_id)


@as_json
@pytest.mark.parametrize(
    "workflow_id",
    ["odd/id with spaces, a literal %2F, ü 名前 🚀 <b>", "a NUL \x00 in it"],
    ids=["slashes-spaces-%2F-unicode", "nul"],
)
def test_a_workflow_with_an_odd_id_has_its_page(
    oscar: Client, temporal_settings: Any, workflow_id: str, as_json: bool
) -> None:
    workflow_id = start_parked(temporal_settings, workflow_id)
    path = reverse("monitoring:execution", args=[workflow_id, run_id_of(temporal_settings, workflow_id)])
    response = fetch(oscar, path, as_json=as_json)
    assert response.status_code == 200
    body = answered(response, as_json=as_json)
    if as_json:
        assert body["execution"]["workflow_id"] == workflow_id and body["execution"]["status"] == "running"
    else:
        assert "ParkedWorkflow" in body and "Temporal is unreachable" not in body and "<b>" not in body


UNKNOWN_RUNS = [
    pytest.param(f"/monitoring/executions/a/b/c/{RUN_ID}/", id="slashes"),
    pytest.param(f"/monitoring/executions/a%2Fb/{RUN_ID}/", id="encoded-slash"),
    pytest.param(f"/monitoring/executions/{quote('with spaces')}/{RUN_ID}/", id="spaces"),
    pytest.param(f"/monitoring/executions/{quote('100%2F')}/{RUN_ID}/", id="literal-%2F"),
    pytest.param(f"/monitoring/executions/{quote('ü 名前 🚀')}/{RUN_ID}/", id="unicode"),
    pytest.param(f"/monitoring/executions/%ff%fe/{RUN_ID}/", id="non-utf8"),
    pytest.param(f"/monitoring/executions/a%00b/{RUN_ID}/", id="nul"),
    pytest.param(f"/monitoring/executions/{'x' * 5000}/{RUN_ID}/", id="5000-char-id"),
    pytest.param("/monitoring/executions/unknown/not-a-uuid/", id="run-id-not-a-uuid"),
    pytest.param(f"/monitoring/executions/unknown/{'9' * 64}/", id="run-id-64-digits"),
]


@as_json
@pytest.mark.parametrize("path", UNKNOWN_RUNS)
def test_a_run_temporal_does_not_have_is_a_404_that_says_so(oscar: Client, path: str, as_json: bool) -> None:
    response = fetch(oscar, path, as_json=as_json)
    assert response.status_code == 404
    body = answered(response, as_json=as_json)
    if as_json:
        assert body["execution"] is None and body["temporal_error"] == ""
    else:
        assert "Temporal has no such run" in body and "Temporal is unreachable" not in body


@as_json
def test_a_real_workflow_with_a_run_id_that_is_no_uuid_is_a_404(
    oscar: Client, temporal_settings: Any, as_json: bool
) -> None:
    workflow_id = start_parked(temporal_settings, "parked")
    response = fetch(oscar, reverse("monitoring:execution", args=[workflow_id, "not-a-uuid"]), as_json=as_json)
    assert response.status_code == 404
    body = answered(response, as_json=as_json)
    if as_json:
        assert body["execution"] is None and body["temporal_error"] == ""
    else:
        assert "Temporal has no such run" in body


@pytest.mark.parametrize(
    "path", ["/monitoring/executions/unknown/not%20a%20uuid!/", "/monitoring/executions/no-run-id/"]
)
def test_a_path_that_names_no_run_is_the_sites_404(oscar: Client, path: str) -> None:
    for query in ("", "?format=json"):
        response = oscar.get(path + query)
        assert response.status_code == 404
        html = response.content.decode()
        assert "Not found" in html and "Tollgate" in html and "Traceback" not in html


@pytest.mark.parametrize(
    ("workflow_id", "reason"),
    [("parked", "stuck\x00 since Monday"), ("a NUL \x00 in the id", "stuck since Monday")],
    ids=["nul-in-reason", "nul-in-id"],
)
def test_an_action_the_audit_log_could_not_store_is_refused_and_not_sent(
    oscar: Client, temporal_settings: Any, workflow_id: str, reason: str
) -> None:
    from monitoring.models import ActionLog

    workflow_id = start_parked(temporal_settings, workflow_id)
    url = reverse("monitoring:act", args=[workflow_id, run_id_of(temporal_settings, workflow_id)])
    response = oscar.post(url, {"action": "terminate", "reason": reason, "confirm": "yes"}, follow=True)
    assert response.status_code == 200
    assert "Tollgate cannot audit this action, so it was not sent" in answered(response, as_json=False)
    assert not ActionLog.objects.exists()
    assert describe(temporal_settings.TEMPORAL_ADDRESS, workflow_id).status == WorkflowExecutionStatus.RUNNING
