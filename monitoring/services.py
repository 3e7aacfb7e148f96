"""Monitoring writes and figures: the snapshot refresh, the health aggregates, audited actions."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.cache import cache
from django.db.models import Count, F, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals.models import ApprovalTask, TaskAssignment
from monitoring import visibility
from monitoring.models import ActionLog, Execution, WindowHealth
from monitoring.workflows import SNAPSHOT_WORKFLOW
from workflows import client as temporal
from workflows.types import SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)
CLOSED = ["completed", "failed", "timed_out", "canceled", "terminated"]
FAILED = ["failed", "timed_out"]
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


ATTEMPTS_WINDOW = timedelta(days=7)

# Tollgate's own workflows (the snapshot's schedule starts one every 30 s): hidden from the explorer,
# the overview and the trends unless asked for, so the operator sees their own workflows.
SYSTEM_TYPES = (SNAPSHOT_WORKFLOW,)
SYSTEM_ID_PREFIX = "tollgate-"
SYSTEM_FILTER = f'WorkflowType != "{SNAPSHOT_WORKFLOW}" AND WorkflowId NOT STARTS_WITH "{SYSTEM_ID_PREFIX}"'


def without_system(query: str) -> str:
    """The visibility query with Tollgate's own workflows left out, unless it names them itself (a
    search for ``MonitoringSnapshotWorkflow`` or a ``tollgate-`` id means the operator wants them)."""
    if SNAPSHOT_WORKFLOW in query or SYSTEM_ID_PREFIX in query:
        return query
    if not query:
        return SYSTEM_FILTER
    where, order = query, ""
    if match := re.search(r"\s+ORDER\s+BY\s", query, re.IGNORECASE):
        where, order = query[: match.start()], query[match.start() :]
    return f"({where}) AND {SYSTEM_FILTER}{order}"


def user_executions() -> QuerySet[Execution]:
    """The snapshot's rows without Tollgate's own workflows."""
    return Execution.objects.exclude(workflow_type__in=SYSTEM_TYPES).exclude(workflow_id__startswith=SYSTEM_ID_PREFIX)


def closed_attempts(*, now: datetime | None = None, runs: int = 2000) -> dict[str, Any]:
    """For closed runs: how many attempts their activities needed, per activity type, over the
    ``runs`` most recently closed runs whose histories were read (a bounded read per page view)."""
    now = now or timezone.now()
    rows = (
        Execution.objects.filter(close_time__gte=now - ATTEMPTS_WINDOW, activity_attempts__isnull=False)
        .order_by("-close_time")
        .values_list("activity_attempts", flat=True)[:runs]
    )
    per_type: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    read = 0
    for counts in rows:
        read += 1
        for activity_type, by_attempt in (counts or {}).items():
            for attempt, n in by_attempt.items():
                per_type[activity_type][int(attempt)] += n
    types: list[dict[str, Any]] = []
    for activity_type, by_attempt in per_type.items():
        total = sum(by_attempt.values())
        buckets = {"1": 0, "2": 0, "3-5": 0, "6+": 0}
        for attempt, n in by_attempt.items():
            buckets["1" if attempt == 1 else "2" if attempt == 2 else "3-5" if attempt <= 5 else "6+"] += n
        types.append({
            "activity_type": activity_type, "executions": total,
            "buckets": [{"attempts": label, "executions": n} for label, n in buckets.items()],
            "first_attempt_share": by_attempt.get(1, 0) / total, "max_attempts": max(by_attempt),
            "mean_attempts": sum(a * n for a, n in by_attempt.items()) / total,
        })  # fmt: skip
    types.sort(key=lambda t: (t["first_attempt_share"], -t["executions"], t["activity_type"]))
    return {"runs_read": read, "days": ATTEMPTS_WINDOW.days, "types": types}


NUL = "\x00"
T = TypeVar("T")


def storable(*values: str) -> bool:
    """Whether the database can hold these texts. Temporal takes a NUL character in a workflow id
    (or a type, a task queue, a reason); PostgreSQL text cannot hold one."""
    return not any(NUL in value for value in values)


# ---- figures from the snapshot -----------------------------------------------------------


PERCENTILES = (50, 95, 99)


def nearest_rank(p: int, n: int) -> int:
    """1-based rank of the p-th percentile among n values: ceil(p * n / 100), in integers."""
    return max((p * n + 99) // 100, 1)


def percentile(values: list[float], p: int) -> float | None:
    """Nearest-rank percentile of ``values`` (no interpolation): a duration some run really took."""
    if not values:
        return None
    return sorted(values)[nearest_rank(p, len(values)) - 1]


@dataclass
class TypeHealth:
    workflow_type: str
    running: int = 0
    completed: int = 0
    failed: int = 0
    timed_out: int = 0
    canceled: int = 0
    terminated: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    latest_failure: str = ""
    latest_failure_at: datetime | None = None
    previous: dict[str, Any] = field(default_factory=dict)

    @property
    def closed(self) -> int:
        return self.completed + self.failed + self.timed_out + self.canceled + self.terminated

    @property
    def stopped(self) -> int:
        return self.canceled + self.terminated

    @property
    def failure_rate(self) -> float | None:
        """(failed + timed out) / closed in the window, by close time."""
        return (self.failed + self.timed_out) / self.closed if self.closed else None

    def as_json(self) -> dict[str, Any]:
        return {
            "workflow_type": self.workflow_type,
            "running": self.running,
            "completed": self.completed,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "canceled": self.canceled,
            "terminated": self.terminated,
            "closed": self.closed,
            "failure_rate": self.failure_rate,
            "duration_p50_seconds": self.p50,
            "duration_p95_seconds": self.p95,
            "duration_p99_seconds": self.p99,
            "latest_failure": self.latest_failure,
            "latest_failure_at": self.latest_failure_at.isoformat() if self.latest_failure_at else None,
            "previous": self.previous,
        }


def type_health(*, start: datetime, end: datetime) -> list[TypeHealth]:
    """Per workflow type: closed counts (by close time in [start, end)), running now, duration percentiles
    of completed runs, the latest failure message; each with the previous window of the same length.
    A fixed number of SQL queries, whatever the number of types or runs."""
    length = end - start
    current = _window(start, end)
    try:
        previous = _window(start - length, start)
    except OverflowError:  # a window longer than the time since year 1 has no window before it
        previous = {}
    running = dict(
        Execution.objects.filter(status="running")
        .values_list("workflow_type")
        .annotate(n=Count("id"))
        .values_list("workflow_type", "n")
    )
    failures = (
        Execution.objects.filter(status__in=FAILED, close_time__gte=start, close_time__lt=end)
        .exclude(failure_message="")
        .order_by("-close_time")
        .values_list("workflow_type", "failure_message", "close_time")[:1000]
    )
    types = sorted(set(current) | set(previous) | set(running))
    rows = []
    for name in types:
        row = current.get(name) or TypeHealth(name)
        row.running = running.get(name, 0)
        before = previous.get(name) or TypeHealth(name)
        row.previous = {
            "closed": before.closed,
            "failure_rate": before.failure_rate,
            "duration_p95_seconds": before.p95,
        }
        rows.append(row)
    by_name = {row.workflow_type: row for row in rows}
    for name, message, at in failures:
        row = by_name[name]
        if not row.latest_failure:
            row.latest_failure, row.latest_failure_at = message, at
    return rows


def store_window_health(snapshot_at: datetime) -> None:
    """Compute each preset window's rows, ending at this refresh, for the overview and /metrics to read."""
    for name, length in WINDOWS.items():
        rows = [_row_state(row) for row in type_health(start=snapshot_at - length, end=snapshot_at)]
        WindowHealth.objects.update_or_create(window=name, defaults={"snapshot_at": snapshot_at, "rows": rows})


