"""The load generator behind ``python manage.py simulate``, importable by bench scripts.

It fills Temporal and the read model with a realistic mix, through the same paths people use:

- approval requests through ``services.create_request`` (the request form's path: the row
  first, the workflow started on commit); a share of them on a short policy this module
  creates, left alone so they escalate and expire;
- orders (``OrderSagaWorkflow``, some above the approval threshold), team budgets
  (``TeamBudgetWorkflow`` with a few spends, one above the limit) and deployments
  (``DeploymentPipelineWorkflow``: flaky builds, some invalid artifacts, some with an
  execution timeout shorter than their approval wait), started as their reference workflows;
- a population of approvers, the demo cast, deciding the tasks those produce through
  ``services.decide_task`` (the task page's path), after a random delay, each decision by
  one of the cast members eligible for the task at that moment.

Everything random comes from one seeded ``random.Random`` drawn up front (the plan), so a
seed gives the same workflows, inputs, verdicts and delays; only timing varies. Shares are
exact quotas (``round(n * rate)``), not coin flips, so small runs are predictable too.

``Simulation(config).run()`` is a coroutine: database work runs on a thread pool of its own
(``sync_to_async(thread_sensitive=False)``, so the services' own Temporal calls come back to
this loop and share its client), Temporal calls go through ``workflows.client``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connections, transaction
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as WorkflowTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from approvals import demo, services
from approvals.models import ApprovalTask, Policy, PolicyLevel
from workflows import client as temporal

T = TypeVar("T")
APPROVERS = [username for username, *_ in demo.CAST]  # eligibility decides who may act on a task
REQUESTERS = ("alice", "dave")
ABOVE_THRESHOLD_SHARE = 0.4  # of orders, above OrderInput's default approval threshold (1000)
POLL_SECONDS = 0.5  # how often the population looks for new pending tasks
RETRY_NOBODY_SECONDS = 2.0  # nobody eligible yet (waiting for an escalation): look again after this
MAX_PARALLEL_STARTS = 16
MAX_PROBLEMS = 50


class SimulationError(Exception):
    """The simulation cannot run (or go on): the database or Temporal is not there."""


@dataclass(frozen=True)
class Config:
    approvals: int = 20
    orders: int = 6
    budgets: int = 2
    deployments: int = 6
    rate: float = 2.0  # starts per second
    duration: float = 300.0  # seconds the approvers keep deciding; 0: start everything and return
    decide_after: tuple[float, float] = (5.0, 60.0)  # random delay before an approver decides
    reject_rate: float = 0.2
    timeout_rate: float = 0.15  # approvals nobody decides (short policy) and deployments that time out
    fail_rate: float = 0.2  # deployments whose artifact is invalid
    timeout_after: int = 60  # seconds per level of the short policy; execution timeout of those deployments
    seed: int | None = None

    def problems(self) -> list[str]:
        found = []
        for name in ("approvals", "orders", "budgets", "deployments"):
            if getattr(self, name) < 0:
                found.append(f"--{name} must be zero or more")
        for name in ("reject_rate", "timeout_rate", "fail_rate"):
            if not 0 <= getattr(self, name) <= 1:
                found.append(f"--{name.replace('_', '-')} must be between 0 and 1")
        if not self.rate > 0:
            found.append("--rate must be more than 0")
        if self.duration < 0:
            found.append("--duration must be zero or more")
        low, high = self.decide_after
        if not 0 <= low <= high:
            found.append("--decide-after must be MIN:MAX with 0 <= MIN <= MAX")
        if self.timeout_after < 1:
            found.append("--timeout-after must be at least 1 second")
        return found

    @property
    def total(self) -> int:
        return self.approvals + self.orders + self.budgets + self.deployments


@dataclass(frozen=True)
class Verdict:
    """How the population will decide one approval task."""

    reject: bool
    delay: float  # seconds after the task is first seen pending
    pick: float  # which eligible approver decides, as a fraction of the eligible list


@dataclass(frozen=True)
class Item:
    """One workflow to start."""

    kind: str
    key: str  # the business key: order_id, deployment_id, team; "@<n>" for the n-th approval request
    params: dict[str, Any]
    decide: list[str] = field(default_factory=list)  # approval workflow ids the population decides
    execution_timeout: float | None = None
    short_policy: bool = False  # an approval on the short policy, left undecided

    @property
    def workflow_id(self) -> str:
        return {"order": f"order-{self.key}", "budget": f"budget-{self.key}", "deployment": f"deploy-{self.key}"}.get(
            self.kind, ""
        )


@dataclass
class Stats:
    planned: int = 0
    started: int = 0
    start_failed: int = 0
    decided: int = 0
    decisions: Counter[str] = field(default_factory=Counter)  # approve / reject
    deciders: Counter[str] = field(default_factory=Counter)  # username -> decisions applied
    lost: int = 0  # decisions that came too late or after another approver's
    closed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # "kind outcome" -> count
    failed: int = 0  # workflows that failed (start failures counted apart)
    timed_out: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    seed: int = 0
    tag: str = ""
    problems: list[str] = field(default_factory=list)

    start_seconds: float = 0.0  # from the first start to the latest one done

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:  # the first ones tell the story
            self.problems.append(text)

    @property
    def start_rate(self) -> float:
        """Starts per second while starting (what --rate asks for)."""
        return self.started / self.start_seconds if self.start_seconds > 0 else 0.0

    def line(self) -> str:
        """The progress line."""
        return (
            f"{self.elapsed:6.1f}s  started {self.started}/{self.planned} ({self.start_rate:.1f}/s)  "
            f"decided {self.decided}  closed {self.closed}  failed {self.failed + self.start_failed}  "
            f"timed out {self.timed_out}"
        )

    def summary(self) -> list[str]:
        how = "interrupted after" if self.interrupted else "in"
        lines = [
            f"simulate: started {self.started} of {self.planned} workflows {how} {self.elapsed:.1f}s "
            f"({self.start_rate:.2f} starts/s); decided {self.decided} ({self.decisions['approve']} approved, "
            f"{self.decisions['reject']} rejected); closed {self.closed}; failed {self.failed}; "
            f"timed out {self.timed_out}; start failures {self.start_failed}",
        ]
        if self.outcomes:
            lines.append("  outcomes: " + ", ".join(f"{key} {n}" for key, n in sorted(self.outcomes.items())))
        if self.deciders:
            lines.append("  decided by: " + ", ".join(f"{user} {n}" for user, n in sorted(self.deciders.items())))
        if self.lost:
            lines.append(f"  decisions too late or after another approver's: {self.lost}")
        lines.append(f"  seed {self.seed}; workflow ids contain {self.tag}")
        lines.extend(f"  problem: {problem}" for problem in self.problems[:5])
        return lines


# ---- the plan: everything random, drawn up front ----------------------------------------

REQUESTS = [
    ("New laptop for {who}", {"amount": "{n}0 EUR", "vendor": "Framework"}),
    ("Conference travel: {event}", {"amount": "{n}5 EUR", "dates": "three days in May"}),
    ("Production database access for {who}", {"duration": "7 days", "reason": "on-call rota"}),
    ("Software licence: {tool}", {"amount": "{n} EUR per year", "seats": "5"}),
    ("Contractor extension for {who}", {"weeks": "6", "rate": "{n} EUR per day"}),
    ("Office furniture for {team}", {"amount": "{n}0 EUR", "items": "2 desks, 2 chairs"}),
]
WORDS = {
    "who": ["the design team", "Priya", "the on-call rota", "Jonas", "the data team", "Marta"],
    "event": ["PyCon", "DjangoCon", "KubeCon", "FOSDEM", "Strange Loop"],
    "tool": ["Figma", "PyCharm", "Sentry", "Grafana Cloud"],
    "team": ["support", "sales", "platform", "finance"],
}
SKUS = ["desk", "lamp", "chair", "monitor", "keyboard", "dock", "headset"]
TEAMS = ["design", "platform", "sales", "support", "data", "finance"]
SERVICES = ["checkout", "search", "billing", "catalog", "auth", "notifications"]
REJECT_REASONS = ["Over budget this quarter", "Needs a second quote", "Not a priority now", "Missing details"]


def make_plan(config: Config, rng: random.Random, tag: str) -> tuple[list[Item], dict[str, Verdict]]:
    """The workflows to start, in start order, and the verdict for every approval the
    population will decide (keyed by workflow id; ``@<n>`` for a request whose id the
    service picks when it is created)."""
    items: list[Item] = []
    expire = set(rng.sample(range(config.approvals), round(config.approvals * config.timeout_rate)))
    for number in range(config.approvals):
        title, payload = rng.choice(REQUESTS)
        words = {key: rng.choice(values) for key, values in WORDS.items()}
        figure = str(rng.randint(12, 480))
        params: dict[str, Any] = {
            "title": title.format(**words),
            "payload": {key: value.format(n=figure) for key, value in payload.items()},
            "requester": rng.choice(REQUESTERS),
        }
        short = number in expire
        items.append(Item("approval", f"@{number}", params, [] if short else [f"@{number}"], short_policy=short))

    above = set(rng.sample(range(config.orders), math.ceil(config.orders * ABOVE_THRESHOLD_SHARE)))
    for number in range(config.orders):
        order_id = f"{tag}-{number + 1}"
        amount = rng.uniform(1200, 6000) if number in above else rng.uniform(40, 900)
        params = {
            "order_id": order_id,
            "amount": round(amount, 2),
            "customer": rng.choice(REQUESTERS),
            "items": [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in rng.sample(SKUS, rng.randint(1, 3))],
        }
        items.append(Item("order", order_id, params, [f"approval-order-{order_id}"] if number in above else []))

    for number in range(config.budgets):
        team = f"{rng.choice(TEAMS)}-{tag}-{number + 1}"
        spends = [
            {"amount": round(rng.uniform(low, high), 2), "by": rng.choice(REQUESTERS), "reason": why, "spend_id": key}
            for key, why, low, high in (("s1", "books", 20, 300), ("s2", "a monitor", 600, 1500),
                                        ("s3", "coffee", 20, 300))
        ]  # fmt: skip
        params = {"team": team, "balance": 5000, "limit": 500, "spends": spends}
        items.append(Item("budget", team, params, [f"approval-budget-{team}-s2"]))

    failing = set(rng.sample(range(config.deployments), round(config.deployments * config.fail_rate)))
    others = [number for number in range(config.deployments) if number not in failing]
    late = set(rng.sample(others, min(len(others), round(config.deployments * config.timeout_rate))))
    for number in range(config.deployments):
        deployment_id = f"{tag}-{number + 1}"
        params = {
            "deployment_id": deployment_id,
            "service": rng.choice(SERVICES),
            "version": f"{rng.randint(1, 4)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            "requested_by": rng.choice(REQUESTERS),
            "flaky_failures": 0 if number in failing else rng.randint(1, 3),
            "fail_with": "InvalidArtifact" if number in failing else "",
            "rollout_seconds": round(rng.uniform(2, 6), 1),
        }
        decide = [] if number in failing or number in late else [f"approval-deploy-{deployment_id}"]
        timeout = float(config.timeout_after) if number in late else None
        items.append(Item("deployment", deployment_id, params, decide, execution_timeout=timeout))

    rng.shuffle(items)
    keys = [key for item in items for key in item.decide]
    rejected = set(rng.sample(keys, round(len(keys) * config.reject_rate)))
    low, high = config.decide_after
    verdicts = {key: Verdict(key in rejected, rng.uniform(low, high), rng.random()) for key in keys}
    return items, verdicts


# ---- database side (runs on the simulation's thread pool) -------------------------------


def check_database() -> None:
    """Raise ``SimulationError`` unless the database answers and is migrated."""
    try:
        ApprovalTask.objects.exists()
    except DatabaseError as exc:
        name = connections["default"].settings_dict.get("NAME")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (run `python manage.py migrate`)" if "no such table" in first or "does not exist" in first else ""
        raise SimulationError(f"cannot use the database {name}: {first}{hint}") from None
    finally:
        connections.close_all()


def short_policy(seconds: int) -> Policy:
    """Approvers for ``seconds``, then managers for ``seconds``, then expired. Shorter than the
    editor allows (one minute), so a demo sees escalations and expiries in seconds."""
    policy, created = Policy.objects.get_or_create(
        slug=f"simulation-expire-{seconds}s",
        defaults={
            "name": f"Simulation: expires after 2 x {seconds}s",
            "description": "Created by `manage.py simulate` for the requests nobody decides.",
            "final_action": Policy.FinalAction.EXPIRE,
        },
    )
    if created:
        for order, group in enumerate(("approvers", "managers"), start=1):
            level = PolicyLevel.objects.create(policy=policy, order=order, timeout=timedelta(seconds=seconds))
            level.groups.add(Group.objects.get(name=group))
    return policy


# ---- the run ----------------------------------------------------------------------------


class Simulation:
    def __init__(
        self,
        config: Config,
        *,
        on_progress: Callable[[Stats], None] | None = None,
        progress_every: float = 1.0,
    ) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else random.SystemRandom().randrange(1_000_000)
        self.tag = f"sim{uuid.uuid4().hex[:6]}"  # not from the seed: ids must differ from run to run
        self.items, self.verdicts = make_plan(config, random.Random(self.seed), self.tag)
        self.stats = Stats(planned=len(self.items), seed=self.seed, tag=self.tag)
        self.on_progress = on_progress
        self.progress_every = progress_every
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="simulate")
        self._watchers: set[asyncio.Task[None]] = set()
        self._deciding: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[None]] = set()
        self._seen: dict[int, float] = {}  # task pk -> when to decide
        self._seen_ids: dict[str, int] = {}  # workflow id -> task pk, once seen pending
        self._verdict_of: dict[int, Verdict] = {}
        self._done: set[int] = set()
        self._fatal = ""
        self._first_start = 0.0
        self._approvers: list[Any] = []
        self._requesters: dict[str, Any] = {}
        self._short: Policy | None = None

    def stop(self) -> None:
        """Stop soon (from a signal handler or another thread): no new starts or decisions."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def in_thread() -> T:
            try:
                return fn(*args, **kwargs)
            finally:
                connections.close_all()  # this thread's connections only; none outlives the job

        return await sync_to_async(in_thread, thread_sensitive=False, executor=self._executor)()

    async def run(self) -> Stats:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        began = time.monotonic()
        try:
            await self._db(check_database)
            try:
                await temporal.ping()
            except temporal.TemporalUnavailable as exc:
                raise SimulationError(str(exc)) from None  # it names the address
            except temporal.TemporalError as exc:
                raise SimulationError(f"Temporal at {settings.TEMPORAL_ADDRESS} refused: {exc}") from None
            self._approvers, self._requesters, self._short = await self._db(self._prepare)
            reporter = asyncio.create_task(self._report(began))
            population = asyncio.create_task(self._population()) if self.config.duration > 0 else None
            try:
                await self._start_all()
                if self.config.duration > 0:
                    await self._until_done(began + self.config.duration)
            finally:
                self.stats.interrupted = self._stop.is_set() and not self._fatal
                self._stop.set()
                for task in [*self._watchers, *([population] if population else [])]:
                    task.cancel()
                await asyncio.gather(*self._starting, *self._deciding, *self._watchers, return_exceptions=True)
                if population:
                    await asyncio.gather(population, return_exceptions=True)
                self.stats.elapsed = time.monotonic() - began
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
        finally:
            self._executor.shutdown(wait=True)
        if self._fatal:
            raise SimulationError(self._fatal)
        return self.stats

    def _prepare(self) -> tuple[list[Any], dict[str, Any], Policy | None]:
        """The demo cast (created when missing) and the short policy."""
        demo.seed_users_and_policies()
        users = {user.username: user for user in get_user_model().objects.filter(username__in=APPROVERS)}
        approvers = [users[name] for name in APPROVERS]
        policy = short_policy(self.config.timeout_after) if any(i.short_policy for i in self.items) else None
        return approvers, {name: users[name] for name in REQUESTERS}, policy

    # ---- starting ----

    async def _start_all(self) -> None:
        assert self._stop is not None
        first = self._first_start = time.monotonic()
        limit = asyncio.Semaphore(MAX_PARALLEL_STARTS)
        for number, item in enumerate(self.items):
            delay = first + number / self.config.rate - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
            if self._stop.is_set():
                break
            await limit.acquire()
            task = asyncio.create_task(self._start(item))
            task.add_done_callback(lambda _: limit.release())
            self._track(self._starting, task)
        await asyncio.gather(*self._starting, return_exceptions=True)

    def _track(self, tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _start(self, item: Item) -> None:
        try:
            if item.kind == "approval":
                workflow_ids = [await self._db(self._request, item)]
                if item.decide:  # the verdict planned for "@n" belongs to this workflow id from now on
                    self.verdicts[workflow_ids[0]] = self.verdicts.pop(item.key)
            else:
                workflow_ids = await self._start_reference(item)
        except (temporal.TemporalError, DatabaseError, ValueError) as exc:
            self.stats.start_failed += 1
            self.stats.problem(f"{item.kind} {item.params.get('title') or item.key}: {exc}")
            # The service keeps a failed request for the relay, whatever went wrong: ask
            # whether Temporal is still there, and stop rather than fail every start.
            try:
                await temporal.ping()
            except temporal.TemporalError as gone:
                self._fail(f"lost Temporal at {settings.TEMPORAL_ADDRESS}: {gone}")
            return
        self.stats.started += 1
        self.stats.start_seconds = time.monotonic() - self._first_start
        if self.config.duration > 0:
            for workflow_id in workflow_ids:
                self._track(self._watchers, asyncio.create_task(self._watch(item.kind, workflow_id)))

    def _request(self, item: Item) -> str:
        """Through the request form's service: the row, then the workflow on commit."""
        with transaction.atomic():
            task = services.create_request(
                user=self._requesters[item.params["requester"]],
                title=item.params["title"],
                description="Simulated request.",
                policy=self._short if item.short_policy else None,
                payload=item.params["payload"],
            )
        task.refresh_from_db()
        if task.status == ApprovalTask.Status.STARTING and not task.run_id:
            raise ValueError(f"workflow not started: {task.start_error or 'unknown reason'}")
        return task.workflow_id

    async def _start_reference(self, item: Item) -> list[str]:
        queue = settings.TEMPORAL_TASK_QUEUE
        timeout = timedelta(seconds=item.execution_timeout) if item.execution_timeout else None
        workflow_type = {"order": "OrderSagaWorkflow", "budget": "TeamBudgetWorkflow"}.get(
            item.kind, "DeploymentPipelineWorkflow"
        )
        arguments = {key: value for key, value in item.params.items() if key != "spends"}

        async def start(client: Client) -> None:
            handle = await client.start_workflow(
                workflow_type,
                arguments,
                id=item.workflow_id,
                task_queue=queue,
                execution_timeout=timeout,
                rpc_timeout=temporal.RPC_TIMEOUT,
            )
            for spend in item.params.get("spends", []):
                await handle.signal("spend", spend, rpc_timeout=temporal.RPC_TIMEOUT)

        await temporal.call(start)
        # A budget lives on; what closes is the approval of its large spend.
        return item.decide if item.kind == "budget" else [item.workflow_id]

    def _fail(self, message: str) -> None:
        assert self._stop is not None
        if not self._fatal:
            self._fatal = message
        self._stop.set()

    # ---- watching outcomes ----

    async def _watch(self, kind: str, workflow_id: str) -> None:
        async def result(client: Client) -> tuple[str, Any]:
            try:
                return "closed", await client.get_workflow_handle(workflow_id).result()
            except WorkflowFailureError as exc:
                return "error", exc.cause
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # a budget's approval not started yet
                    return "missing", None
                raise

        while True:
            try:
                state, value = await temporal.call(result)
            except temporal.TemporalError:
                state, value = "missing", None  # the server is away for a moment; try again
            if state != "missing":
                break
            await asyncio.sleep(1)
        self.stats.closed += 1
        if state == "closed":
            outcome = value.get("outcome") or value.get("status") or "completed"
        elif isinstance(value, WorkflowTimeoutError):
            outcome = "timed out"
            self.stats.timed_out += 1
        elif isinstance(value, CancelledError | TerminatedError):
            outcome = "cancelled" if isinstance(value, CancelledError) else "terminated"
        else:
            outcome = "failed"
            self.stats.failed += 1
        self.stats.outcomes[f"{kind} {outcome}"] += 1

    async def _until_done(self, deadline: float) -> None:
        """Until the deadline, Ctrl-C, or everything started has closed."""
        assert self._stop is not None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not self._watchers and not self._deciding and not self._starting:
                return
            try:
                await asyncio.wait_for(self._stop.wait(), min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
            except TimeoutError:
                pass

    # ---- the approver population ----

    @staticmethod
    def _pending(workflow_ids: list[str]) -> list[tuple[int, str]]:
        """Which of these approval workflows have a pending task now (one query)."""
        return list(
            ApprovalTask.objects.pending().filter(workflow_id__in=workflow_ids).values_list("pk", "workflow_id")
        )

    async def _population(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            waiting = [key for key in self.verdicts if not key.startswith("@") and key not in self._seen_ids]
            try:
                pending = await self._db(self._pending, waiting) if waiting else []
            except DatabaseError as exc:
                self.stats.problem(f"reading the inbox: {exc}")
                pending = []
            now = time.monotonic()
            for pk, workflow_id in pending:
                verdict = self.verdicts.get(workflow_id)
                if verdict is not None and pk not in self._seen:
                    self._verdict_of[pk] = verdict
                    self._seen[pk] = now + verdict.delay
                    self._seen_ids[workflow_id] = pk
            for pk, when in list(self._seen.items()):
                if when <= now and pk not in self._done:
                    self._done.add(pk)
                    self._track(self._deciding, asyncio.create_task(self._decide(pk)))
            try:
                await asyncio.wait_for(self._stop.wait(), POLL_SECONDS)
            except TimeoutError:
                pass

    async def _decide(self, pk: int) -> None:
        try:
            state, user, choice = await self._db(self._decide_in_thread, pk, self._verdict_of[pk])
        except DatabaseError as exc:
            state, user, choice = "error", "", ""
            self.stats.problem(f"deciding task {pk}: {exc}")
        if state in ("applied", "delivered"):
            self.stats.decided += 1
            self.stats.decisions[choice] += 1
            self.stats.deciders[user] += 1
        elif state == "lost":
            self.stats.lost += 1
        elif state == "nobody":  # nobody may decide yet: look again after a while
            self._seen[pk] = time.monotonic() + RETRY_NOBODY_SECONDS
            self._done.discard(pk)
        elif state == "recorded":
            self._fail(f"lost Temporal at {settings.TEMPORAL_ADDRESS}: decisions wait in the outbox")

    def _decide_in_thread(self, pk: int, verdict: Verdict) -> tuple[str, str, str]:
        """One approver, eligible for the task now, decides it through the task page's service."""
        task = ApprovalTask.objects.get(pk=pk)
        if task.status != ApprovalTask.Status.PENDING:
            return "closed", "", ""
        eligible = [user for user in self._approvers if task.can_be_decided_by(user)]
        if not eligible:
            return "nobody", "", ""
        user = eligible[min(int(verdict.pick * len(eligible)), len(eligible) - 1)]
        choice = "reject" if verdict.reject else "approve"
        comment = REJECT_REASONS[pk % len(REJECT_REASONS)] if verdict.reject else ""
        result = services.decide_task(task=task, user=user, choice=choice, comment=comment)
        return result.state, user.get_username(), choice

    # ---- progress ----

    async def _report(self, began: float) -> None:
        while True:
            await asyncio.sleep(self.progress_every)
            self.stats.elapsed = time.monotonic() - began
            if self.on_progress:
                self.on_progress(self.stats)
