"""Decision overhead: a decision through Tollgate's page against a raw SDK signal to the same workflow.

    .venv/bin/python bench/decision_bench.py [--samples 50] [--quick] [--json PATH]

Starts a Temporal dev server, a throwaway database (a SQLite file, or a database created for the run
when DATABASE_URL names a PostgreSQL server) and the real worker (``manage.py run_worker``, in a
process of its own as deployed). Every sample is an ``ApprovalWorkflow`` that alice requested
through ``services.create_request`` (what the request form calls), waiting at level 1 with its task
row pending, which bob then approves in one of three ways:

- page (ASGI): bob's logged-in session loads the task page (untimed: the approver reads it), then
  posts its form the way htmx does (``hx-post``: form-encoded, the page's CSRF token, ``HX-Request``)
  to ``/approvals/<id>/decide/``, through Django's async handler, each request run as daphne runs it
  (a thread of its own, the database connection cleaned up at its end): the judged figure, since
  Tollgate is deployed on ASGI;
- page (sync client): the same POST through Django's sync test client from a plain thread, as a
  WSGI server would run it (reported, not judged);
- raw signal (the baseline): ``handle.signal("decide", {"decision", "user", "comment",
  "decision_id"})`` from an SDK client.

All three are timed from the POST (or the signal) until ``handle.result()`` returns the workflow's
result, approved by bob: the same end condition for each, and the one that proves the workflow has
the decision. The page's answer must also say "applied" (the view waits for the workflow's answer,
up to TOLLGATE_DECISION_WAIT_SECONDS). The three take turns in a rotating order on the same server
and worker, so drift hits each of them alike. Target: page median / raw median at most 2.0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
    from django.test import AsyncClient, Client

TARGET = 2.0
PAGE, RAW, SYNC = "page (ASGI)", "raw signal", "page (sync client)"
WAYS = (PAGE, RAW, SYNC)
CSRF_INPUT = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass(frozen=True)
class Pending:
    """A task registered by its workflow and waiting at level 1."""

    pk: int
    workflow_id: str


@dataclass(frozen=True)
class Timing:
    """Seconds from the POST or the signal until its answer, and until the workflow's result."""

    answered: float
    done: float