def window_health(*, window: str, start: datetime, end: datetime, snapshot_at: datetime | None) -> list[TypeHealth]:
    """The rows the refresh stored for a preset window ending at ``snapshot_at``; any other window
    (custom, or a snapshot taken before this code stored rows) is computed, once per snapshot."""
    if window in WINDOWS and snapshot_at is not None and end == snapshot_at:
        stored = WindowHealth.objects.filter(window=window, snapshot_at=snapshot_at).values_list("rows", flat=True)
        for rows in stored:
            return [_row_from_state(state) for state in rows]
    return cached_type_health(start=start, end=end, snapshot_at=snapshot_at)


def _row_state(row: TypeHealth) -> dict[str, Any]:
    state = asdict(row)
    state["latest_failure_at"] = row.latest_failure_at.isoformat() if row.latest_failure_at else None
    return state


def _row_from_state(state: dict[str, Any]) -> TypeHealth:
    at = state.get("latest_failure_at")
    return TypeHealth(**{**state, "latest_failure_at": parse_datetime(at) if at else None})


def cached_type_health(*, start: datetime, end: datetime, snapshot_at: datetime | None) -> list[TypeHealth]:
    """``type_health``, computed once per snapshot and window: the rows only change when the snapshot does."""
    if snapshot_at is None:
        return type_health(start=start, end=end)
    key = f"monitoring:health:{snapshot_at.timestamp()}:{start.timestamp()}:{end.timestamp()}"
    rows = cache.get(key)
    if rows is None:
        rows = type_health(start=start, end=end)
        cache.set(key, rows, settings.MONITORING_REFRESH_SECONDS * 2)
    return rows


def _window(start: datetime, end: datetime) -> dict[str, TypeHealth]:
    closed = Execution.objects.filter(status__in=CLOSED, close_time__gte=start, close_time__lt=end)
    rows: dict[str, TypeHealth] = {}
    for name, status, n in closed.values_list("workflow_type", "status").annotate(n=Count("id")).order_by():
        row = rows.setdefault(name, TypeHealth(name))
        setattr(row, status, n)
    # Percentiles in the database (window functions, SQLite and PostgreSQL alike): only the rows at the
    # three ranks come back, however many runs the window holds.
    ranked = closed.filter(status="completed", duration__isnull=False).annotate(
        rank=Window(RowNumber(), partition_by=[F("workflow_type")], order_by=[F("duration").asc(), F("id").asc()]),
        n=Window(Count("id"), partition_by=[F("workflow_type")]),
    )
    wanted = Q()
    for p in PERCENTILES:
        wanted |= Q(rank=(F("n") * p + 99) / 100)
    for name, n, rank, seconds in ranked.filter(wanted).values_list("workflow_type", "n", "rank", "duration"):
        row = rows[name]
        for p in PERCENTILES:
            if rank == nearest_rank(p, n):
                setattr(row, f"p{p}", seconds)
    return rows


