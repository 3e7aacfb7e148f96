"""The tamper-evident audit trail: rows changed with SQL behind Tollgate's back are named by
``verify_audit`` and on the task page; intact trails pass; the migration chains old rows; concurrent
appends never fork."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, timedelta
from importlib import import_module
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.audit import append_entry, entry_hash, verify_all, verify_task_chain
from approvals.models import ApprovalTask, AuditEntry, Decision
from tests.support.data import make_policy, pending_task
from tests.support.temporal import DevServer, WorkerThread, registered_task, start_with_cli, workflow_result
from tests.support.web import logged_in

chain_migration = import_module("approvals.migrations.0006_chain_existing_audit")


def append(task: ApprovalTask, kind: str, at: Any, *, level: int | None = 1, message: str = "") -> AuditEntry:
    return append_entry(
        task=task, event_key=f"{task.workflow_id}:{uuid.uuid4()}", kind=kind, at=at, level=level, message=message
    )


def decide(task: ApprovalTask, user: Any, choice: str, comment: str = "") -> None:
    response = logged_in(user).post(reverse("approvals:decide", args=[task.pk]), {"choice": choice, "comment": comment})
    assert response.status_code == 302


def trail(cast: dict[str, Any]) -> ApprovalTask:
    """A task with five entries: requested, assigned, reminded, and two decisions made on the page."""
    task = pending_task("Buy a laptop", requester=cast["alice"], users=(cast["carol"],))
    ApprovalTask.objects.filter(pk=task.pk).update(required_approvals=2)  # both votes are stored
    start = timezone.now() - timedelta(hours=3)
    append(task, "requested", start, level=None, message="Requested under policy Standard")
    append(task, "assigned", start, message="Assigned to group approvers, carol")
    append(task, "reminded", start + timedelta(hours=1), message="Reminder sent to 2 approver(s)")
    decide(task, cast["bob"], "approve", "fine")
    decide(task, cast["carol"], "reject", "too dear")
    return task


def entry(task: ApprovalTask, seq: int) -> AuditEntry:
    return AuditEntry.objects.get(task=task, seq=seq)


def verdict(*args: str) -> tuple[int, str, str]:
    """``verify_audit``'s exit code, stdout and stderr."""
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def page(task: ApprovalTask, user: Any) -> str:
    response = logged_in(user).get(reverse("approvals:detail", args=[task.pk]))
    assert response.status_code == 200
    return response.content.decode()


def rechain(task: ApprovalTask, *, from_seq: int) -> None:
    """What an attacker with write access and this source code can do: recompute every later hash."""
    prev_hash = entry(task, from_seq - 1).hash if from_seq > 1 else ""
    for row in AuditEntry.objects.filter(task=task, seq__gte=from_seq).order_by("seq"):
        digest = entry_hash(
            task_id=task.pk, seq=row.seq or 0, prev_hash=prev_hash, at=row.at, kind=row.kind, actor=row.actor,
            level=row.level, message=row.message, record=row.record,
        )  # fmt: skip
        AuditEntry.objects.filter(pk=row.pk).update(prev_hash=prev_hash, hash=digest)
        prev_hash = digest


# ---- intact ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_intact_trail_passes_the_command_and_the_page_says_verified(
    cast: dict[str, Any], temporal_down: Any
) -> None:
    task = trail(cast)
    pending_task("Nothing happened yet", requester=cast["alice"])
    code, out, _ = verdict()
    assert (code, out) == (0, "audit trail intact: 5 entries, 2 decisions, 2 tasks\n")
    assert "Audit trail verified: 5 entries, chained; 2 decisions match their entries." in page(task, cast["bob"])
    assert [e.kind for e in AuditEntry.objects.filter(task=task).order_by("seq")] == [
        "requested", "assigned", "reminded", "decision", "decision",
    ]  # fmt: skip


@pytest.mark.django_db
def test_a_decision_made_on_the_page_is_bound_into_the_chain(cast: dict[str, Any], temporal_down: Any) -> None:
    task = trail(cast)
    decision = Decision.objects.get(task=task, user=cast["bob"])
    bound = entry(task, 4)
    assert (bound.kind, bound.actor, bound.message, bound.at) == ("decision", "bob", "bob chose to approve: fine",
                                                                   decision.created_at)  # fmt: skip
    assert bound.record == {
        "decision_id": decision.decision_id,
        "user_id": cast["bob"].pk,
        "choice": "approve",
        "comment": "fine",
        "created_at": decision.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
    }
    assert bound.prev_hash == entry(task, 3).hash and len(bound.hash) == 64


