"""An approver clears a queue in a real browser: by keyboard one task after another, and in bulk
(with a task someone else decided meanwhile and one whose policy forbids bulk decisions).

The pages are served by daphne (websockets and all) on this test's database, Redis and Temporal, so
live refreshes happen as they do under ``make run``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import global_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection

from approvals import services
from approvals.demo import DEMO_PASSWORD
from approvals.models import ApprovalTask, Decision, Policy
from config.ports import free_port
from tests.support.temporal import eventually
from workflows import client as temporal

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


def off_the_loop(fn: Any, /, **kwargs: Any) -> Any:
    """Call ``fn`` in a thread of its own: Playwright's sync API keeps an event loop in this one, where
    the app's sync-to-async bridge (``temporal.run``) refuses to run."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, **kwargs).result()


def start_requests(titles: list[str], **fields: Any) -> list[ApprovalTask]:
    """Start one approval workflow per title, as any Temporal client may, and wait for their tasks."""
    token = uuid.uuid4().hex[:6]
    requests = [
        {"request_id": f"{token}-{n}", "title": t, "requested_by": "alice", **fields} for n, t in enumerate(titles)
    ]

    async def start_all() -> None:
        gate = asyncio.Semaphore(8)

        async def start(request: dict[str, Any]) -> None:
            async with gate:
                await temporal.start_approval(workflow_id=f"approval-{request['request_id']}", request=request)

        await asyncio.gather(*(start(r) for r in requests))

    off_the_loop(temporal.run, coro_fn=start_all)
    ids = [f"approval-{r['request_id']}" for r in requests]
    eventually(
        lambda: ApprovalTask.objects.filter(workflow_id__in=ids, status="pending").count() == len(ids), timeout=90
    )
    return list(ApprovalTask.objects.filter(workflow_id__in=ids).order_by("title"))


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def web(temporal_settings: Any, redis_url: str, redis_layer: str, cast: dict[str, Any]) -> Iterator[str]:
    """daphne serving the app on this test's database, Redis channel layer and Temporal task queue."""
    # daphne checks passwords with the real hashers, not the test run's MD5
    temporal_settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    cast["bob"].set_password(DEMO_PASSWORD)
    cast["bob"].save(update_fields=["password"])
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"daphne-{port}-", suffix=".log", delete=False)  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=database_url(), REDIS_URL=redis_url, TOLLGATE_CHANNEL_PREFIX=redis_layer,
        TEMPORAL_ADDRESS=temporal_settings.TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE=temporal_settings.TEMPORAL_TASK_QUEUE,
        DJANGO_SECRET_KEY=temporal_settings.SECRET_KEY, DJANGO_SECURE_COOKIES="false", DJANGO_DEBUG="false",
        PYTHONUNBUFFERED="1",
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def up() -> bool:
        assert proc.poll() is None, Path(log.name).read_text()[-2000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    eventually(up, timeout=30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/approvals/$"))
    page.locator('#live[data-state="up"]').wait_for(timeout=20_000)  # daphne on a loaded machine


def test_bob_clears_his_queue_with_the_keyboard_one_task_after_another(
    page: Any, web: str, worker: Any, cast: dict[str, Any]
) -> None:
    count = 12
    tasks = start_requests([f"Keyboard {n:02d}" for n in range(count)])
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    log_in(page, web, "bob")
    page.goto(f"{web}/approvals/?sort=-title")  # the view carried from task to task
    page.keyboard.press("j")
    assert page.locator("tr.task-row.is-current").get_attribute("data-task") == str(tasks[-1].pk)
    page.keyboard.press("?")
    assert "approve" in page.locator("#shortcut-help").inner_text()
    page.keyboard.press("?")
    page.keyboard.press("o")
    for n in range(count):
        expected = tasks[count - 1 - n]
        page.wait_for_url(re.compile(rf"/approvals/{expected.pk}/\?sort=-title$"))
        page.locator('#live[data-state="up"]').wait_for(timeout=20_000)  # daphne on a loaded machine
        if n == 0:
            # Rejecting without a reason: the error appears next to the comment box, announced.
            page.keyboard.press("r")
            assert page.evaluate("document.activeElement.id") == "id_comment"
            page.keyboard.press("Control+Enter")
            error = page.locator("#comment-error")
            error.filter(has_text="Rejecting needs a reason.").wait_for()
            assert error.get_attribute("role") == "alert"
            page.keyboard.type("n is not a shortcut while typing")
            assert page.url.endswith(f"/approvals/{expected.pk}/?sort=-title")
            page.locator("#id_comment").fill("")
            page.locator("body").click(position={"x": 5, "y": 5})
        requests.clear()
        page.keyboard.press("a")
        result = page.locator("#decision .result")
        result.filter(has_text="Approved.").wait_for()
        if n < 3:
            # The confirmation stays while live events arrive; the page is not fetched again for them.
            time.sleep(1.5)
            assert result.inner_text() == "Approved."
            page_gets = [u for m, u in requests if m == "GET" and f"/approvals/{expected.pk}/" in u]
            posts = [u for m, u in requests if m == "POST" and "/decide/" in u]
            assert (len(posts), page_gets) == (1, []), requests
        if n < count - 1:
            page.keyboard.press("n")
    page.locator("#no-next-task").wait_for()
    for task in tasks:
        task.refresh_from_db()
        assert (task.status, task.decided_by) == ("approved", "bob"), task.title


def test_bob_approves_fifty_in_bulk_with_one_taken_meanwhile_and_one_that_forbids_bulk(
    page: Any, web: str, worker: Any, cast: dict[str, Any]
) -> None:
    erin = get_user_model().objects.create_user("erin", password=DEMO_PASSWORD)
    erin.groups.add(Group.objects.get(name="approvers"))
    sensitive = Policy.objects.create(slug="sensitive", name="Sensitive", no_bulk_decisions=True)
    level = sensitive.levels.create(order=1, timeout=timedelta(days=1))
    level.groups.set([Group.objects.get(name="approvers")])
    tasks = start_requests([f"Bulk {n:02d}" for n in range(49)])
    guarded = start_requests(["Bulk guarded"], policy="sensitive")[0]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    log_in(page, web, "bob")
    page.goto(f"{web}/approvals/?q=Bulk")
    assert "Select all 50 matching this filter" in page.locator("#matching").inner_text()
    # Tick all 50 with the keyboard, 25 on each page: the selection lasts across pages.
    for _ in range(2):
        page.keyboard.press("j")
        for _n in range(25):
            page.keyboard.press("x")
            page.keyboard.press("j")
        assert page.locator('input[name="task"]:checked').count() == 25
        if page.get_by_role("link", name="Later →").count():
            page.get_by_role("link", name="Later →").click()
            page.locator("#rows").get_by_text("Page 2").wait_for()
    # Meanwhile erin decides one of them, through the task page's own path; bob's inbox drops it.
    taken = tasks[7]
    decided = off_the_loop(services.decide_task, task=taken, user=erin, choice="approve", comment="mine")
    assert decided.state == "applied"
    page.locator("#bulk-comment").fill("quarterly batch")
    page.get_by_role("button", name="Approve selected").click()
    results = page.locator("#bulk-results")
    results.wait_for(timeout=60_000)
    assert any("/progress/" in url for url in requests), "the page asked for progress while it ran"
    rows = {
        row.locator("td").nth(0).inner_text(): (
            row.locator("td").nth(1).inner_text(),
            row.locator("td").nth(2).inner_text(),
        )
        for row in results.locator("tbody tr").all()
    }
    assert len(rows) == 50
    assert rows["Bulk guarded"] == (
        "Refused",
        "Policy “Sensitive” asks for one decision at a time: open the task to decide it.",
    )
    assert rows[taken.title][0] == "Not applied" and "by erin" in rows[taken.title][1]
    others = {state for title, (state, _) in rows.items() if title not in (taken.title, guarded.title)}
    assert others <= {"Applied", "Delivered, being applied"}, others
    # The live inbox drops each task as its workflow confirms it: only the guarded one stays.
    page.locator("tr.task-row").filter(has_text="Bulk 00").wait_for(state="detached", timeout=30_000)
    eventually(lambda: page.locator("tr.task-row").count() == 1, timeout=30)
    assert (
        page.locator("tr.task-row").inner_text().startswith("Bulk guarded")
        or "Bulk guarded" in page.locator("tr.task-row").inner_text()
    )
    for task in tasks:
        task.refresh_from_db()
        assert task.status == "approved", task.title
        assert task.decided_by == ("erin" if task.pk == taken.pk else "bob")
    assert not Decision.objects.filter(task=guarded).exists()
    guarded.refresh_from_db()
    assert guarded.status == "pending"
