"""bob logs in, opens the task, approves it, and the workflow says approved by bob."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.temporal import DevServer, WorkerThread, registered_task, start_with_cli, workflow_result
from tests.support.web import SHOTS, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]


def test_bob_approves_a_task_in_the_browser(
    page: Any, live_server: Any, cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Replace the office printer", "requested_by": "alice",
               "payload": {"amount": "480 EUR", "note": "<b>escaped</b>"}}  # fmt: skip
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    registered_task(workflow_id)

    log_in(page, live_server.url, "bob")
    page.get_by_role("link", name="Replace the office printer").click()
    page.get_by_text("<b>escaped</b>").wait_for()  # shown as text, not markup
    page.get_by_label("Comment").fill("Go ahead")
    page.get_by_role("button", name="Approve").click()
    page.locator("#decision .result-applied").wait_for()
    assert page.locator("#decision").inner_text().startswith("Approved.")
    # The rest of the page follows without a reload: status, history, my count.
    assert "Approved" in page.locator("#task-meta").inner_text()
    assert "Approved by bob: Go ahead" in page.locator("#task-history").inner_text()
    assert page.locator("#pending-count").inner_text() == "0"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "decided.png"), full_page=True)

    result = workflow_result(dev_server.address, workflow_id)
    assert (result["outcome"], result["decided_by"], result["comment"]) == ("approved", "bob", "Go ahead")


def test_the_inbox_is_usable_on_a_phone(
    browser: Any, live_server: Any, cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Phone-sized request", "requested_by": "alice"}
    registered_task(start_with_cli(dev_server.address, worker.task_queue, request))
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        log_in(page, live_server.url, "bob")
        link = page.get_by_role("link", name="Phone-sized request")
        box = link.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390  # no sideways scrolling to reach it
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "inbox-phone.png"), full_page=True)
    finally:
        context.close()