@pytest.mark.django_db
def test_a_retried_event_is_appended_once(cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    first = append_entry(task=task, event_key="retry:1", kind="reminded", at=timezone.now(), message="once")
    again = append_entry(task=task, event_key="retry:1", kind="reminded", at=timezone.now(), message="once")
    assert first.pk == again.pk and AuditEntry.objects.filter(task=task).count() == 1


# ---- tampering -------------------------------------------------------------------------------


def alter_message(task: ApprovalTask) -> str:
    AuditEntry.objects.filter(pk=entry(task, 3).pk).update(message="Reminder sent to 0 approver(s)")
    return "entry 3 (reminded) altered: hash does not match its content"


def delete_entry(task: ApprovalTask) -> str:
    AuditEntry.objects.filter(pk=entry(task, 2).pk).delete()
    return "entry 2 removed: the chain goes from entry 1 to entry 3"


def swap_times(task: ApprovalTask) -> str:
    first, third = entry(task, 1), entry(task, 3)
    AuditEntry.objects.filter(pk=first.pk).update(at=third.at)
    AuditEntry.objects.filter(pk=third.pk).update(at=first.at)
    return "entry 1 (requested) altered: hash does not match its content"


def insert_forged_entry(task: ApprovalTask) -> str:
    AuditEntry.objects.create(task=task, kind="approved", at=entry(task, 2).at, actor="mallory", message="Approved")
    return "entry (approved) at "  # ... is not in the chain: it was written outside Tollgate


def insert_forged_entry_renumbering_the_rest(task: ApprovalTask) -> str:
    """A well-formed entry slipped in at position 3, those after it moved up one."""
    for row in AuditEntry.objects.filter(task=task, seq__gte=3).order_by("-seq"):
        AuditEntry.objects.filter(pk=row.pk).update(seq=(row.seq or 0) + 1)
    prev, at = entry(task, 2).hash, entry(task, 2).at
    content: dict[str, Any] = {"at": at, "kind": "approved", "actor": "mallory", "level": 1, "message": "Approved"}
    digest = entry_hash(task_id=task.pk, seq=3, prev_hash=prev, record={}, **content)
    AuditEntry.objects.create(task=task, seq=3, prev_hash=prev, hash=digest, **content)
    return "entry 4 (reminded) altered: hash does not match its content"


def alter_choice(task: ApprovalTask) -> str:
    decision = Decision.objects.get(task=task, choice="reject")
    Decision.objects.filter(pk=decision.pk).update(choice="approve")
    return f"decision {decision.decision_id} altered: its choice no longer matches entry 5"


def alter_comment_and_user(task: ApprovalTask) -> str:
    decision = Decision.objects.get(task=task, choice="approve")
    dave = User.objects.get(username="dave")
    Decision.objects.filter(pk=decision.pk).update(comment="I never said that", user=dave)
    return f"decision {decision.decision_id} altered: its user id, comment no longer match entry 4"


def delete_decision(task: ApprovalTask) -> str:
    decision = Decision.objects.get(task=task, choice="reject")
    Decision.objects.filter(pk=decision.pk).delete()
    return f"entry 5 (decision) records decision {decision.decision_id}, which was deleted"


def insert_decision(task: ApprovalTask) -> str:
    dave = User.objects.get(username="dave")
    decision = Decision.objects.create(task=task, user=dave, choice="approve")
    return f"decision {decision.decision_id} has no entry in the chain: it was stored outside Tollgate"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tamper",
    [
        alter_message,
        delete_entry,
        swap_times,
        insert_forged_entry,
        insert_forged_entry_renumbering_the_rest,
        alter_choice,
        alter_comment_and_user,
        delete_decision,
        insert_decision,
    ],
)
def test_a_change_made_behind_tollgates_back_is_named_by_the_command_and_the_page(
    cast: dict[str, Any], temporal_down: Any, tamper: Callable[[ApprovalTask], str]
) -> None:
    task, bystander = trail(cast), trail(cast)
    problem = tamper(task)
    code, out, _ = verdict()
    assert code == 1
    first, summary = out.splitlines()
    assert first.startswith(f"task {task.pk} ({task.workflow_id}): {problem}")
    assert summary == "audit trail BROKEN: 1 of 2 tasks fail verification"
    shown = page(task, cast["operator"])
    assert f"<strong>Audit trail does not verify:</strong> {problem}" in shown
    assert "Audit trail verified" not in shown
    assert "Audit trail verified: 5 entries" in page(bystander, cast["operator"])


