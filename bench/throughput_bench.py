"""Throughput: approvals requested and decided per second through Tollgate, against raw SDK start + signal.

    .venv/bin/python bench/throughput_bench.py [--approvals 300] [--concurrency 20] [--quick] [--json PATH]

Starts a Temporal dev server, a throwaway database (a SQLite file, or a database created for the run
when DATABASE_URL names a PostgreSQL server) and the real worker (``manage.py run_worker``, in a
process of its own as deployed). ``--concurrency`` approvals are under way at any time, each one
from request to outcome:

- through Tollgate: alice posts the request form (``/approvals/new/``, which saves the request with
  ``services.create_request`` and starts its workflow), the approval waits until its task is
  registered (pending), bob posts his decision the way the task page's htmx form does
  (``/approvals/<id>/decide/``, which waits for the workflow's answer up to
  TOLLGATE_DECISION_WAIT_SECONDS: it must say "applied", or "delivered" when that wait ran out).
  Both POSTs go through Django's async handler, each run as daphne runs it (a thread of its own, the
  database connection cleaned up at its end), with the CSRF checks on and one logged-in session per
  person and slot;
- raw (the baseline): an SDK client starts ``ApprovalWorkflow`` with the input the form's request
  gets (the contract's path for any Temporal client), waits until its task is registered, and
  signals ``decide``.

Both run the same workflow with the same activities on the same worker: the baseline skips only
Tollgate's web and service layer. An approval is done when its workflow has completed approved by
bob (``handle.result()``). Both paths notice registration alike: one poller reads the task rows every
50 ms. The paths take turns in four rounds (Tollgate, raw, raw, Tollgate) after a warm-up round of
each, so a drift in the machine's speed hits both alike; a path's rate is its approvals over the
seconds of its rounds. Target: Tollgate / raw at least 0.7. It also prints the CPU time each process
(this one, the worker, the Temporal server) spent per approval on each path: on a small machine that,
more than any wait, decides the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from temporalio.client import Client as TemporalClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PageResponse,
    approval_bench,
    as_under_daphne,
    machine_info,
    pause_snapshot_schedule,
    running_worker,
    write_result,
)

if TYPE_CHECKING:
    from django.test import AsyncClient

TARGET = 0.7
TOLLGATE, RAW = "Tollgate", "raw SDK"
CSRF_HEADER = re.compile(r'"X-CSRFToken": "([^"]+)"')  # base.html's hx-headers, on every page
FORM = "application/x-www-form-urlencoded"
POLL_SECONDS = 0.05
BENCH_PROCESS = "bench process (web side and clients)"


class Registrations:
    """Waits for task rows to turn pending, with one query per tick for every approval under way
    (a query per approval would load the database more than the approvals do)."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[tuple[int, str]]] = {}

    async def wait(self, *, pk: int | None = None, workflow_id: str = "") -> tuple[int, str]:
        """(pk, workflow id) once the task, known by either, is pending."""
        future: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.waiting[f"pk:{pk}" if pk is not None else workflow_id] = future
        return await asyncio.wait_for(future, 60)

    async def run(self) -> None:
        from asgiref.sync import sync_to_async

        read = sync_to_async(pending_rows, thread_sensitive=False)
        while True:
            if self.waiting:
                keys = list(self.waiting)
                try:
                    rows = await read(keys)
                except Exception as exc:  # every waiter hears why, rather than timing out
                    for waiter in self.waiting.values():
                        if not waiter.done():
                            waiter.set_exception(exc)
                    raise
                for pk, workflow_id in rows:
                    for key in (f"pk:{pk}", workflow_id):
                        future = self.waiting.pop(key, None)
                        if future is not None and not future.done():
                            future.set_result((pk, workflow_id))
            await asyncio.sleep(POLL_SECONDS)


def pending_rows(keys: list[str]) -> list[tuple[int, str]]:
    from django.db.models import Q

    from approvals.models import ApprovalTask

    pks = [int(key[3:]) for key in keys if key.startswith("pk:")]
    workflow_ids = [key for key in keys if not key.startswith("pk:")]
    rows = ApprovalTask.objects.filter(status=ApprovalTask.Status.PENDING)
    return list(rows.filter(Q(pk__in=pks) | Q(workflow_id__in=workflow_ids)).values_list("pk", "workflow_id"))


@dataclass
class Slot:
    """One lane of approvals: alice's and bob's logged-in sessions, with their CSRF tokens."""

    alice: AsyncClient
    bob: AsyncClient
    alice_token: str
    bob_token: str


async def open_slot() -> Slot:
    from django.contrib.auth.models import User
    from django.test import AsyncClient

    sessions, tokens = [], []
    for username, path in (("alice", "/approvals/new/"), ("bob", "/approvals/")):
        browser = AsyncClient(enforce_csrf_checks=True)
        await browser.aforce_login(await User.objects.aget(username=username))
        page = await as_under_daphne(browser.get(path))
        token = CSRF_HEADER.search(page.content.decode())
        if page.status_code != 200 or token is None:
            raise RuntimeError(f"{username}: {path} answered HTTP {page.status_code} without a CSRF token")
        sessions.append(browser)
        tokens.append(token.group(1))
    return Slot(sessions[0], sessions[1], tokens[0], tokens[1])


