"""Two approvers on two web processes behind one Redis: carol approves, bob's pages follow within a second."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.support.data import PASSWORD, make_policy
from tests.support.temporal import DevServer, WorkerThread, registered_task, start_with_cli
from tests.support.web import SHOTS, AsgiServer, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(autouse=True)
def _passwords_the_servers_can_check(settings: Any, cast: dict[str, Any]) -> None:
    """The daphne subprocesses use the real hashers, not the test run's MD5."""
    from django.conf import global_settings

    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    for name in ("bob", "carol"):
        cast[name].set_password(PASSWORD)
        cast[name].save(update_fields=["password"])


def test_a_task_decided_by_carol_leaves_bobs_pages_within_a_second(
    browser: Any, cast: dict[str, Any], redis_layer: str, redis_url: str, worker: WorkerThread,
    dev_server: DevServer, temporal_settings: Any,
) -> None:  # fmt: skip
    make_policy("pair", [{"users": ["bob", "carol"], "timeout": timedelta(days=1)}])
    web_a, web_b = (
        AsgiServer(temporal_settings, redis_url, redis_layer),
        AsgiServer(temporal_settings, redis_url, redis_layer),
    )
    try:
        request = {"request_id": uuid.uuid4().hex[:8], "title": "Live one", "requested_by": "alice", "policy": "pair"}
        task = registered_task(start_with_cli(dev_server.address, worker.task_queue, request))

        bob_context = browser.new_context()
        bob_inbox, bob_task = bob_context.new_page(), bob_context.new_page()
        log_in(bob_inbox, web_a.url, "bob")
        bob_task.goto(f"{web_a.url}{task.get_absolute_url()}")
        for page in (bob_inbox, bob_task):
            page.locator('#live[data-state="up"]').wait_for(timeout=10_000)
        assert bob_inbox.get_by_role("link", name="Live one").is_visible()
        assert bob_inbox.locator("#pending-count").inner_text() == "1"

        carol = browser.new_context().new_page()
        log_in(carol, web_b.url, "carol")  # the other web process
        carol.goto(f"{web_b.url}{task.get_absolute_url()}")
        carol.get_by_role("button", name="Approve").click()
        # Her own page may show the POST's answer or, a moment later, the live refresh of it.
        carol.locator("#decision").get_by_text(re.compile("by carol")).wait_for(timeout=15_000)
        decided = time.monotonic()

        bob_inbox.get_by_role("link", name="Live one").wait_for(state="detached", timeout=1000)
        bob_task.locator("#decision").get_by_text(re.compile("by carol")).wait_for(timeout=1000)
        elapsed = time.monotonic() - decided
        assert elapsed < 1.0, elapsed
        assert bob_task.get_by_role("button", name="Approve").count() == 0  # he cannot decide it any more
        # The header count follows too (debounced with the other regions).
        bob_inbox.wait_for_function("document.getElementById('pending-count').textContent.trim() === '0'", timeout=2000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        bob_task.screenshot(path=str(SHOTS / "live-decided-by-carol.png"), full_page=True)
    finally:
        web_a.stop()
        web_b.stop()


def test_the_monitoring_overview_follows_the_snapshot_without_a_reload(
    browser: Any, cast: dict[str, Any], redis_layer: str, redis_url: str, temporal_settings: Any
) -> None:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from approvals import live
    from monitoring.models import Execution

    oscar: User = cast["oscar"]
    oscar.set_password(PASSWORD)
    oscar.save(update_fields=["password"])
    web = AsgiServer(temporal_settings, redis_url, redis_layer)
    try:
        page = browser.new_context().new_page()
        log_in(page, web.url, "oscar")
        page.goto(f"{web.url}/monitoring/")
        page.locator('#live[data-state="up"]').wait_for(timeout=10_000)
        assert page.get_by_text("InvoiceWorkflow").count() == 0
        marker = page.evaluate("() => { window.notReloaded = true; return true; }")
        now = timezone.now()
        Execution.objects.create(workflow_id="inv-1", run_id="r1", workflow_type="InvoiceWorkflow", status="failed",
                                 start_time=now - timedelta(minutes=3), close_time=now, duration=180.0,
                                 failure_message="card declined")  # fmt: skip
        # What refresh_snapshot does after it commits, from a thread as in the worker
        # (this thread runs Playwright's event loop).
        sender = threading.Thread(target=live.monitoring_changed)
        sender.start()
        sender.join()
        page.get_by_role("link", name="InvoiceWorkflow").wait_for(timeout=2_000)
        assert marker and page.evaluate("() => window.notReloaded === true")
        assert "card declined" in page.locator("#health").inner_text()
    finally:
        web.stop()


def test_the_live_indicator_says_when_the_connection_is_down_and_pages_still_refresh(
    browser: Any, cast: dict[str, Any], redis_layer: str, redis_url: str, temporal_settings: Any
) -> None:
    web = AsgiServer(temporal_settings, redis_url, redis_layer)
    page = browser.new_context().new_page()
    try:
        log_in(page, web.url, "bob")
        page.locator('#live[data-state="up"]').wait_for(timeout=10_000)
    finally:
        web.stop()
    page.locator('#live[data-state="down"]').wait_for(timeout=5_000)
    assert "offline" in page.locator("#live").inner_text()