def request_approval(n: int) -> Pending:
    """alice asks for an approval as the request form does, and we wait until its workflow has
    registered the task (pending): only then may bob decide it on the page."""
    from django.contrib.auth.models import User

    from approvals import services
    from approvals.models import ApprovalTask, Policy

    task = services.create_request(
        user=User.objects.get(username="alice"), title=f"Decision bench {n}", description="",
        policy=Policy.objects.get(slug="standard"), payload={"amount": f"{n} EUR"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ApprovalTask.objects.filter(pk=task.pk, status=ApprovalTask.Status.PENDING).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task.pk} was not registered within 60 s (is the worker up?)")
        time.sleep(0.02)
    return Pending(task.pk, task.workflow_id)


def decision_form(page: PageResponse, task: Pending) -> tuple[str, str, dict[str, str]]:
    """What htmx sends when bob clicks Approve on the task page: the URL, the form-encoded body
    (with the page's CSRF token) and the headers."""
    url = f"/approvals/{task.pk}/decide/"
    token = CSRF_INPUT.search(page.content)
    if page.status_code != 200 or token is None or f'hx-post="{url}"'.encode() not in page.content:
        raise RuntimeError(f"task {task.pk}: the page offers bob no decision form (HTTP {page.status_code})")
    body = urlencode({"csrfmiddlewaretoken": token.group(1).decode(), "comment": "", "choice": "approve"})
    headers = {
        "HX-Request": "true", "HX-Target": "decision", "HX-Current-URL": f"http://testserver/approvals/{task.pk}/",
    }  # fmt: skip
    return url, body, headers


def check_answer(response: PageResponse, task: Pending) -> None:
    """The page must say the decision was applied: the state in its htmx trigger, the message shown."""
    trigger = json.loads(response.headers.get("HX-Trigger", "{}")).get("tollgate:decided", {})
    if response.status_code != 200 or trigger.get("state") != "applied" or b"result-applied" not in response.content:
        raise RuntimeError(f"task {task.pk}: the page did not say applied (HTTP {response.status_code}, {trigger})")


async def wait_result(temporal: TemporalClient, task: Pending) -> None:
    """The end condition of every way: the workflow's own result, approved by bob."""
    result = await asyncio.wait_for(temporal.get_workflow_handle(task.workflow_id).result(), 60)
    if result.get("outcome") != "approved" or result.get("decided_by") != "bob":
        raise RuntimeError(f"{task.workflow_id} ended {result}, not approved by bob")


async def decide_on_page(browser: AsyncClient, temporal: TemporalClient, task: Pending) -> Timing:
    """Through Django's async handler, each request run as daphne runs it (``as_under_daphne``), so the
    view's sync code, its database connection and its Temporal call behave as deployed."""
    page = await as_under_daphne(browser.get(f"/approvals/{task.pk}/"))
    url, body, headers = decision_form(page, task)
    began = time.perf_counter()
    response = await as_under_daphne(
        browser.post(url, body, content_type="application/x-www-form-urlencoded", headers=headers)
    )
    answered = time.perf_counter()
    await wait_result(temporal, task)
    done = time.perf_counter()
    check_answer(response, task)
    return Timing(answered - began, done - began)


async def decide_on_sync_page(browser: Client, temporal: TemporalClient, task: Pending) -> Timing:
    """Through Django's sync handler from a thread with no event loop, as a WSGI server runs views."""

    def post() -> tuple[PageResponse, float, float]:
        url, body, headers = decision_form(browser.get(f"/approvals/{task.pk}/"), task)
        began = time.perf_counter()
        response = browser.post(url, body, content_type="application/x-www-form-urlencoded", headers=headers)
        return response, began, time.perf_counter()

    response, began, answered = await asyncio.to_thread(post)
    await wait_result(temporal, task)
    done = time.perf_counter()
    check_answer(response, task)
    return Timing(answered - began, done - began)


async def decide_by_signal(temporal: TemporalClient, task: Pending) -> Timing:
    """The baseline: the durable decision channel of the contract, straight from the SDK."""
    handle = temporal.get_workflow_handle(task.workflow_id)
    payload = {"decision": "approve", "user": "bob", "comment": "", "decision_id": uuid.uuid4().hex}
    began = time.perf_counter()
    await handle.signal("decide", payload)
    answered = time.perf_counter()
    await wait_result(temporal, task)
    return Timing(answered - began, time.perf_counter() - began)


async def run(address: str, workdir: Path, samples: int) -> dict[str, list[Timing]]:
    """The real worker in a process of its own, as deployed (the monitoring snapshot paused first, so
    its refresh never lands in the figures), then the measurement."""
    temporal = await TemporalClient.connect(address)
    await pause_snapshot_schedule(temporal)
    async with running_worker(temporal, workdir):
        return await measure(temporal, samples)


async def measure(temporal: TemporalClient, samples: int) -> dict[str, list[Timing]]:
    """``samples`` rounds (after one warm-up round); each round requests one approval per way, waits
    until all are pending, then decides them in an order that rotates from round to round."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import User
    from django.test import AsyncClient, Client

    bob = await User.objects.aget(username="bob")
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.aforce_login(bob)
    sync_browser = Client(enforce_csrf_checks=True)
    await asyncio.to_thread(sync_browser.force_login, bob)
    ways: dict[str, Callable[[Pending], Awaitable[Timing]]] = {
        PAGE: lambda task: decide_on_page(browser, temporal, task),
        RAW: lambda task: decide_by_signal(temporal, task),
        SYNC: lambda task: decide_on_sync_page(sync_browser, temporal, task),
    }
    timings: dict[str, list[Timing]] = {way: [] for way in WAYS}
    request = sync_to_async(request_approval)
    began = time.monotonic()
    for n in range(-1, samples):  # round -1 warms up connections, templates and the worker's cache
        tasks = [await request(n * len(WAYS) + i) for i in range(len(WAYS))]
        order = WAYS[n % len(WAYS) :] + WAYS[: n % len(WAYS)]
        for way, task in zip(order, tasks, strict=True):
            timing = await ways[way](task)
            if n >= 0:
                timings[way].append(timing)
        if n >= 0 and (n + 1) % 10 == 0:
            print(f"  {n + 1} of {samples} rounds ({time.monotonic() - began:.0f} s)", flush=True)
    return timings


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def p95_ms(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000


def report(timings: dict[str, list[Timing]], engine: str, args: argparse.Namespace) -> None:
    done = {way: [t.done for t in timings[way]] for way in WAYS}
    answered = {way: [t.answered for t in timings[way]] for way in WAYS}
    base, base_p95 = ms(done[RAW]), p95_ms(done[RAW])
    print(f"\n{len(done[RAW])} decisions per way on {engine}, until the workflow's result (ms):")
    print(f"{'way':<20} {'median':>8} {'p95':>8} {'ratio':>6}   {'answer median':>13}")
    for way in WAYS:
        print(
            f"{way:<20} {ms(done[way]):8.1f} {p95_ms(done[way]):8.1f} {ms(done[way]) / base:6.2f}"
            f"   {ms(answered[way]):13.1f}"
        )
    page = ms(done[PAGE])
    met = page / base <= TARGET
    print(
        f"page (ASGI) / raw signal at the median: {page / base:.2f} (target <= {TARGET}): {'met' if met else 'MISSED'}"
    )

    def row(figure: str, value: float, baseline: float | None, target: str, judged: bool) -> dict[str, Any]:
        ratio = value / baseline if baseline else None
        return {
            "figure": figure, "value": round(value, 2), "baseline": round(baseline, 2) if baseline else None,
            "ratio": round(ratio, 3) if ratio else None, "unit": "ms", "target": target,
            "met": (ratio is not None and ratio <= TARGET) if judged else None,
        }  # fmt: skip

    rows = [
        row("decision through the page (ASGI), median until the workflow has it", page, base, f"<= {TARGET}x", True),
        row("decision through the page (ASGI), p95", p95_ms(done[PAGE]), base_p95, "report", False),
        row("decision through the page, sync client (as under WSGI), median", ms(done[SYNC]), base, "report", False),
        row("the page's answer to the POST (ASGI), median", ms(answered[PAGE]), None, "report", False),
    ]
    notes = [
        f"{len(done[RAW])} interleaved decisions per way (rotating order) on {engine}, one dev server and one"
        " worker (manage.py run_worker); every way timed until handle.result() is approved by bob; baseline:"
        " raw SDK signal decide",
    ]
    if args.json:
        write_result(args.json, {"bench": "decision", "rows": rows, "notes": notes, "machine": machine_info()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50, help="decisions per way")
    parser.add_argument("--quick", action="store_true", help="8 decisions per way")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.quick:
        args.samples = 8

    with approval_bench("decision", web=True) as (workdir, _server, address, engine):
        print(f"decision bench on {engine}: {args.samples} decisions per way", flush=True)
        timings = asyncio.run(run(address, workdir, args.samples))
    report(timings, engine, args)


if __name__ == "__main__":
    main()