@pytest.mark.django_db
def test_every_broken_task_is_named_and_the_first_twenty_one_by_one(cast: dict[str, Any]) -> None:
    tasks = [pending_task(f"Task {n}", requester=cast["alice"]) for n in range(22)]
    for task in tasks:
        append(task, "requested", timezone.now(), message="Requested")
    AuditEntry.objects.filter(task__in=tasks).update(message="changed")
    code, out, _ = verdict()
    lines = out.splitlines()
    assert code == 1 and len(lines) == 22
    assert lines[0] == f"task {tasks[0].pk} ({tasks[0].workflow_id}): entry 1 (requested) altered: hash does not " \
        "match its content"  # fmt: skip
    assert lines[-2:] == ["... and 2 more broken tasks", "audit trail BROKEN: 22 of 22 tasks fail verification"]


@pytest.mark.django_db
def test_verification_reads_the_tasks_in_chunks_with_the_same_result(cast: dict[str, Any], temporal_down: Any) -> None:
    for _ in range(3):
        trail(cast)
    AuditEntry.objects.filter(pk=AuditEntry.objects.filter(kind="reminded").latest("pk").pk).update(message="x")
    whole, chunked = verify_all(), verify_all(chunk=2)
    assert (whole.tasks, whole.entries, whole.decisions, whole.broken) == (3, 15, 6, 1)
    assert (chunked.tasks, chunked.entries, chunked.decisions, chunked.broken) == (3, 15, 6, 1)
    assert whole.first_broken == chunked.first_broken


# ---- heads: the limit of a chain, and how it is covered ----------------------------------------


@pytest.mark.django_db
def test_exported_heads_catch_a_rewritten_chain_a_cut_one_and_a_deleted_task(
    cast: dict[str, Any], temporal_down: Any, tmp_path: Path
) -> None:
    rewritten, cut, gone, grown = trail(cast), trail(cast), trail(cast), trail(cast)
    code, out, err = verdict("--heads")
    assert (code, err) == (0, "audit trail intact: 20 entries, 8 decisions, 4 tasks\n")
    lines = out.splitlines()
    assert lines[0] == "# task\tworkflow_id\tentries\thead_sha256"
    assert lines[1] == f"{rewritten.pk}\t{rewritten.workflow_id}\t5\t{entry(rewritten, 5).hash}"
    heads = tmp_path / "heads.tsv"
    heads.write_text(out)

    AuditEntry.objects.filter(pk=entry(rewritten, 3).pk).update(message="Reminder sent to nobody")
    rechain(rewritten, from_seq=3)
    AuditEntry.objects.filter(pk=entry(cut, 5).pk).delete()
    Decision.objects.filter(task=cut, choice="reject").delete()
    gone_id, gone_workflow = gone.pk, gone.workflow_id
    gone.delete()
    append(grown, "reminded", timezone.now(), message="Another reminder")  # growing is not tampering
    assert verdict()[0] == 0  # the chains alone cannot tell: every hash was recomputed

    code, out, _ = verdict("--against", str(heads))
    assert code == 1
    assert out.splitlines() == [
        f"task {rewritten.pk} ({rewritten.workflow_id}): entry 5 differs from its exported head: the chain was "
        "rewritten",
        f"task {cut.pk} ({cut.workflow_id}): entry 5 removed since the heads were exported",
        f"task {gone_id} ({gone_workflow}): deleted since the heads were exported",
        "audit trail BROKEN: 3 of 4 tasks fail verification",
    ]


@pytest.mark.django_db
def test_a_workflow_id_with_a_tab_and_a_newline_keeps_the_heads_file_and_the_report_one_line_per_task(
    cast: dict[str, Any], tmp_path: Path
) -> None:
    task = pending_task(requester=cast["alice"])
    ApprovalTask.objects.filter(pk=task.pk).update(workflow_id="approval-\todd\nid")
    append(task, "requested", timezone.now(), message="Requested")
    code, out, _ = verdict("--heads")
    assert code == 0 and out.splitlines()[1] == f"{task.pk}\tapproval-\\todd\\nid\t1\t{entry(task, 1).hash}"
    heads = tmp_path / "heads.tsv"
    heads.write_text(out)
    assert verdict("--against", str(heads))[0] == 0
    AuditEntry.objects.filter(task=task).update(message="changed")
    code, out, _ = verdict()
    assert code == 1 and out.splitlines()[0].startswith(f"task {task.pk} (approval-\\todd\\nid): entry 1")


@pytest.mark.django_db
def test_a_heads_file_that_is_not_one_says_which_line(cast: dict[str, Any], tmp_path: Path) -> None:
    heads = tmp_path / "heads.tsv"
    heads.write_text("# task\tworkflow_id\tentries\thead_sha256\n7\tapproval-x\tfive\tabc\n")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="heads.tsv line 2 is not 'task<TAB>workflow id<TAB>entries<TAB>hash'"):
        call_command("verify_audit", "--against", str(heads))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("verify_audit", "--against", str(tmp_path / "missing.tsv"))