async def wait_approved(temporal: TemporalClient, workflow_id: str) -> None:
    """Done: the workflow has completed, approved by bob."""
    result = await asyncio.wait_for(temporal.get_workflow_handle(workflow_id).result(), 60)
    if result.get("outcome") != "approved" or result.get("decided_by") != "bob":
        raise RuntimeError(f"{workflow_id} ended {result}, not approved by bob")


class Approvals:
    """The two ways of taking one approval from request to outcome."""

    def __init__(self, temporal: TemporalClient, registrations: Registrations, policy_pk: int) -> None:
        self.temporal, self.registrations, self.policy_pk = temporal, registrations, policy_pk
        self.answers: Counter[str] = Counter()  # what the decision page said, over the measured rounds

    async def through_tollgate(self, n: int, slot: Slot) -> None:
        form = {
            "csrfmiddlewaretoken": slot.alice_token, "title": f"Throughput bench {n}", "description": "",
            "request_type": "", "policy": str(self.policy_pk), "key_1": "amount", "value_1": f"{n} EUR",
        }  # fmt: skip
        response = await as_under_daphne(slot.alice.post("/approvals/new/", urlencode(form), content_type=FORM))
        if response.status_code != 302:
            raise RuntimeError(f"the request form answered HTTP {response.status_code}")
        slot.alice.cookies.pop("messages", None)  # the flash message is for the page we do not load
        pk, workflow_id = await self.registrations.wait(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))
        decision = urlencode({"csrfmiddlewaretoken": slot.bob_token, "comment": "", "choice": "approve"})
        headers = {"HX-Request": "true", "HX-Target": "decision", "X-CSRFToken": slot.bob_token}
        answer = await as_under_daphne(
            slot.bob.post(f"/approvals/{pk}/decide/", decision, content_type=FORM, headers=headers)
        )
        self.answers[answer_state(answer, pk)] += 1
        await wait_approved(self.temporal, workflow_id)

    async def raw(self, n: int, slot: Slot) -> None:
        from django.conf import settings

        request_id = f"raw-{uuid.uuid4().hex[:12]}"
        data = {
            "request_id": request_id, "title": f"Throughput bench {n}", "description": "", "requested_by": "alice",
            "payload": {"amount": f"{n} EUR"}, "policy": "standard",
        }  # fmt: skip
        handle = await self.temporal.start_workflow(
            "ApprovalWorkflow", data, id=f"approval-{request_id}", task_queue=settings.TEMPORAL_TASK_QUEUE
        )
        await self.registrations.wait(workflow_id=handle.id)
        await handle.signal("decide", {"decision": "approve", "user": "bob", "comment": "", "decision_id": request_id})
        await wait_approved(self.temporal, handle.id)


def answer_state(response: PageResponse, pk: int) -> str:
    """What the decision page told bob: "applied", or "delivered" when the workflow had not applied it
    within TOLLGATE_DECISION_WAIT_SECONDS (an honest answer, and the workflow still completes); any other
    state fails the run."""
    trigger = json.loads(response.headers.get("HX-Trigger", "{}")).get("tollgate:decided", {})
    state = str(trigger.get("state", ""))
    if response.status_code != 200 or state not in ("applied", "delivered"):
        raise RuntimeError(f"task {pk}: the decision page answered HTTP {response.status_code}, {trigger}")
    return state


async def run_round(
    approve: Callable[[int, Slot], Awaitable[None]], numbers: range, slots: list[Slot]
) -> tuple[float, list[float]]:
    """Every slot takes the next number until none is left: (seconds for the round, each approval's seconds)."""
    todo: Iterator[int] = iter(numbers)
    latencies: list[float] = []

    async def lane(slot: Slot) -> None:
        for n in todo:
            began = time.perf_counter()
            await approve(n, slot)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as lanes:  # one lane failing stops the others cleanly
            for slot in slots:
                lanes.create_task(lane(slot))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first failure says what went wrong
    return time.perf_counter() - began, latencies


@dataclass
class Totals:
    """One path over its measured rounds."""

    approvals: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: Counter[str] = field(default_factory=Counter)  # CPU seconds per process

    @property
    def rate(self) -> float:
        return self.approvals / self.seconds

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux), to show where an approval's work goes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    address: str, server_pid: int, workdir: Path, approvals: int, concurrency: int
) -> tuple[dict[str, Totals], Counter[str]]:
    """The real worker in a process of its own, as deployed (the monitoring snapshot paused first, so
    its refresh never lands in the figures), then the measurement."""
    temporal = await TemporalClient.connect(address)
    await pause_snapshot_schedule(temporal)
    async with running_worker(temporal, workdir) as worker:
        processes = {BENCH_PROCESS: os.getpid(), "worker": worker.pid, "Temporal server": server_pid}
        return await measure(temporal, approvals, concurrency, processes)


