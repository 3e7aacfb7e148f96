"""``manage.py simulate``: the plan it draws, and a small run on the dev server with the real worker."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from approvals.models import ApprovalTask, Decision
from approvals.simulation import Config, make_plan
from config.ports import free_port
from tests.support.data import test_database_url
from tests.support.temporal import DevServer, eventually, run_async, workflow_result

ROOT = Path(__file__).resolve().parent.parent.parent


# ---- the plan --------------------------------------------------------------------------


def test_a_seed_gives_the_same_plan_and_the_shares_are_exact_quotas() -> None:
    config = Config(approvals=10, orders=5, budgets=2, deployments=10, reject_rate=0.3, timeout_rate=0.2, fail_rate=0.3)
    items, verdicts = make_plan(config, random.Random(3), "t")
    again, verdicts_again = make_plan(config, random.Random(3), "t")
    assert items == again and verdicts == verdicts_again
    assert make_plan(config, random.Random(4), "t")[0] != items

    kinds = [item.kind for item in items]
    assert {kind: kinds.count(kind) for kind in set(kinds)} == {
        "approval": 10,
        "order": 5,
        "budget": 2,
        "deployment": 10,
    }
    assert sum(item.short_policy for item in items) == 2  # 20% of the approvals expire
    deployments = [item.params for item in items if item.kind == "deployment"]
    assert sum(d["fail_with"] == "InvalidArtifact" for d in deployments) == 3
    assert all(1 <= d["flaky_failures"] <= 3 for d in deployments if not d["fail_with"])
    late = [item for item in items if item.execution_timeout]
    assert len(late) == 2 and all(not item.decide and not item.params["fail_with"] for item in late)
    orders = [item for item in items if item.kind == "order"]
    assert sorted(bool(item.decide) for item in orders) == [False, False, False, True, True]
    assert all((o.params["amount"] >= 1000) == bool(o.decide) for o in orders)
    # Every approval someone decides has a verdict; 30% of them are rejections.
    assert sorted(verdicts) == sorted(key for item in items for key in item.decide)
    assert sum(v.reject for v in verdicts.values()) == round(len(verdicts) * 0.3)
    assert all(5 <= v.delay <= 60 for v in verdicts.values())


def test_bad_options_fail_with_one_line_naming_them(db: None) -> None:
    with pytest.raises(CommandError, match=r"--reject-rate must be between 0 and 1; --rate must be more than 0"):
        call_command("simulate", "--reject-rate", "1.5", "--rate", "0")
    with pytest.raises(CommandError, match="expected 0 <= MIN <= MAX"):
        call_command("simulate", "--decide-after", "9:2")


def test_it_says_so_in_one_line_when_temporal_is_unreachable(cast: dict[str, Any], settings: Any) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match=rf"^cannot reach Temporal at {settings.TEMPORAL_ADDRESS}: "):
        call_command("simulate", "--duration", "0", stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApprovalTask.objects.exists()


def run_manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DATABASE_URL", "TEMPORAL_"))}
    env.update(DJANGO_SECRET_KEY="simulate-test", **extra)
    return env


def test_an_unreachable_database_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    result = run_manage(
        "simulate", "--duration", "0", env=child_env(DATABASE_URL=f"postgres://nobody@127.0.0.1:{free_port()}/x")
    )
    assert result.returncode == 1
    assert result.stderr.startswith("CommandError: cannot use the database x: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr

    result = run_manage(
        "simulate", "--duration", "0", env=child_env(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    )
    assert result.returncode == 1
    assert "no such table" in result.stderr and "(run `python manage.py migrate`)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---- on the dev server -------------------------------------------------------------------------

SMALL_RUN = Config(
    approvals=6,
    orders=2,
    budgets=0,
    deployments=3,
    rate=10,
    duration=35,
    decide_after=(0.2, 1.0),
    reject_rate=0.25,
    timeout_rate=0.34,
    timeout_after=6,
    fail_rate=0.34,
    seed=16,
)


def options(config: Config) -> list[str]:
    return [
        *("--approvals", str(config.approvals), "--orders", str(config.orders)),
        *("--budgets", str(config.budgets), "--deployments", str(config.deployments)),
        *("--rate", str(config.rate), "--duration", str(config.duration)),
        *("--decide-after", ":".join(map(str, config.decide_after)), "--reject-rate", str(config.reject_rate)),
        *("--timeout-rate", str(config.timeout_rate), "--timeout-after", str(config.timeout_after)),
        *("--fail-rate", str(config.fail_rate), "--seed", str(config.seed)),
    ]


def describe_status(address: str, workflow_id: str) -> str:
    from temporalio.client import Client

    async def describe() -> str:
        client = await Client.connect(address)
        status = (await client.get_workflow_handle(workflow_id).describe()).status
        return status.name if status else ""

    return run_async(describe)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_small_simulation_is_decided_by_eligible_approvers_through_the_services(
    cast: dict[str, Any], temporal_settings: Any, worker: Any, dev_server: DevServer
) -> None:
    # What seed 16 draws (checked, so a change to the plan fails here rather than below):
    # one invalid artifact, one deployment whose build fails twice and which is approved,
    # and one, flaky once, given an execution timeout and left undecided.
    items, _ = make_plan(SMALL_RUN, random.Random(SMALL_RUN.seed), "t")
    deployments = [item for item in items if item.kind == "deployment"]
    assert sorted((d.params["fail_with"], d.params["flaky_failures"], bool(d.decide)) for d in deployments) == [
        ("", 1, False),
        ("", 2, True),
        ("InvalidArtifact", 0, False),
    ]

    out, err = io.StringIO(), io.StringIO()
    call_command("simulate", *options(SMALL_RUN), stdout=out, stderr=err)
    summary = out.getvalue()
    assert re.match(
        r"simulate: started 11 of 11 workflows in \d+\.\ds \([\d.]+ starts/s\); decided 6 \(4 approved, 2 rejected\); "
        r"closed 11; failed 1; timed out 1; start failures 0\n",
        summary,
    ), summary
    assert "approval expired 2" in summary
    tag = re.search(r"workflow ids contain (sim[0-9a-f]+)", summary).group(1)  # type: ignore[union-attr]
    assert "started 11/11" in err.getvalue()  # the progress lines

    # Approvals: made through create_request (a requester, the row's own request id) ...
    requests = ApprovalTask.objects.filter(description="Simulated request.")
    assert requests.count() == 6
    assert all(task.requester is not None and task.workflow_id == f"approval-{task.request_id}" for task in requests)
    # ... and decided through decide_task: one delivered, applied Decision per decided task,
    # by a demo user who was eligible for it, matching the workflow's own result.
    decisions = Decision.objects.select_related("task", "user").filter(task__in=ApprovalTask.objects.all())
    assert decisions.count() == 6
    for decision in decisions:
        task = decision.task
        assert decision.delivered_at is not None and decision.result == Decision.Result.APPLIED
        assert decision.user.username in {"bob", "carol"}
        assert ApprovalTask.objects.visible_to(decision.user).filter(pk=task.pk).exists()
        assert task.requester_id != decision.user.pk
        result = workflow_result(dev_server.address, task.workflow_id)
        assert (result["outcome"], result["decided_by"]) == (
            "approved" if decision.choice == "approve" else "rejected",
            decision.user.username,
        )
        assert task.status == result["outcome"]
    assert sorted(decisions.values_list("choice", flat=True)) == ["approve"] * 4 + ["reject"] * 2
    assert all(d.comment for d in decisions if d.choice == "reject")

    # Nobody decides the requests on the short policy: they escalated, then expired.
    expired = ApprovalTask.objects.filter(policy__slug="simulation-expire-6s")
    assert [(t.status, t.escalations, t.decisions.count()) for t in expired] == [("expired", 1, 0)] * 2

    # Deployments: retries visible, a final failure, a timeout whose gate was cancelled, not left pending.
    results = {}
    for number in (1, 2, 3):
        workflow_id = f"deploy-{tag}-{number}"
        results[describe_status(dev_server.address, workflow_id)] = workflow_id
    assert sorted(results) == ["COMPLETED", "FAILED", "TIMED_OUT"]
    deployed = workflow_result(dev_server.address, results["COMPLETED"])
    steps = {step["name"]: step["attempts"] for step in deployed["steps"]}
    assert deployed["outcome"] == "deployed" and steps["build"] == 3 and steps["rollout"] >= 1
    assert deployed["approved_by"] in {"bob", "carol"}
    gate = ApprovalTask.objects.get(workflow_id=f"approval-{results['TIMED_OUT']}")
    eventually(lambda: ApprovalTask.objects.get(pk=gate.pk).status == "cancelled", timeout=10)

    # Orders: the one above the threshold waited for its approval, the other did not.
    orders = [workflow_result(dev_server.address, f"order-{tag}-{number}") for number in (1, 2)]
    assert sorted(order["approval"] is not None for order in orders) == [False, True]
    for order in orders:
        expected = "confirmed" if not order["approval"] or order["approval"]["outcome"] == "approved" else "rejected"
        assert order["status"] == expected


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_it_cleanly_with_a_summary(cast: dict[str, Any], temporal_settings: Any) -> None:
    env = child_env(
        DATABASE_URL=test_database_url(),
        TEMPORAL_ADDRESS=temporal_settings.TEMPORAL_ADDRESS,
        TEMPORAL_TASK_QUEUE=temporal_settings.TEMPORAL_TASK_QUEUE,
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "simulate", "--approvals", "40", "--orders", "0", "--budgets", "0",
         "--deployments", "0", "--rate", "4", "--duration", "120"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: ApprovalTask.objects.filter(description="Simulated request.").count() >= 3, timeout=30)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert re.match(r"simulate: started (\d+) of 40 workflows interrupted after", stdout), stdout
    started = int(re.match(r"simulate: started (\d+)", stdout).group(1))  # type: ignore[union-attr]
    assert 3 <= started < 40
    assert "Traceback" not in stderr
    assert ApprovalTask.objects.filter(description="Simulated request.").count() == started
