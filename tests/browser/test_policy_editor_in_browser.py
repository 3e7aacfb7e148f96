"""An admin builds a two-level policy in the browser, previews it, and a new request follows it."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.models import ApprovalTask
from tests.support.temporal import WorkerThread, eventually
from tests.support.web import SHOTS, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]


def test_an_admin_builds_previews_and_uses_a_two_level_policy(
    browser: Any, live_server: Any, cast: dict[str, Any], worker: WorkerThread
) -> None:
    admin = browser.new_context().new_page()
    admin.set_default_timeout(15_000)
    log_in(admin, live_server.url, "admin")
    admin.goto(f"{live_server.url}/approvals/policies/new/")
    admin.get_by_label("Name").fill("Hardware over budget")
    admin.get_by_label("Slug").fill("hardware")
    first = admin.locator("fieldset.level").nth(0)
    first.get_by_label("approvers").check()
    first.get_by_label("Escalate after").fill("2h")
    first.get_by_label("Remind every").fill("30m")
    admin.get_by_role("button", name="+ Add a level").click()
    second = admin.locator("fieldset.level").nth(1)
    second.get_by_label("managers").check()
    second.get_by_label("Escalate after").fill("1d")
    admin.get_by_label("After the last level").select_option("reject")
    admin.get_by_role("button", name="Preview").click()
    preview = admin.locator("#preview").inner_text()
    for line in ("at once Ask level 1: group approvers", "30m Remind level 1", "2h Escalate to level 2: group managers",
                 "1d 2h Nobody decided: the request is rejected automatically"):  # fmt: skip
        assert line in preview, preview
    SHOTS.mkdir(parents=True, exist_ok=True)
    admin.screenshot(path=str(SHOTS / "policy-preview.png"), full_page=True)
    admin.get_by_role("button", name="Save as a new version").click()
    admin.get_by_text("Saved Hardware over budget as version 1.").wait_for()

    alice = browser.new_context().new_page()
    alice.set_default_timeout(15_000)
    log_in(alice, live_server.url, "alice")
    alice.goto(f"{live_server.url}/approvals/new/")
    alice.get_by_label("Title").fill("Two 4K monitors")
    alice.get_by_label("Policy").select_option(label="Hardware over budget")
    alice.get_by_role("button", name="Send request").click()
    alice.get_by_text("Request sent.").wait_for()
    task = eventually(lambda: ApprovalTask.objects.filter(title="Two 4K monitors", status="pending").first())
    assert task.policy_snapshot["slug"] == "hardware" and task.policy_version == 1
    alice.reload()
    meta = alice.locator("#task-meta").inner_text()
    assert "policy Hardware over budget v1" in meta
    assert [a.label for a in task.assignments.all()] == ["group approvers"]
    assert task.due_at is not None and task.created_at is not None
    assert abs((task.due_at - task.created_at).total_seconds() - 7200) < 5