async def measure(
    temporal: TemporalClient, approvals: int, concurrency: int, processes: dict[str, int]
) -> tuple[dict[str, Totals], Counter[str]]:
    """Each path's totals (with the CPU each process spent in its rounds), and what the decision page
    answered in the measured Tollgate rounds."""
    from approvals.models import Policy

    registrations = Registrations()
    poller = asyncio.create_task(registrations.run())
    ways = Approvals(temporal, registrations, (await Policy.objects.aget(slug="standard")).pk)
    paths = {TOLLGATE: ways.through_tollgate, RAW: ways.raw}
    slots = [await open_slot() for _ in range(concurrency)]
    totals = {path: Totals() for path in paths}
    half = approvals // 2
    rounds = [(TOLLGATE, approvals - half), (RAW, approvals - half), (RAW, half), (TOLLGATE, half)]
    start = 0
    try:
        for path in paths:  # warm-up: connections, templates, the worker's caches
            await run_round(paths[path], range(start, start + concurrency), slots)
            start += concurrency
        ways.answers.clear()
        for number, (path, count) in enumerate(rounds, 1):
            cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
            seconds, latencies = await run_round(paths[path], range(start, start + count), slots)
            start += count
            print(
                f"  round {number}, {path}: {count} approvals in {seconds:.1f} s ({count / seconds:.1f}/s)", flush=True
            )
            totals[path].approvals += count
            totals[path].seconds += seconds
            totals[path].latencies += latencies
            totals[path].cpu.update({name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()})
    finally:
        poller.cancel()
    return totals, ways.answers


def report(totals: dict[str, Totals], answers: Counter[str], engine: str, args: argparse.Namespace) -> None:
    tollgate, raw = totals[TOLLGATE], totals[RAW]
    ratio = tollgate.rate / raw.rate
    met = ratio >= TARGET
    print(f"\n{args.approvals} approvals per path on {engine}, {args.concurrency} under way at a time:")
    print(f"{'path':<10} {'approvals/s':>12} {'median latency':>15}")
    for path in (TOLLGATE, RAW):
        print(f"{path:<10} {totals[path].rate:12.1f} {totals[path].median_ms:12.0f} ms")
    print(f"Tollgate / raw: {ratio:.2f} (target >= {TARGET}): {'met' if met else 'MISSED'}")
    said = ", ".join(f"{state} {count}" for state, count in sorted(answers.items()))
    print(f"the decision page answered: {said}")
    cpu = {path: ", ".join(f"{name} {seconds / totals[path].approvals * 1000:.0f} ms"
                           for name, seconds in totals[path].cpu.items()) for path in (TOLLGATE, RAW)}  # fmt: skip
    for path in (TOLLGATE, RAW):
        print(f"CPU per approval, {path}: {cpu[path]}")
    rows: list[dict[str, Any]] = [
        {
            "figure": f"approvals requested and decided per second, {args.concurrency} at a time",
            "value": round(tollgate.rate, 2), "baseline": round(raw.rate, 2), "ratio": round(ratio, 3),
            "unit": "/s", "target": f">= {TARGET}x", "met": met,
        },
        {
            "figure": "one approval from request to approved, median", "value": round(tollgate.median_ms, 1),
            "baseline": round(raw.median_ms, 1), "ratio": round(tollgate.median_ms / raw.median_ms, 3),
            "unit": "ms", "target": "report", "met": None,
        },
    ]  # fmt: skip
    notes = [
        f"{args.approvals} approvals per path on {engine} in rounds Tollgate, raw, raw, Tollgate (after a warm-up"
        f" round each), {args.concurrency} under way at a time; Tollgate: request form POST + htmx decision POST"
        " through Django's async handler; raw: SDK start + signal decide; done when the workflow completed approved;"
        f" the decision page answered {said}",
        f"CPU per approval: Tollgate: {cpu[TOLLGATE]}; raw: {cpu[RAW]}",
    ]
    if args.json:
        write_result(args.json, {"bench": "throughput", "rows": rows, "notes": notes, "machine": machine_info()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--approvals", type=int, default=300, help="approvals per path")
    parser.add_argument("--concurrency", type=int, default=20, help="approvals under way at a time")
    parser.add_argument("--quick", action="store_true", help="40 approvals per path")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.quick:
        args.approvals = 40

    with approval_bench("throughput", web=True) as (workdir, server, address, engine):
        print(f"throughput bench on {engine}: {args.approvals} approvals per path", flush=True)
        totals, answers = asyncio.run(run(address, server.pid, workdir, args.approvals, args.concurrency))
    report(totals, answers, engine, args)


if __name__ == "__main__":
    main()