# ---- the migration ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migration_chains_rows_written_before_the_chain_and_binds_old_decisions(cast: dict[str, Any]) -> None:
    task, other = pending_task(requester=cast["alice"]), pending_task(requester=cast["alice"])
    start = timezone.now() - timedelta(days=1)
    # Rows as migration 0005 leaves them: no position, no hash; written out of time order.
    AuditEntry.objects.create(task=task, kind="assigned", at=start + timedelta(seconds=1), message="Assigned")
    AuditEntry.objects.create(task=task, kind="requested", at=start, actor="alice", message="Requested")
    AuditEntry.objects.create(task=task, kind="approved", at=start + timedelta(hours=2), message="Approved by bob")
    decision = Decision.objects.create(
        task=task, user=cast["bob"], choice="approve", comment="ok", created_at=start + timedelta(hours=1)
    )
    AuditEntry.objects.create(task=other, kind="requested", at=start, message="Requested")
    assert verify_all().broken == 2

    chain_migration.chain_existing(apps, None)

    summary = verify_all()
    assert (summary.ok, summary.entries, summary.decisions) == (True, 5, 1)
    chained = AuditEntry.objects.filter(task=task).order_by("seq")
    assert [(e.seq, e.kind) for e in chained] == [(1, "requested"), (2, "assigned"), (3, "decision"), (4, "approved")]
    bound = entry(task, 3)
    assert (bound.at, bound.actor, bound.record["decision_id"]) == (decision.created_at, "bob", decision.decision_id)
    chain_migration.chain_existing(apps, None)  # again: nothing doubles, all still verifies
    assert verify_all().entries == 5 and verify_all().ok
    # and the chain it left is one the app appends to
    append(task, "reminded", timezone.now(), message="Late reminder")
    assert verify_task_chain(task).ok and entry(task, 5).prev_hash == entry(task, 4).hash


# ---- forks and queries --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_refuses_a_second_entry_at_one_position(cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    first = append(task, "requested", timezone.now(), message="Requested")
    with pytest.raises(IntegrityError):
        AuditEntry.objects.create(task=task, seq=1, prev_hash="", hash=first.hash, kind="forked", at=first.at)


@pytest.mark.django_db(transaction=True)
def test_two_processes_appending_to_one_task_at_once_never_fork_the_chain(cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    start, errors = threading.Barrier(2), []

    def appender(name: str) -> None:
        try:
            start.wait()
            for n in range(15):
                append_entry(task=task, event_key=f"{name}:{n}", kind="reminded", at=timezone.now(), message=name)
        except Exception as exc:  # reported below, with the thread's name
            errors.append(f"{name}: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=appender, args=(name,)) for name in ("web", "worker")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    check = verify_task_chain(task)
    assert (check.ok, check.entries, check.head_seq) == (True, 30, 30), check.problem
    assert sorted(s or 0 for s in AuditEntry.objects.filter(task=task).values_list("seq", flat=True)) == list(
        range(1, 31)
    )


@pytest.mark.django_db
def test_the_task_page_verifies_its_trail_without_a_query_per_entry(cast: dict[str, Any], temporal_down: Any) -> None:
    task = trail(cast)
    client = logged_in(cast["bob"])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("approvals:detail", args=[task.pk])).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for n in range(25):
        append(task, "reminded", timezone.now(), message=f"Reminder {n}")
    assert queries() == few
    assert "Audit trail verified: 30 entries, chained" in page(task, cast["bob"])


# ---- with the real worker: the web and the activities append at once ------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_quorum_decided_through_the_page_leaves_a_trail_that_verifies(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:

    hours = timedelta(hours=24)
    make_policy("two-of-three", [{"users": ["bob", "carol", "dave"], "timeout": hours, "required_approvals": 2}])
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Quorum", "requested_by": "alice", "policy": "two-of-three"}
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    task = registered_task(workflow_id)
    url = reverse("approvals:decide", args=[task.pk])
    logged_in(cast["bob"]).post(url, {"choice": "approve", "comment": "yes"}, headers={"HX-Request": "true"})
    logged_in(cast["carol"]).post(url, {"choice": "approve"}, headers={"HX-Request": "true"})
    assert workflow_result(dev_server.address, workflow_id)["outcome"] == "approved"
    kinds = list(AuditEntry.objects.filter(task=task).order_by("seq").values_list("kind", flat=True))
    assert sorted(kinds) == sorted(["requested", "assigned", "decision", "vote", "decision", "approved"])
    code, out, _ = verdict()
    assert code == 0 and out.startswith("audit trail intact: 6 entries, 2 decisions,")
    assert "Audit trail verified: 6 entries, chained; 2 decisions match their entries." in page(task, cast["bob"])