def snapshot_status_counts(*, show_system: bool = True) -> dict[str, int]:
    """Status counts from the snapshot: closed ones within the backfill horizon, running now."""
    rows = Execution.objects.all() if show_system else user_executions()
    return dict(rows.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


@dataclass(frozen=True)
class Live:
    counts: dict[str, int]
    source: str  # "temporal" or "snapshot"
    error: str = ""


def live_counts_key(*, show_system: bool = False) -> str:
    """Where the namespace's live status counts are cached (the monitoring bench empties it); by
    default the overview's own, without Tollgate's workflows."""
    suffix = "" if show_system else ":user"
    return f"monitoring:counts:{settings.TEMPORAL_ADDRESS}:{settings.TEMPORAL_NAMESPACE}{suffix}"


def live_status_counts(*, show_system: bool = False) -> Live:
    """Exact namespace counts from visibility (one call, cached a few seconds); the snapshot's when down.
    Without ``show_system``, Tollgate's own workflows are left out of both."""
    key = live_counts_key(show_system=show_system)
    counts = cache.get(key)
    if counts is not None:
        return Live(counts, "temporal")
    try:
        counts = temporal.run(visibility.count_by_status, where="" if show_system else SYSTEM_FILTER)
    except temporal.TemporalError as exc:
        return Live(snapshot_status_counts(show_system=show_system), "snapshot", str(exc))
    cache.set(key, counts, settings.MONITORING_LIVE_CACHE_SECONDS)
    return Live(counts, "temporal")


def list_executions(
    *, query: str, page_size: int, token: bytes | None
) -> tuple[list[visibility.ExecutionInfo], bytes | None, int]:
    """One page of the explorer, always live, and the query's total, a live count cached for
    ``MONITORING_LIVE_CACHE_SECONDS`` like the overview's: then the view makes one RPC, not two, and
    the server is spared a ``COUNT(*)`` over the namespace at every page view."""
    key = (
        "monitoring:total:"
        + hashlib.sha256(f"{settings.TEMPORAL_ADDRESS}|{settings.TEMPORAL_NAMESPACE}|{query}".encode()).hexdigest()
    )
    total = cache.get(key)
    if total is not None:
        rows, next_token = temporal.run(visibility.list_page, query=query, page_size=page_size, token=token)
        return rows, next_token, total
    rows, next_token, total = temporal.run(
        visibility.list_page_and_count, query=query, page_size=page_size, token=token
    )
    cache.set(key, total, settings.MONITORING_LIVE_CACHE_SECONDS)
    return rows, next_token, total


def retrying_activities() -> list[dict[str, Any]]:
    """Pending activities past their first attempt, grouped by activity type and last error."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    rows = Execution.objects.filter(status="running", described_at__isnull=False).exclude(pending_activities=[])
    for execution in rows.only("workflow_id", "run_id", "workflow_type", "pending_activities"):
        for activity in execution.pending_activities:
            if activity.get("attempt", 1) <= 1 and not activity.get("last_failure"):
                continue
            key = (activity["activity_type"], activity.get("last_failure", ""))
            group = groups.setdefault(
                key,
                {"activity_type": key[0], "error": key[1], "count": 0, "max_attempt": 0, "next_retry_at": None,
                 "executions": []},
            )  # fmt: skip
            group["count"] += 1
            group["max_attempt"] = max(group["max_attempt"], activity.get("attempt", 1))
            next_at = activity.get("next_attempt_at")
            if next_at and (group["next_retry_at"] is None or next_at < group["next_retry_at"]):
                group["next_retry_at"] = next_at
            if len(group["executions"]) < 10:
                group["executions"].append(
                    {"workflow_id": execution.workflow_id, "run_id": execution.run_id, "attempt": activity["attempt"]}
                )
    return sorted(groups.values(), key=lambda g: (-g["count"], g["activity_type"]))


# The handlers of Tollgate's own types, for when their metadata query cannot be asked (no worker).
KNOWN_HANDLERS: dict[str, dict[str, list[str]]] = {
    "ApprovalWorkflow": {
        "queries": ["status"],
        "signals": ["cancel", "decide", "update_policy"],
        "updates": ["decide"],
    },
    "DeploymentPipelineWorkflow": {"queries": ["progress"], "signals": [], "updates": []},
    "ApprovalCampaignWorkflow": {"queries": ["progress"], "signals": [], "updates": []},
    "TeamBudgetWorkflow": {"queries": ["balance"], "signals": ["spend"], "updates": []},
}


def handlers_of(workflow_type: str, declared: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
    """What a type declares: from its metadata query when it answered, else Tollgate's own list."""
    return declared if declared is not None else KNOWN_HANDLERS.get(workflow_type)


def _since(moment: datetime, now: datetime) -> str:
    seconds = max((now - moment).total_seconds(), 0)
    return f"{int(seconds // 3600)} h" if seconds >= 7200 else f"{int(seconds // 60)} min"


def _clock(moment: datetime, now: datetime) -> str:
    local, today = timezone.localtime(moment), timezone.localtime(now)
    return f"{local:%H:%M}" if local.date() == today.date() else f"{local:%Y-%m-%d %H:%M}"


def _stuck_row(execution: Execution, kind: str, reason: str) -> dict[str, Any]:
    return {
        "workflow_id": execution.workflow_id, "run_id": execution.run_id, "workflow_type": execution.workflow_type,
        "kind": kind, "reason": reason, "started_at": execution.start_time, "progress_at": execution.progress_at,
    }  # fmt: skip


def stuck_report(*, threshold: timedelta, now: datetime | None = None) -> dict[str, Any]:
    """Running runs that are stuck, each with the reason in words, from the snapshot (and one live
    visibility call for the server's ``TemporalReportedProblems`` flag). Waiting is not stuck:

    - ``failing``: the workflow task keeps failing or timing out (attempt above 1);
    - ``stuck``: an activity at attempt ``MONITORING_STUCK_ATTEMPTS`` or later; an approval open
      ``MONITORING_DEADLINE_GRACE_MINUTES`` past its final deadline; a run with no activity, child
      or timer pending, whose type declares no signal or update that could wake it, and whose
      history has not grown for ``threshold``. A run asleep on a timer (an approval before its
      deadline) or idle with signals to wait for is waiting, and the pending page counts it;
    - ``unchecked``: running for longer than ``threshold`` and never described yet (describes are
      bounded per refresh), so what it waits on is not known.
    """
    now = now or timezone.now()
    cutoff = now - threshold
    attempts = settings.MONITORING_STUCK_ATTEMPTS
    running = Execution.objects.filter(status="running")
    failing: dict[tuple[str, str], dict[str, Any]] = {}
    for e in running.filter(workflow_task_attempt__gt=1).order_by("start_time")[:200]:
        waiting = e.waiting if isinstance(e.waiting, dict) else {}
        verb = "timing out" if waiting.get("workflow_task_timed_out") else "failing"
        last = waiting.get("workflow_task_failure") or "not read yet"
        row = _stuck_row(e, "workflow_task", f"workflow task {verb}: {e.workflow_task_attempt} attempts, last: {last}")
        failing[(e.workflow_id, e.run_id)] = {**row, "attempt": e.workflow_task_attempt, "source": "snapshot"}
    down = ""
    try:
        for info in temporal.run(visibility.reported_problems, limit=100):
            failing.setdefault(
                (info.workflow_id, info.run_id),
                {"workflow_id": info.workflow_id, "run_id": info.run_id, "workflow_type": info.workflow_type,
                 "kind": "workflow_task", "attempt": None, "source": "TemporalReportedProblems",
                 "reason": "workflow task failing: reported by the server (TemporalReportedProblems)",
                 "started_at": info.start_time, "progress_at": None},
            )  # fmt: skip
    except temporal.TemporalError as exc:
        down = str(exc)

    stuck: dict[tuple[str, str], dict[str, Any]] = {}
    described = running.filter(described_at__isnull=False, workflow_task_attempt__lte=1)
    for e in described.exclude(pending_activities=[]).order_by("start_time")[:2000]:
        for activity in e.pending_activities:
            if activity.get("attempt", 1) < attempts:
                continue
            of = f" of {activity['maximum_attempts']}" if activity.get("maximum_attempts") else ""
            last = activity.get("last_failure") or "none recorded"
            next_at = parse_datetime(activity.get("next_attempt_at") or "")
            retry = f", next retry at {_clock(next_at, now)}" if next_at else ""
            name, attempt = activity["activity_type"], activity["attempt"]
            reason = f"activity {name} retrying: attempt {attempt}{of}, last failure: {last}{retry}"
            stuck.setdefault((e.workflow_id, e.run_id), _stuck_row(e, "activity", reason))
    grace = timedelta(minutes=settings.MONITORING_DEADLINE_GRACE_MINUTES)
    approvals = {e.workflow_id: e for e in running.filter(workflow_type=APPROVAL_TYPE).only(
        "workflow_id", "run_id", "workflow_type", "start_time", "progress_at")}  # fmt: skip
    late = ApprovalTask.objects.filter(
        workflow_id__in=list(approvals), status__in=[ApprovalTask.Status.PENDING, ApprovalTask.Status.STARTING],
        due_at__lt=now - grace,
    ).only("workflow_id", "level", "due_at", "policy_snapshot").order_by("due_at")[:200]  # fmt: skip
    for task in late:
        levels = len((task.policy_snapshot or {}).get("levels") or [])
        if task.due_at is None or task.level < levels:
            continue  # an earlier level's deadline: the workflow escalates, it is not the final one
        e = approvals[task.workflow_id]
        reason = f"past its final deadline (due {_clock(task.due_at, now)}) and still open"
        stuck.setdefault((e.workflow_id, e.run_id), _stuck_row(e, "deadline", reason))
    idle = described.filter(pending_activities=[]).filter(Q(progress_at__lt=cutoff) | Q(progress_at__isnull=True))
    for e in idle.order_by("progress_at")[:500]:
        waiting = e.waiting if isinstance(e.waiting, dict) else {}
        if "at_length" not in waiting or waiting.get("children") or waiting.get("timers"):
            continue  # not read idle yet, a child or a timer pending: waiting
        if not waiting.get("complete"):
            continue  # no timer in its last events, but one may have started before them
        declared = handlers_of(e.workflow_type, waiting.get("handlers"))
        if declared and (declared.get("signals") or declared.get("updates")):
            continue  # nothing pending but a signal or an update can wake it: waiting for one
        caveat = "" if declared is not None else " (its type did not say whether a signal could wake it)"
        since = _since(e.progress_at or e.start_time, now)
        reason = f"no timer, activity or child pending and no progress for {since}{caveat}"
        stuck.setdefault((e.workflow_id, e.run_id), _stuck_row(e, "idle", reason))
    unchecked = [
        _stuck_row(e, "unchecked", f"not described by the snapshot yet; running for {_since(e.start_time, now)}")
        for e in running.filter(described_at__isnull=True, start_time__lt=cutoff).order_by("start_time")[:200]
    ]
    for key in failing:
        stuck.pop(key, None)
    return {"failing": list(failing.values()), "stuck": list(stuck.values()), "unchecked": unchecked, "down": down}


def waiting_summary() -> list[dict[str, Any]]:
    """Running runs per type by what they wait on, as their last describe found (for the pending page):
    a timer (the earliest one), an activity, a child, a signal or update, or not known yet."""
    rows: dict[str, dict[str, Any]] = {}
    running = Execution.objects.filter(status="running").values_list(
        "workflow_type", "described_at", "pending_activities", "waiting"
    )
    for name, described_at, activities, waiting in running:
        row = rows.setdefault(name, {"workflow_type": name, "timer": 0, "activity": 0, "child": 0, "signal": 0,
                                     "other": 0, "next_timer_at": None})  # fmt: skip
        waiting = waiting if isinstance(waiting, dict) else {}
        if described_at is None:
            row["other"] += 1
        elif activities:
            row["activity"] += 1
        elif waiting.get("children"):
            row["child"] += 1
        elif waiting.get("timers"):
            row["timer"] += 1
            fires = parse_datetime(waiting["timers"][0]["fires_at"])
            if fires and (row["next_timer_at"] is None or fires < row["next_timer_at"]):
                row["next_timer_at"] = fires
        elif (declared := handlers_of(name, waiting.get("handlers"))) and (
            declared.get("signals") or declared.get("updates")
        ):
            row["signal"] += 1
        else:
            row["other"] += 1
    return sorted(rows.values(), key=lambda r: r["workflow_type"])


# ---- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str
    new_run_id: str = ""
    sent: dict[str, Any] | None = None  # a signal Tollgate chose to send in the operator's place


APPROVAL_TYPE = "ApprovalWorkflow"
# The approval workflow's human channels. Each carries a person's name (the approver who decides or
# votes, the admin who pushes a policy, whoever cancels), and the workflow believes it: sent by hand
# from here they would let an operator decide, push or cancel in someone else's name. Tollgate sends
# them only as the logged-in user, from the page where that person does it.
APPROVAL_HUMAN_SIGNALS = ("decide", "update_policy", "cancel")


def refusal_for(*, action: str, workflow_id: str, run_id: str, signal: str) -> str:
    """Why this action may not be sent by hand, or "" when it may.

    Only an approval's human signals are refused, so only they cost a describe (to learn the run's
    type). When Temporal cannot say what the run is, the signal is refused too: better a retry than
    a decision in someone else's name."""
    if action != ActionLog.Action.SIGNAL or signal not in APPROVAL_HUMAN_SIGNALS:
        return ""
    try:
        state = temporal.run(temporal.describe_run, workflow_id=workflow_id, run_id=run_id)
    except temporal.TemporalError as exc:
        return f"Tollgate could not tell whether this is an approval workflow ({exc}), so {signal!r} was not sent."
    if state is None or state.workflow_type != APPROVAL_TYPE:
        return ""
    task = ApprovalTask.objects.filter(workflow_id=workflow_id).first()
    if signal == "decide":
        where = f": {task.get_absolute_url()}" if task else ""
        return f"Refused: decisions are made on the task page by the approver themselves{where}."
    if signal == "update_policy":
        where = reverse("approvals:policy_detail", args=[task.policy_id]) if task and task.policy_id else ""
        page = f"the policy page: {where}" if where else f"the policy page ({reverse('approvals:policies')})"
        return f"Refused: policy pushes are sent from {page}, in the name of the admin who sends them."
    return "Refused: cancel this approval with the Cancel action, as yourself."


def act_on_workflow(
    *, user: AbstractBaseUser, action: str, workflow_id: str, run_id: str, reason: str = "", signal: str = "",
    arg: Any = None,
) -> ActionResult:  # fmt: skip
    """Cancel, terminate or signal a run, and write the audit row whatever Temporal answers.

    An approval's human signals are refused (``refusal_for``), and the refusal is audited too. An
    approval is cancelled through its own ``cancel`` signal, naming the operator, rather than by a
    Temporal cancellation request, which the workflow could only record as "cancelled by nobody"."""
    refusal = refusal_for(action=action, workflow_id=workflow_id, run_id=run_id, signal=signal)
    if refusal:
        result = ActionResult(False, refusal)
        record_action(user=user, action=action, workflow_id=workflow_id, run_id=run_id, reason=reason,
                      signal=signal, arg=arg, result=result, refused=True)  # fmt: skip
        return result
    try:
        if action == ActionLog.Action.CANCEL:
            result = _cancel(user=user, workflow_id=workflow_id, run_id=run_id, reason=reason)
        elif action == ActionLog.Action.TERMINATE:
            temporal.run(visibility.terminate_workflow, workflow_id=workflow_id, run_id=run_id, reason=reason)
            result = ActionResult(True, "Terminated.")
        elif action == ActionLog.Action.RESET:
            new_run = temporal.run(visibility.reset_workflow, workflow_id=workflow_id, run_id=run_id, reason=reason)
            result = ActionResult(True, f"Reset to the first workflow task: new run {new_run}.", new_run)
        elif action == ActionLog.Action.SIGNAL:
            temporal.run(visibility.signal_workflow, workflow_id=workflow_id, run_id=run_id, name=signal, arg=arg)
            result = ActionResult(True, f"Signal {signal!r} sent.")
        else:
            raise ValueError(f"unknown action {action!r}")
    except temporal.TemporalError as exc:
        result = ActionResult(False, f"Temporal refused: {exc}")
    record_action(user=user, action=action, workflow_id=workflow_id, run_id=run_id, reason=reason, signal=signal,
                  arg=arg, result=result)  # fmt: skip
    return result


def _cancel(*, user: AbstractBaseUser, workflow_id: str, run_id: str, reason: str) -> ActionResult:
    state = temporal.run(temporal.describe_run, workflow_id=workflow_id, run_id=run_id)
    if state is None or state.workflow_type != APPROVAL_TYPE:
        temporal.run(visibility.cancel_workflow, workflow_id=workflow_id, run_id=run_id)
        return ActionResult(True, "Cancellation requested: the workflow decides how to wind down.")
    # The name comes from the session, never from the form: the audit trail and the result say who.
    sent = {"user": user.get_username(), "reason": reason or "Cancelled by an operator from monitoring"}
    temporal.run(visibility.signal_workflow, workflow_id=workflow_id, run_id=run_id, name="cancel", arg=sent)
    return ActionResult(True, f"Approval cancelled as {sent['user']}: its task and result name you.", sent=sent)


def record_action(
    *, user: AbstractBaseUser, action: str, workflow_id: str, run_id: str, reason: str, signal: str, arg: Any,
    result: ActionResult, refused: bool = False,
) -> None:  # fmt: skip
    """The audit row: who, what, on which run, and what came of it (refused ones included)."""
    detail: dict[str, Any] = {}
    if action == ActionLog.Action.SIGNAL:
        detail = {"signal": signal, "input": arg}
    elif result.sent is not None:
        detail = {"signal": "cancel", "input": result.sent}
    elif result.new_run_id:
        detail = {"new_run_id": result.new_run_id}
    if refused:
        detail["refused"] = True
    ActionLog.objects.create(
        user_id=user.pk,
        username=user.get_username(),
        action=action,
        workflow_id=workflow_id,
        run_id=run_id,
        reason=reason,
        detail=detail,
        ok=result.ok,
        message=result.message,
    )


# ---- pending and trends ------------------------------------------------------------------

AGE_BUCKETS = [
    ("under 1 hour", timedelta(hours=1)),
    ("1 to 24 hours", timedelta(days=1)),
    ("1 to 7 days", timedelta(days=7)),
    ("over 7 days", None),
]


def running_by_age(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Running runs per type in age buckets (one query)."""
    now = now or timezone.now()
    rows: dict[str, dict[str, Any]] = {}
    for name, started in Execution.objects.filter(status="running").values_list("workflow_type", "start_time"):
        row = rows.setdefault(name, {"workflow_type": name, "total": 0, "oldest": started, "ages": [0] * 4})
        age = now - started
        index = next(i for i, (_, limit) in enumerate(AGE_BUCKETS) if limit is None or age < limit)
        row["ages"][index] += 1
        row["total"] += 1
        row["oldest"] = min(row["oldest"], started)
    return sorted(rows.values(), key=lambda r: -r["total"])


def approval_figures(*, start: datetime, now: datetime | None = None) -> dict[str, Any]:
    """Pending and overdue approval tasks per policy and group, median time to decision and the
    escalation rate for tasks closed since ``start``; a fixed number of queries."""
    now = now or timezone.now()
    pending = ApprovalTask.objects.filter(status=ApprovalTask.Status.PENDING)
    overdue = Count("id", filter=Q(due_at__lt=now))
    per_policy = list(
        pending.values("policy__name").annotate(pending=Count("id"), overdue=overdue).order_by("policy__name")
    )
    per_group = list(
        TaskAssignment.objects.filter(task__status=ApprovalTask.Status.PENDING, group__isnull=False)
        .filter(level__lte=F("task__level"))
        .values("group__name")
        .annotate(
            pending=Count("task", distinct=True),
            overdue=Count("task", distinct=True, filter=Q(task__due_at__lt=now)),
        )
        .order_by("group__name")
    )
    closed = ApprovalTask.objects.filter(decided_at__gte=start).exclude(status=ApprovalTask.Status.PENDING)
    waits = [(d - c).total_seconds() for c, d in closed.values_list("created_at", "decided_at") if d is not None]
    counts = closed.aggregate(total=Count("id"), escalated=Count("id", filter=Q(escalations__gt=0)))
    return {
        "per_policy": [{"policy": r["policy__name"] or "(none)", **_pick(r, "pending", "overdue")} for r in per_policy],
        "per_group": [{"group": r["group__name"], **_pick(r, "pending", "overdue")} for r in per_group],
        "decided": counts["total"],
        "median_time_to_decision_seconds": percentile(waits, 50),
        "escalation_rate": counts["escalated"] / counts["total"] if counts["total"] else None,
    }


def _pick(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: row[key] for key in keys}


def live_task_queues(*, limit: int = 10) -> tuple[list[dict[str, Any]], str]:
    """Backlog and pollers of the task queues running runs use (at most ``limit`` calls, cached briefly)."""
    names = sorted(set(Execution.objects.filter(status="running").values_list("task_queue", flat=True)) - {""})
    names = names[:limit] or [settings.TEMPORAL_TASK_QUEUE]
    key = f"monitoring:queues:{settings.TEMPORAL_ADDRESS}:{','.join(names)}"
    rows = cache.get(key)
    if rows is not None:
        return rows, ""
    try:
        rows = temporal.run(visibility.task_queue_stats, names=names)
    except temporal.TemporalError as exc:
        return [], str(exc)
    cache.set(key, rows, settings.MONITORING_LIVE_CACHE_SECONDS)
    return rows, ""


DURATION_BUCKETS = [("< 1s", 1), ("1-10s", 10), ("10s-1m", 60), ("1-10m", 600), ("10m-1h", 3600), ("> 1h", None)]


def trends(
    *, start: datetime, end: datetime, buckets: int = 24, snapshot_at: datetime | None = None, show_system: bool = True
) -> dict[str, Any]:
    """Throughput and failure rate per time bucket (by close time), and duration histograms per type.

    Two aggregate queries (conditional counts per bucket, then per type and duration bucket): the rows
    stay in the database however many runs the window holds. The figures only change with the
    snapshot, so they are computed once per snapshot and window (``snapshot_at``)."""
    moments = [m.timestamp() for m in (snapshot_at, start, end) if m is not None]
    key = f"monitoring:trends:{buckets}:{show_system}:" + ":".join(map(str, moments))
    if snapshot_at is not None and (cached := cache.get(key)) is not None:
        return cast(dict[str, Any], cached)
    step = (end - start) / buckets
    edges = [start + step * i for i in range(buckets)] + [end]
    rows = Execution.objects.all() if show_system else user_executions()
    closed = rows.filter(status__in=CLOSED, close_time__gte=start, close_time__lt=end)
    counts: dict[str, Any] = {}
    for i in range(buckets):
        within = Q(close_time__gte=edges[i], close_time__lt=edges[i + 1])
        counts[f"c{i}"] = Count("id", filter=within)
        counts[f"f{i}"] = Count("id", filter=within & Q(status__in=FAILED))
    totals = closed.aggregate(**counts)
    series: list[dict[str, Any]] = []
    for i in range(buckets):
        n, failed = totals[f"c{i}"], totals[f"f{i}"]
        series.append({"start": edges[i], "closed": n, "failed": failed, "failure_rate": failed / n if n else None})
    slots: dict[str, Any] = {}
    bottom = None
    for j, (_, top) in enumerate(DURATION_BUCKETS):
        within = Q(duration__gte=bottom) if bottom is not None else Q()
        if top is not None:
            within &= Q(duration__lt=top)
        slots[f"d{j}"] = Count("id", filter=within)
        bottom = top
    per_type = (
        closed.filter(status="completed", duration__isnull=False)
        .values("workflow_type")
        .annotate(**slots)
        .order_by("workflow_type")
    )
    figures = {
        "step_seconds": step.total_seconds(),
        "series": series,
        "durations": {row["workflow_type"]: {label: row[f"d{j}"] for j, (label, _) in enumerate(DURATION_BUCKETS)}
                      for row in per_type},
    }  # fmt: skip
    if snapshot_at is not None:
        cache.set(key, figures, settings.MONITORING_REFRESH_SECONDS * 2)
    return figures


# ---- batch actions -----------------------------------------------------------------------

BATCH_SAMPLE = 10
RUNNING_ONLY = "ExecutionStatus = 'Running'"
APPROVALS_ONLY = f"WorkflowType = '{APPROVAL_TYPE}'"
NO_APPROVALS = f"WorkflowType != '{APPROVAL_TYPE}'"
BATCH_ID_PREFIX = f"{SYSTEM_ID_PREFIX}batch-"  # hidden from the explorer with Tollgate's other own workflows


def narrowed(query: str, clause: str) -> str:
    """``query`` ANDed with one more clause; the operator's query in parentheses so an OR in it
    cannot swallow the clause."""
    return f"({query}) AND {clause}" if query.strip() else clause


@dataclass
class BatchPlan:
    """What a batch would do to what: the job's own query (the operator's, narrowed), how many runs
    it matches now and the first of them; or why it may not run."""

    query: str
    action: str
    signal: str
    job_query: str = ""
    count: int = 0
    sample: list[visibility.ExecutionInfo] = field(default_factory=list)
    # An approval is cancelled as the operator: its own ``cancel`` signal naming them, as the single
    # action does, never a Temporal cancellation request ("cancelled by nobody").
    cancel_as_signal: bool = False
    refusal: str = ""
    # A cancel matching approvals and other runs is offered as two batches, one of each kind.
    split: list[dict[str, Any]] = field(default_factory=list)


def plan_batch(*, query: str, action: str, signal: str = "") -> BatchPlan:
    """The batch job's query, count and first rows, or the refusal. Cancel, terminate and signal
    reach running runs only (a closed run has nothing to stop or tell), reset any run.

    An approval's human signals carry a person's name: a batch sending one is refused while the
    query matches any approval, and otherwise runs on the query with approvals left out, so an
    approval started after the preview is not reached either. Raises ``visibility.BadQuery`` for a
    query Temporal refuses and ``temporal.TemporalError`` when it cannot answer."""
    plan = BatchPlan(query=query, action=action, signal=signal)
    scope = query if action == ActionLog.Action.RESET else narrowed(query, RUNNING_ONLY)
    plan.job_query = scope
    if action == ActionLog.Action.SIGNAL and signal in APPROVAL_HUMAN_SIGNALS:
        approvals = temporal.run(visibility.count, query=narrowed(scope, APPROVALS_ONLY))
        if approvals:
            plan.refusal = (
                f"Refused: the query matches {approvals} running approval{'s' if approvals != 1 else ''}, and "
                f"{signal!r} carries a person's name, so it is never sent by hand. Restrict the query to "
                f"another WorkflowType ({NO_APPROVALS}); approvals are decided, cancelled and given new "
                "policies from their own pages, as the person doing it."
            )
            return plan
        plan.job_query = narrowed(scope, NO_APPROVALS)
    elif action == ActionLog.Action.CANCEL:
        approvals = temporal.run(visibility.count, query=narrowed(scope, APPROVALS_ONLY))
        others = temporal.run(visibility.count, query=narrowed(scope, NO_APPROVALS))
        if approvals and others:
            plan.refusal = (
                f"The query matches {approvals} running approval{'s' if approvals != 1 else ''} and {others} other "
                "running workflows. Approvals are cancelled through their own cancel signal, in your name, the "
                "others by a Temporal cancellation request, and Temporal runs one batch job at a time: cancel "
                "them as two batches."
            )
            plan.split = [
                {"label": f"Cancel the {approvals} approvals", "query": narrowed(query, APPROVALS_ONLY)},
                {"label": f"Cancel the {others} other workflows", "query": narrowed(query, NO_APPROVALS)},
            ]
            return plan
        plan.cancel_as_signal = bool(approvals)
        plan.job_query = narrowed(scope, APPROVALS_ONLY if approvals else NO_APPROVALS)
    plan.sample, _, plan.count = temporal.run(
        visibility.list_page_and_count, query=plan.job_query, page_size=BATCH_SAMPLE, token=None
    )
    return plan


@dataclass
class BatchStart:
    ok: bool
    message: str
    job_id: str = ""


def start_batch_action(*, user: AbstractBaseUser, plan: BatchPlan, reason: str, arg: Any = None) -> BatchStart:
    """Start the planned batch as a Temporal batch job and write its one audit row, whatever Temporal
    answered; ``refresh_batch_audit`` later adds the final counts. The operator's username is the
    job's identity, and the name an approval's cancel signal carries."""
    username = user.get_username()
    job_id = f"{BATCH_ID_PREFIX}{uuid.uuid4().hex[:16]}"
    operation, signal, sent = plan.action, plan.signal, arg
    if plan.cancel_as_signal:
        operation, signal = "signal", "cancel"
        sent = {"user": username, "reason": reason or "Cancelled by an operator from monitoring (batch)"}
    detail: dict[str, Any] = {
        "batch": {"job_id": job_id, "query": plan.query, "job_query": plan.job_query, "count": plan.count,
                  "state": "", "total": None, "complete": None, "failure": None},
    }  # fmt: skip
    if operation == ActionLog.Action.SIGNAL:
        detail.update({"signal": signal, "input": sent})
    try:
        temporal.run(
            visibility.start_batch, job_id=job_id, query=plan.job_query,
            reason=reason or f"{plan.action} by {username}", operation=operation,
            identity=username, signal=signal, arg=sent,
        )  # fmt: skip
        detail["batch"]["state"] = "running"
        noun = "approvals, in your name" if plan.cancel_as_signal else "workflows"
        result = BatchStart(True, f"Batch job {job_id} started: {plan.action} {plan.count} {noun}.", job_id)
    except visibility.BatchBusy:
        result = BatchStart(False, "Temporal is already running a batch job in this namespace (it runs one at a "
                                   "time): wait for it to finish, then try again.")  # fmt: skip
    except temporal.TemporalError as exc:
        result = BatchStart(False, f"Temporal refused the batch job: {exc}")
    ActionLog.objects.create(
        user_id=user.pk, username=username, action=plan.action, workflow_id="", run_id="", reason=reason,
        detail=detail, ok=result.ok, message=result.message,
    )  # fmt: skip
    return result


def record_batch_refusal(*, user: AbstractBaseUser, plan: BatchPlan, reason: str, arg: Any = None) -> None:
    """A refused batch is audited too, as a refused single action is."""
    ActionLog.objects.create(
        user_id=user.pk, username=user.get_username(), action=plan.action, workflow_id="", run_id="", reason=reason,
        detail={"batch": {"job_id": "", "query": plan.query, "count": None}, "signal": plan.signal, "input": arg,
                "refused": True},
        ok=False, message=plan.refusal,
    )  # fmt: skip


def refresh_batch_audit(*, job: visibility.BatchJob) -> None:
    """Copy the job's state and counts onto its audit row (one UPDATE; a job Tollgate did not start has none)."""
    for entry in ActionLog.objects.filter(detail__batch__job_id=job.job_id):
        batch = entry.detail["batch"]
        known = (batch.get("state"), batch.get("total"), batch.get("complete"), batch.get("failure"))
        if known == (job.state, job.total, job.complete, job.failure):
            continue
        batch.update({"state": job.state, "total": job.total, "complete": job.complete, "failure": job.failure})
        update = ["detail"]
        if not job.running:
            entry.ok = job.state == "completed" and not job.failure
            entry.message = f"Batch job {job.state}: {job.complete} of {job.total} done, {job.failure} failed."
            update += ["ok", "message"]
        entry.save(update_fields=update)


def batch_audit_rows(*, limit: int = 50) -> QuerySet[ActionLog]:
    return ActionLog.objects.filter(detail__has_key="batch")[:limit]


# ---- ready filters for approvals ---------------------------------------------------------

ATTRIBUTES_CACHE_SECONDS = 60


def missing_approval_attributes() -> list[str] | None:
    """Tollgate's approval search attributes the namespace lacks ([] when it has them all), read
    through the operator service and cached a minute; None when Temporal cannot say."""
    key = f"monitoring:attributes:{settings.TEMPORAL_ADDRESS}|{settings.TEMPORAL_NAMESPACE}"
    have = cache.get(key)
    if have is None:
        try:
            have = temporal.run(visibility.custom_search_attributes)
        except temporal.TemporalError:
            return None
        cache.set(key, have, ATTRIBUTES_CACHE_SECONDS)
    return [name for name, kind in SEARCH_ATTRIBUTES.items() if have.get(name) != kind]


def create_attributes_command() -> str:
    names = " ".join(f"--name {name} --type {kind}" for name, kind in SEARCH_ATTRIBUTES.items())
    return f"temporal operator search-attribute create --namespace {settings.TEMPORAL_NAMESPACE} {names}"


def overdue_approvals_query(*, now: datetime) -> str:
    return f"ApprovalStatus = 'pending' AND ApprovalDueAt < '{visibility.visibility_time(now)}'"


def pending_for_query(*, name: str) -> str:
    """Pending approvals assigned (at their current level) to a user or any of their groups, or to
    a group; raises ``LookupError`` naming ``name`` when it is neither."""
    user = get_user_model().objects.filter(username=name).first()
    names = [name]
    if user is not None:
        names += list(user.groups.order_by("name").values_list("name", flat=True))
    elif not Group.objects.filter(name=name).exists():
        raise LookupError(f"no user or group is named {name!r}")
    listed = ", ".join(json.dumps(n) for n in dict.fromkeys(names))
    return f"ApprovalStatus = 'pending' AND ApprovalAssignees IN ({listed})"
