"""oscar runs an approval's ``status`` query from its execution page in a real browser; the overview
fits a phone's screen."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from approvals.models import ApprovalTask
from tests.support.temporal import eventually
from tests.support.web import SHOTS, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def in_a_thread(call: Callable[[], Any]) -> Any:
    """Playwright's event loop runs in this thread; Temporal calls need a thread of their own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


@pytest.mark.integration
def test_an_operator_runs_an_approvals_status_query_from_its_page(
    page: Any, live_server: Any, cast: dict[str, Any], worker: Any
) -> None:
    from workflows import client as temporal

    workflow_id = f"approval-{uuid.uuid4().hex[:8]}"
    request = {"request_id": workflow_id, "title": "Conference trip", "requested_by": "alice"}
    run_id = in_a_thread(lambda: temporal.run(temporal.start_approval, workflow_id=workflow_id, request=request))
    eventually(lambda: ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").exists(), timeout=30)

    log_in(page, live_server.url, "oscar")
    page.goto(f"{live_server.url}/monitoring/executions/{workflow_id}/{run_id}/")
    # The list comes from the workflow itself (its metadata query), loaded after the page.
    page.locator("#queries-declared").wait_for()
    page.locator("#query-form").get_by_role("button", name="status", exact=True).click()
    answer = page.locator("#query-result")
    answer.wait_for()
    status = json.loads(answer.inner_text())
    assert status["request_id"] == workflow_id and status["level"] == 1 and status["result"] is None
    assert page.url.endswith(f"/{run_id}/")  # answered in place, through htmx
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "monitoring-execution-query.png"), full_page=True)

    # A query the workflow does not have: said in words, on the same page.
    page.get_by_label("Another query by name").fill("no_such_query")
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator("#query-problem").wait_for()
    assert "no_such_query" in page.locator("#query-problem").inner_text()


def test_the_overviews_window_form_fits_a_phone(
    browser: Any, live_server: Any, cast: dict[str, Any], settings: Any
) -> None:
    with socket.socket() as s:  # nothing listens there: the overview shows the snapshot's figures
        s.bind(("127.0.0.1", 0))
        settings.TEMPORAL_ADDRESS = f"127.0.0.1:{s.getsockname()[1]}"
    context = browser.new_context(viewport={"width": 375, "height": 812})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        log_in(page, live_server.url, "oscar")
        page.goto(f"{live_server.url}/monitoring/?window=custom")
        page.locator("input[name=start]").wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "monitoring-overview-375.png"), full_page=True)
        assert width <= 375, f"the page is {width}px wide on a 375px screen"
        assert page.locator("input[name=end]").bounding_box()["x"] + 10 < 375
    finally:
        context.close()
