"""oscar opens the monitoring overview, finds a failed workflow in the explorer and opens its page."""

from __future__ import annotations

import functools
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from monitoring.snapshot import refresh_snapshot
from tests.support.temporal import DevServer, SampleWorker, closed, eventually, start
from tests.support.web import SHOTS, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]


def test_an_operator_opens_the_overview_and_a_failed_workflow(
    tokyo_page: Any, live_server: Any, cast: dict[str, Any], temporal_settings: Any, dev_server: DevServer
) -> None:
    worker = SampleWorker(dev_server.address, temporal_settings.TEMPORAL_TASK_QUEUE).start()
    try:
        message = f"payment gateway said no <{uuid.uuid4().hex[:6]}>"
        failed = start(dev_server.address, worker.task_queue, "MonMixWorkflow", {"mode": "fail", "message": message})
        done = start(dev_server.address, worker.task_queue, "MonMixWorkflow", {"mode": "ok", "seconds": 0.1})
        eventually(functools.partial(closed, dev_server.address, failed))
        eventually(functools.partial(closed, dev_server.address, done))
        eventually(lambda: _refresh_in_a_thread() and message in _failures())
    finally:
        worker.stop()

    page = tokyo_page
    log_in(page, live_server.url, "oscar")
    page.get_by_role("link", name="Monitoring").click()
    page.wait_for_url(re.compile(r"/monitoring/$"))
    row = page.locator("#health tr", has_text="MonMixWorkflow")
    assert message in row.inner_text()  # the latest failure, shown as text
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "monitoring-overview.png"), full_page=True)
    # The browser's zone reached the server (a cookie set by timezone.js on the login page).
    exact = page.locator(".snapshot-age time").get_attribute("title") or ""
    assert exact.endswith(" JST"), exact

    page.get_by_role("link", name="Explorer").click()
    page.get_by_label("Workflow id starts with").fill(failed)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=failed).click()
    page.locator("#failure").wait_for()
    assert page.locator("#failure").inner_text() == message
    assert "Failed" in page.locator("#execution-meta").inner_text()
    assert "Workflow execution failed" in page.locator("#history").inner_text()
    assert page.get_by_role("link", name="Open in Temporal UI").count() == 1
    page.screenshot(path=str(SHOTS / "monitoring-failed-execution.png"), full_page=True)


def _refresh_in_a_thread() -> bool:
    """Playwright's event loop runs in this thread; the refresh's Temporal calls need one of their own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(refresh_snapshot).result()
    return True


def _failures() -> list[str]:
    from monitoring.models import Execution

    return list(Execution.objects.exclude(failure_message="").values_list("failure_message", flat=True))
