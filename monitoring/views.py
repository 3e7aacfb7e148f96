"""Operators' pages. Aggregates come from the snapshot; live calls are one or two per view.

Every page has a JSON twin (``?format=json``) built from the same context.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_POST

from config.http import AuthenticatedRequest
from monitoring import charts, services, visibility
from monitoring.access import can_act, operators_only
from monitoring.models import ActionLog, Execution, SnapshotState
from monitoring.templatetags import monitoring_tags as tags
from workflows import client as temporal
from workflows.parsing import InputError, json_value_from_text
from workflows.types import SEARCH_ATTRIBUTES

PAGE_SIZE = 100
FOLD_AT = 400
URL_SAFE = "/~:@!$&'()*+,;="  # what Django's reverse() leaves unquoted in a path
STUCK_MAX_MINUTES = 10 * 366 * 24 * 60  # ten years: longer than anything is stuck, far from datetime's limits
STATUSES = ["Running", "Completed", "Failed", "TimedOut", "Canceled", "Terminated", "ContinuedAsNew"]


def _respond(
    request: HttpRequest, template: str, context: dict[str, Any], data: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The page, or its JSON twin with the same figures."""
    if request.GET.get("format") == "json":
        return JsonResponse(data, encoder=DjangoJSONEncoder, status=status, json_dumps_params={"indent": 1})
    return render(request, template, context, status=status)


def _snapshot_context(state: SnapshotState | None = None) -> dict[str, Any]:
    state = state or SnapshotState.current()
    age = state.age()
    return {"snapshot": state, "snapshot_age": age.total_seconds() if age is not None else None}


def _snapshot_json(context: dict[str, Any]) -> dict[str, Any]:
    state: SnapshotState = context["snapshot"]
    return {
        "refreshed_at": state.refreshed_at,
        "age_seconds": context["snapshot_age"],
        "watermark": state.close_watermark,
        "last_error": state.last_error,
    }


def _window(request: HttpRequest, state: SnapshotState) -> tuple[str, datetime, datetime]:
    """The chosen window; the preset ones end when the snapshot was taken, as its figures do."""
    now = state.refreshed_at or timezone.now()
    name = request.GET.get("window", "24h")
    if name == "custom":
        start = _moment(request.GET.get("start", ""))
        end = _moment(request.GET.get("end", "")) or now
        if start is not None and start < end:
            return name, start, end
        name = "24h"
    if name not in services.WINDOWS:
        name = "24h"
    return name, now - services.WINDOWS[name], now


def _moment(text: str) -> datetime | None:
    """An aware time from the query string; None when it is missing, is no real time ("2025-02-30"), or
    lies so near year 1 or 9999 that UTC (the database's) or the local time zone cannot hold it."""
    try:
        moment = parse_datetime(text)
        if moment is None:
            return None
        moment = moment if timezone.is_aware(moment) else timezone.make_aware(moment)
        moment.astimezone(UTC)
        timezone.localtime(moment)
    except (ValueError, OverflowError):
        return None
    return moment


@operators_only
@require_GET
def overview(request: AuthenticatedRequest) -> HttpResponse:
    state = SnapshotState.current()
    window, start, end = _window(request, state)
    show_system = _show_system(request)
    live = services.live_status_counts(show_system=show_system)
    rows = services.window_health(window=window, start=start, end=end, snapshot_at=state.refreshed_at)
    if not show_system:
        rows = [row for row in rows if row.workflow_type not in services.SYSTEM_TYPES]
    context = {
        "window": window, "start": start, "end": end, "live": live, "rows": rows,
        "windows": list(services.WINDOWS), "show_system": show_system, **_snapshot_context(state),
    }  # fmt: skip
    data = {
        "window": {"name": window, "start": start, "end": end},
        "status_counts": live.counts,
        "status_counts_source": live.source,
        "temporal_error": live.error,
        "types": [row.as_json() for row in rows],
        "show_system": show_system,
        "snapshot": _snapshot_json(context),
    }
    template = "monitoring/overview.html#health" if getattr(request, "htmx", False) else "monitoring/overview.html"
    return _respond(request, template, context, data)


def _show_system(request: HttpRequest) -> bool:
    """The "show Tollgate's own workflows" toggle; off unless ticked."""
    return request.GET.get("system") == "1"


def _build_query(request: HttpRequest) -> str:
    """The raw query box wins; otherwise the filter builder's fields, ANDed."""
    raw = request.GET.get("q", "").strip()[:2000]
    if raw:
        return raw
    clauses = []
    workflow_type = request.GET.get("type", "").strip()
    if workflow_type:
        clauses.append(f"WorkflowType = {json.dumps(workflow_type)}")
    status = request.GET.get("status", "")
    if status in STATUSES:
        clauses.append(f'ExecutionStatus = "{status}"')
    workflow_id = request.GET.get("workflow_id", "").strip()
    if workflow_id:
        clauses.append(f"WorkflowId STARTS_WITH {json.dumps(workflow_id)}")
    return " AND ".join(clauses)


def _token(raw: str) -> bytes | None:
    if not raw:
        return None
    try:
        return base64.urlsafe_b64decode(raw.encode())
    except (binascii.Error, ValueError):
        return None


# Sortable columns of the explorer: (label, sort key, the value it sorts by). Visibility has no
# ORDER BY, so a sort reorders the page the server returned, never the whole result.
COLUMNS: list[tuple[str, str, Callable[[visibility.ExecutionInfo], Any]]] = [
    ("Workflow id", "id", lambda e: e.workflow_id),
    ("Type", "type", lambda e: e.workflow_type),
    ("Status", "status", lambda e: e.status),
    ("Started", "started", lambda e: e.start_time),
    ("Closed", "closed", lambda e: e.close_time),
    ("Duration", "duration", lambda e: e.duration),
    ("History", "history", lambda e: e.history_length),
    ("Task queue", "queue", lambda e: e.task_queue),
]
SORT_KEYS = {key: value for _, key, value in COLUMNS}


def _sort_rows(rows: list[visibility.ExecutionInfo], sort: str) -> list[visibility.ExecutionInfo]:
    """This page's rows by one column, either way; rows without a value (a running run has no close
    time or duration) come last both ways."""
    value = SORT_KEYS.get(sort.removeprefix("-"))
    if value is None:
        return rows
    known = sorted((r for r in rows if value(r) is not None), key=value, reverse=sort.startswith("-"))
    return known + [r for r in rows if value(r) is None]


def _column_headers(params: QueryDict, sort: str) -> list[dict[str, str]]:
    """Each column's link: sorts this page by it, ascending, or descending when it already is; the
    filters and the page token stay."""
    headers = []
    for label, key, _ in COLUMNS:
        query = params.copy()
        query["sort"] = f"-{key}" if sort == key else key
        state = {key: "ascending", f"-{key}": "descending"}.get(sort, "none")
        headers.append({"label": label, "href": f"?{query.urlencode()}", "aria_sort": state})
    return headers


@operators_only
@require_GET
def executions(request: AuthenticatedRequest) -> HttpResponse:
    show_system = _show_system(request)
    pending_for, ready_query, ready_problem = _pending_for(request)
    asked = ready_query or _build_query(request)
    query = asked if show_system else services.without_system(asked)
    sort = request.GET.get("sort", "")
    sort = sort if sort.removeprefix("-") in SORT_KEYS else ""
    context: dict[str, Any] = {
        "query": asked, "visibility_query": query, "raw": ready_query or request.GET.get("q", ""), "statuses": STATUSES,
        "params": request.GET, "show_system": show_system, "pending_for": pending_for, "attributes_hint": "",
        "can_act": can_act(request.user),
        "rows": [], "next_token": "", "error": "", "down": "", "total": None, "sort": sort,
        "columns": _column_headers(request.GET, sort), **_snapshot_context(),
    }  # fmt: skip
    status, sent = 200, _token(request.GET.get("page", ""))
    try:
        if ready_problem:
            raise _NotAQuery(ready_problem)
        rows, token, total = services.list_executions(query=query, page_size=PAGE_SIZE, token=sent)
        context["rows"], context["total"] = _sort_rows(_with_known_lengths(rows), sort), total
        context["next_token"] = base64.urlsafe_b64encode(token).decode() if token else ""
    except _NotAQuery as exc:
        context["ready_problem"], status = str(exc), 400
    except visibility.BadQuery as exc:
        context["error"], status = str(exc), 400
        if any(name in asked for name in SEARCH_ATTRIBUTES):  # most likely: the namespace lacks them
            context["attributes_hint"] = services.create_attributes_command()
    except temporal.TemporalUnavailable as exc:
        context["down"] = str(exc)
        snapshot_rows = Execution.objects.all() if show_system else services.user_executions()
        context["snapshot_rows"] = snapshot_rows.order_by("-start_time")[:PAGE_SIZE]
    except temporal.TemporalError as exc:
        # A page token the server cannot read (altered, or from another server) fails as UNKNOWN,
        # "please retry", which no retry fixes.
        problem = f"its page token was not accepted ({exc}); start again from the first page" if sent else str(exc)
        context["error"], status = problem, 400
    if request.GET.get("format") != "json":
        context["rows_html"] = _rows_html(context["rows"])
        return render(request, "monitoring/executions.html", context, status=status)
    data = {
        "query": asked,
        "visibility_query": query,
        "show_system": show_system,
        "sort": sort,
        "total": context["total"],
        "executions": [_execution_json(r) for r in context["rows"]],
        "next_page": context["next_token"],
        "error": context["error"] or context.get("ready_problem", ""),
        "temporal_error": context["down"],
        "snapshot": _snapshot_json(context),
    }
    if context["down"]:
        data["snapshot_executions"] = [_row_json(r) for r in context["snapshot_rows"]]
    return _respond(request, "monitoring/executions.html", context, data, status=status)


class _NotAQuery(Exception):
    """A ready filter that could not be made into a query (a name that is no user or group)."""


def _pending_for(request: HttpRequest) -> tuple[str, str, str]:
    """The "pending for" ready filter: the name asked for, its visibility query, what is wrong with it."""
    name = request.GET.get("pending_for", "").strip()[:150]
    if not name:
        return "", "", ""
    if not services.storable(name):  # PostgreSQL could not even look the name up
        return name, "", "Pending for: a NUL character is in no user's or group's name."
    try:
        return name, services.pending_for_query(name=name), ""
    except LookupError as exc:
        return name, "", f"Pending for: {exc}."


@operators_only
@require_GET
def ready_filters(request: AuthenticatedRequest) -> HttpResponse:
    """The explorer's ready filters for approvals, loaded by htmx after the page (so the explorer's
    own RPCs stay two): links that fill its query, or how to create the search attributes they need."""
    missing = services.missing_approval_attributes()
    context = {
        "missing": missing, "command": services.create_attributes_command(),
        "overdue_query": services.overdue_approvals_query(now=timezone.now()),
        "pending_for": request.GET.get("pending_for", "")[:150], "show_system": _show_system(request),
    }  # fmt: skip
    return render(request, "monitoring/executions.html#ready-filters", context)


def _with_known_lengths(rows: list[visibility.ExecutionInfo]) -> list[visibility.ExecutionInfo]:
    """Running rows with the history length the snapshot's last describe saw (visibility has none
    for them until they close); the ones never described keep None and show "—", never a false 0.
    One query for the page's running rows."""
    running = [r for r in rows if r.history_length is None]
    if not running:
        return rows
    known = {
        (wid, rid): n
        for wid, rid, n in Execution.objects.filter(
            workflow_id__in=[r.workflow_id for r in running if services.storable(r.workflow_id)],
            described_at__isnull=False,
        ).values_list("workflow_id", "run_id", "history_length")
    }
    return [
        dataclasses.replace(r, history_length=known.get((r.workflow_id, r.run_id))) if r.history_length is None else r
        for r in rows
    ]


def _rows_html(rows: list[visibility.ExecutionInfo]) -> SafeString:
    """The explorer's rows, built by hand: Django's template engine, and even ``format_html`` per cell,
    spent longer on 100 rows than the Temporal UI's API takes for the whole page (see
    bench/monitoring_bench.py). Every value passes through ``html.escape``, the function Django's own
    ``escape`` calls (here without its lazy-string wrapper, which cost most of the time), memoized
    for the page: types, statuses and task queues repeat from row to row."""
    prefix, now, zone = reverse("monitoring:executions"), timezone.now(), timezone.get_current_timezone()
    esc = functools.lru_cache(maxsize=256)(escape)

    def when(moment: datetime | None) -> str:
        if moment is None:
            return "—"
        delta = (now - moment).total_seconds()
        text = f"{tags.duration(abs(delta))} ago" if delta >= 0 else f"in {tags.duration(-delta)}"
        # An ISO 8601 time and a strftime of digits hold nothing that needs escaping but the zone's name.
        local = moment.astimezone(zone)
        exact = f"{local:%Y-%m-%d %H:%M:%S} {esc(local.tzname() or '')}"
        return f'<time datetime="{moment.isoformat()}" title="{exact}">{text}</time>'

    out = []
    for e in rows:
        href = f"{prefix}{quote(e.workflow_id, safe=URL_SAFE)}/{quote(e.run_id)}/"
        status, label = esc(e.status), esc(tags.status_label(e.status))
        out.append(
            f'<tr><td data-label="Id"><a href="{escape(href)}">{escape(e.workflow_id)}</a></td>'
            f'<td data-label="Type">{esc(e.workflow_type)}</td>'
            f'<td data-label="Status"><span class="status status-{status}">{label}</span></td>'
            f'<td data-label="Started">{when(e.start_time)}</td><td data-label="Closed">{when(e.close_time)}</td>'
            f'<td data-label="Duration">{tags.duration(e.duration)}</td>'
            f'<td data-label="History">{"—" if e.history_length is None else int(e.history_length)}</td>'
            f'<td data-label="Task queue">{esc(e.task_queue)}</td></tr>'
        )
    return mark_safe("\n".join(out))  # noqa: S308  # every value above is escaped or made of digits


def _execution_json(info: visibility.ExecutionInfo) -> dict[str, Any]:
    return {
        "workflow_id": info.workflow_id, "run_id": info.run_id, "workflow_type": info.workflow_type,
        "status": info.status, "task_queue": info.task_queue, "start_time": info.start_time,
        "close_time": info.close_time, "duration_seconds": info.duration, "history_length": info.history_length,
    }  # fmt: skip


def _row_json(row: Execution) -> dict[str, Any]:
    return {
        "workflow_id": row.workflow_id, "run_id": row.run_id, "workflow_type": row.workflow_type,
        "status": row.status, "task_queue": row.task_queue, "start_time": row.start_time,
        "close_time": row.close_time, "duration_seconds": row.duration, "history_length": row.history_length,
        "failure_message": row.failure_message, "pending_activities": row.pending_activities,
    }  # fmt: skip


@operators_only
@require_GET
def execution_detail(request: AuthenticatedRequest, workflow_id: str, run_id: str) -> HttpResponse:
    context = _detail_context(request, workflow_id, run_id)
    status = 404 if context["missing"] else 200
    detail = context["detail"]
    data = {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "execution": _execution_json(detail["info"]) if detail else None,
        "pending_activities": detail["pending_activities"] if detail else [],
        "pending_children": detail["pending_children"] if detail else [],
        "workflow_task": detail["workflow_task"] if detail else None,
        "children": detail["children"] if detail else [],
        "outcome": detail["outcome"] if detail else "",
        "groups": detail["groups"] if detail else [],
        "events": detail["events"] if detail else [],
        "events_truncated": detail["events_truncated"] if detail else False,
        "input": detail["input"] if detail else None,
        "result": detail["result"] if detail else None,
        "failure": detail["failure"] if detail else "",
        "temporal_ui_url": context["temporal_url"],
        "temporal_error": context["down"],
        "snapshot_row": _row_json(context["row"]) if context["row"] else None,
        "snapshot": _snapshot_json(context),
    }
    return _respond(request, "monitoring/execution.html", context, data, status=status)


def _detail_context(request: HttpRequest, workflow_id: str, run_id: str) -> dict[str, Any]:
    # No row can hold an id the database cannot store (a NUL, which Temporal takes): look for none.
    this_run = Q(workflow_id=workflow_id, run_id=run_id) if services.storable(workflow_id) else Q(pk__in=[])
    context: dict[str, Any] = {
        "workflow_id": workflow_id, "run_id": run_id, "detail": None, "down": "", "missing": False,
        "row": Execution.objects.filter(this_run).first(),
        "temporal_url": temporal.temporal_ui_url(workflow_id, run_id), "can_act": can_act(request.user),
        "fold_at": FOLD_AT, "audit": ActionLog.objects.filter(this_run)[:20],
        **_snapshot_context(),
    }  # fmt: skip
    try:
        context["detail"] = detail = temporal.run(visibility.describe_execution, workflow_id=workflow_id, run_id=run_id)
    except (visibility.NotFound, visibility.BadQuery):  # BadQuery: a run id that is no run id ("Invalid RunId.")
        context["missing"] = True
    except temporal.TemporalError as exc:
        context["down"] = str(exc)
    else:
        info = detail["info"]
        context["timeline"] = charts.execution_timeline(
            detail["groups"], start=info.start_time, end=info.close_time or timezone.now()
        )
        context["queries"] = _query_names(info.workflow_type, None)
    return context


BUILT_IN_QUERIES = ["__stack_trace"]  # every SDK answers it: where the workflow's code is waiting


def _query_names(workflow_type: str, declared: dict[str, list[str]] | None) -> list[str]:
    """The queries to offer: the type's declared ones (its metadata query), else Tollgate's list for
    its own types; then the SDK's stack trace."""
    handlers = services.handlers_of(workflow_type, declared)
    return [*(handlers or {}).get("queries", []), *BUILT_IN_QUERIES]


QUERY_WAIT = timedelta(seconds=5)


@operators_only
@require_GET
def execution_queries(request: AuthenticatedRequest, workflow_id: str, run_id: str) -> HttpResponse:
    """The query form with the queries the run's type declares, asked of the workflow itself through
    the SDK's ``__temporal_workflow_metadata`` query (loaded by htmx after the page, so a run without
    a worker never slows the page down); Tollgate's known list when it cannot answer."""
    workflow_type = request.GET.get("type", "")[:1000]
    try:
        declared = temporal.run(
            visibility.declared_handlers, workflow_id=workflow_id, run_id=run_id, workflow_type=workflow_type
        )
    except temporal.TemporalError:
        declared = None
    context = {
        "workflow_id": workflow_id, "run_id": run_id, "queries": _query_names(workflow_type, declared),
        "declared": declared is not None,
    }  # fmt: skip
    return render(request, "monitoring/execution.html#query-form", context)


@operators_only
@require_POST
def run_query(request: AuthenticatedRequest, workflow_id: str, run_id: str) -> HttpResponse:
    """Run one query and show its answer as escaped, indented JSON; a refusal or a timeout is said in
    words. Read-only, but an operator's: it makes the workflow's worker run code."""
    name = request.POST.get("query", "").strip()
    context: dict[str, Any] = {"workflow_id": workflow_id, "run_id": run_id, "query": name, "answer": None,
                               "problem": ""}  # fmt: skip
    status = 200
    if not name or len(name) > 200 or not services.storable(name):
        context["problem"], status = "Name the query to run (up to 200 characters).", 400
    else:
        try:
            value = temporal.run(
                visibility.run_query, workflow_id=workflow_id, run_id=run_id, name=name, wait=QUERY_WAIT
            )
            context["answer"] = json.dumps(value, indent=2, default=str, ensure_ascii=False)
        except visibility.NotFound:
            context["problem"] = "Temporal has no such run (it may be past its retention period)."
        except temporal.TemporalUnavailable as exc:
            context["problem"] = f"No answer: {exc}"
        except temporal.TemporalError as exc:
            context["problem"] = f"The query {name!r} did not answer: {exc}"
    if getattr(request, "htmx", False):
        return render(request, "monitoring/execution.html#query-answer", context, status=status)
    return render(request, "monitoring/query.html", {**context, **_snapshot_context()}, status=status)


@operators_only
@require_POST
def act(request: AuthenticatedRequest, workflow_id: str, run_id: str) -> HttpResponse:
    """Cancel, terminate (reason required) or signal (JSON input); confirmed first, always audited."""
    if not can_act(request.user):
        raise PermissionDenied("Acting on workflows needs the monitoring.act_on_workflows permission.")
    action = request.POST.get("action", "")
    reason = request.POST.get("reason", "").strip()[:2000]
    signal = request.POST.get("signal", "").strip()[:200]
    raw_input = request.POST.get("input", "").strip()
    problem = ""
    arg: Any = None
    if not services.storable(workflow_id, run_id, reason, signal, raw_input):
        # The audit log could not store it (PostgreSQL text holds no NUL), and no action goes unaudited.
        problem = (
            "A NUL character in the workflow id or a field: Tollgate cannot audit this action, so it was not sent."
        )
    elif action not in ActionLog.Action.values:
        problem = "Choose cancel, terminate, signal or reset."
    elif action in (ActionLog.Action.TERMINATE, ActionLog.Action.RESET) and not reason:
        verb = "Terminating" if action == ActionLog.Action.TERMINATE else "Resetting"
        problem = f"{verb} needs a reason: it is written to the workflow's history and the audit log."
    elif action == ActionLog.Action.SIGNAL:
        if not signal:
            problem = "Name the signal to send."
        elif raw_input:
            try:
                arg = json_value_from_text(raw_input, "signal input")
            except InputError as exc:
                problem = f"The {exc}."
    back = reverse("monitoring:execution", args=[workflow_id, run_id])
    if problem:
        messages.error(request, problem)
        return redirect(back)
    user = request.user
    # Refused before the confirmation page, and audited as refused, whether htmx or JSON asked.
    refusal = services.refusal_for(action=action, workflow_id=workflow_id, run_id=run_id, signal=signal)
    if refusal:
        services.record_action(
            user=user,
            action=action, workflow_id=workflow_id, run_id=run_id, reason=reason, signal=signal, arg=arg,
            result=services.ActionResult(False, refusal), refused=True,
        )  # fmt: skip
        messages.error(request, refusal)
        return redirect(back)
    if request.POST.get("confirm") != "yes":
        form = {"action": action, "reason": reason, "signal": signal, "input": raw_input}
        return render(request, "monitoring/confirm.html", {"workflow_id": workflow_id, "run_id": run_id, **form})
    result = services.act_on_workflow(
        user=user,
        action=action, workflow_id=workflow_id, run_id=run_id, reason=reason, signal=signal, arg=arg,
    )  # fmt: skip
    messages.add_message(request, messages.SUCCESS if result.ok else messages.ERROR, result.message)
    if result.new_run_id:
        return redirect("monitoring:execution", workflow_id, result.new_run_id)
    return redirect(back)


@operators_only
@require_GET
def retries(request: AuthenticatedRequest) -> HttpResponse:
    groups, attempts = services.retrying_activities(), services.closed_attempts()
    context = {"groups": groups, "attempts": attempts, **_snapshot_context()}
    data = {"groups": groups, "closed_attempts": attempts, "snapshot": _snapshot_json(context)}
    return _respond(request, "monitoring/retries.html", context, data)


@operators_only
@require_GET
def stuck(request: AuthenticatedRequest) -> HttpResponse:
    minutes = settings.MONITORING_STUCK_MINUTES
    try:
        minutes = min(max(int(request.GET.get("minutes", minutes)), 1), STUCK_MAX_MINUTES)
    except ValueError:
        pass
    report = services.stuck_report(threshold=timedelta(minutes=minutes))
    context = {
        "rows": report["stuck"], "minutes": minutes, "failing": report["failing"], "unchecked": report["unchecked"],
        "down": report["down"], "attempts": settings.MONITORING_STUCK_ATTEMPTS,
        "grace": settings.MONITORING_DEADLINE_GRACE_MINUTES, **_snapshot_context(),
    }  # fmt: skip
    data = {
        "threshold_minutes": minutes, "executions": report["stuck"], "failing_workflow_tasks": report["failing"],
        "not_described_yet": report["unchecked"], "temporal_error": report["down"], "snapshot": _snapshot_json(context),
    }  # fmt: skip
    return _respond(request, "monitoring/stuck.html", context, data)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Headline figures in the Prometheus text format, for a bearer token or an allowed address."""
    token = settings.MONITORING_METRICS_TOKEN
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    by_token = bool(token) and hmac.compare_digest(sent.encode(), token.encode())
    by_address = request.META.get("REMOTE_ADDR", "") in settings.MONITORING_METRICS_ALLOWED_IPS
    if not (by_token or by_address):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    state = SnapshotState.current()
    end = state.refreshed_at or timezone.now()  # the last hour of the snapshot, as the overview shows it
    rows = services.window_health(window="1h", start=end - timedelta(hours=1), end=end, snapshot_at=state.refreshed_at)
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")

    metric("tollgate_workflows_running", "gauge", "Running workflows per type (snapshot).",
           [({"workflow_type": r.workflow_type}, r.running) for r in rows])  # fmt: skip
    samples = [({"workflow_type": r.workflow_type, "status": s}, getattr(r, s)) for r in rows for s in services.CLOSED]
    metric("tollgate_workflows_closed_last_hour", "gauge", "Workflows closed in the last hour by status.", samples)
    rates = [({"workflow_type": r.workflow_type}, r.failure_rate) for r in rows if r.failure_rate is not None]
    metric("tollgate_workflow_failure_rate_last_hour", "gauge", "(failed + timed out) / closed, last hour.", rates)
    metric("tollgate_workflow_duration_p95_seconds", "gauge", "p95 duration of completed runs, last hour.",
           [({"workflow_type": r.workflow_type}, r.p95) for r in rows if r.p95 is not None])  # fmt: skip
    age = state.age()
    metric("tollgate_monitoring_snapshot_age_seconds", "gauge", "Seconds since the snapshot was refreshed.",
           [({}, age.total_seconds())] if age is not None else [])  # fmt: skip
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@operators_only
@require_GET
def pending(request: AuthenticatedRequest) -> HttpResponse:
    now = timezone.now()
    queues, queue_error = services.live_task_queues()
    context = {
        "running": services.running_by_age(now=now), "age_buckets": [name for name, _ in services.AGE_BUCKETS],
        "waiting": services.waiting_summary(),
        "approvals": services.approval_figures(start=now - timedelta(days=7), now=now), "queues": queues,
        "down": queue_error, **_snapshot_context(),
    }  # fmt: skip
    data = {key: context[key] for key in ("running", "age_buckets", "waiting", "approvals", "queues")}
    data.update({"temporal_error": queue_error, "snapshot": _snapshot_json(context)})
    return _respond(request, "monitoring/pending.html", context, data)


@operators_only
@require_GET
def trends(request: AuthenticatedRequest) -> HttpResponse:
    state = SnapshotState.current()
    window, start, end = _window(request, state)
    show_system = _show_system(request)
    figures = services.trends(start=start, end=end, snapshot_at=state.refreshed_at, show_system=show_system)
    context = {
        "window": window, "windows": list(services.WINDOWS), "start": start, "end": end, "show_system": show_system,
        "chart": charts.throughput_chart(figures["series"]),
        "histograms": {name: charts.histogram(counts) for name, counts in figures["durations"].items()},
        **_snapshot_context(state),
    }  # fmt: skip
    data = {
        "window": {"name": window, "start": start, "end": end}, **figures, "show_system": show_system,
        "snapshot": _snapshot_json(context),
    }  # fmt: skip
    return _respond(request, "monitoring/trends.html", context, data)


# ---- batch actions -----------------------------------------------------------------------

BATCH_QUERY_MAX = 2000


def _require_act(request: AuthenticatedRequest) -> None:
    if not can_act(request.user):
        raise PermissionDenied("Batch actions need the monitoring.act_on_workflows permission.")


def _batch_problem(exc: temporal.TemporalError) -> tuple[str, int]:
    """A Temporal error in words, with the status the page answers."""
    if isinstance(exc, visibility.BadQuery):
        return f"Temporal refused the query: {exc}", 400
    if isinstance(exc, temporal.TemporalUnavailable):
        return f"Temporal is unreachable ({exc}): nothing was sent. Try again when it answers.", 503
    return f"Temporal could not answer: {exc}", 502


@operators_only
@require_GET
def batch(request: AuthenticatedRequest) -> HttpResponse:
    """Step one: the explorer's query, how many runs it matches (running and in all) and the first of
    them, and the form choosing what to do to them."""
    _require_act(request)
    query = request.GET.get("q", "").strip()[:BATCH_QUERY_MAX]
    context: dict[str, Any] = {
        "query": query, "form": {"action": request.GET.get("action", "")}, "error": "", "total": None,
        "running": None, "sample": [], "actions": ActionLog.Action.choices, **_snapshot_context(),
    }  # fmt: skip
    status = 200
    if not query:
        context["error"], status = "Query: a batch acts on the runs a visibility query matches; give one.", 400
    else:
        try:
            context["sample"], _, context["total"] = temporal.run(
                visibility.list_page_and_count, query=query, page_size=services.BATCH_SAMPLE, token=None
            )
            context["running"] = temporal.run(visibility.count, query=services.narrowed(query, services.RUNNING_ONLY))
        except temporal.TemporalError as exc:
            context["error"], status = _batch_problem(exc)
    return render(request, "monitoring/batch.html", context, status=status)


def _batch_form(request: AuthenticatedRequest) -> tuple[dict[str, str], Any, str]:
    """The batch form's fields, the signal's decoded input, and what is wrong with them (naming the field)."""
    form = {
        "q": request.POST.get("q", "").strip()[:BATCH_QUERY_MAX],
        "action": request.POST.get("action", ""),
        "reason": request.POST.get("reason", "").strip()[:2000],
        "signal": request.POST.get("signal", "").strip()[:200],
        "input": request.POST.get("input", "").strip(),
    }
    arg: Any = None
    if not services.storable(*form.values()):
        return form, None, "A NUL character in a field: the audit log could not store it, so nothing was sent."
    if not form["q"]:
        return form, None, "Query: a batch acts on the runs a visibility query matches; give one."
    if form["action"] not in ActionLog.Action.values:
        return form, None, "Action: choose cancel, terminate, signal or reset."
    if form["action"] != ActionLog.Action.SIGNAL and not form["reason"]:
        return form, None, f"Reason: a batch {form['action']} needs one; it goes to each workflow and the audit log."
    if form["action"] == ActionLog.Action.SIGNAL:
        if not form["signal"]:
            return form, None, "Signal: name the signal to send."
        if form["input"]:
            try:
                arg = json_value_from_text(form["input"], "signal input")
            except InputError as exc:
                return form, None, f"Signal input: the {exc}."
    return form, arg, ""


@operators_only
@require_POST
def batch_run(request: AuthenticatedRequest) -> HttpResponse:
    """Step two (no ``confirm_count``): the plan, with the count to type in. Step three: the count
    typed matches what the query matches now, so the batch job starts, audited, and the page follows
    its progress. Refusals are audited like the single action's."""
    _require_act(request)
    form, arg, problem = _batch_form(request)
    context: dict[str, Any] = {
        "query": form["q"], "form": form, "error": problem, "actions": ActionLog.Action.choices, "plan": None,
        **_snapshot_context(),
    }  # fmt: skip
    if problem:
        return render(request, "monitoring/batch.html", context, status=400)
    try:
        context["plan"] = plan = services.plan_batch(query=form["q"], action=form["action"], signal=form["signal"])
    except temporal.TemporalError as exc:
        context["error"], status = _batch_problem(exc)
        return render(request, "monitoring/batch.html", context, status=status)
    if plan.refusal:
        if not plan.split:
            services.record_batch_refusal(user=request.user, plan=plan, reason=form["reason"], arg=arg)
        context["error"] = plan.refusal
        return render(request, "monitoring/batch.html", context, status=400 if plan.split else 403)
    if plan.count == 0:
        context["error"] = "Nothing to do: no run this batch could act on matches the query now."
        return render(request, "monitoring/batch.html", context, status=400)
    typed = request.POST.get("confirm_count")
    if typed is None:
        return render(request, "monitoring/batch_confirm.html", context)
    if typed.strip() != str(plan.count):
        context["error"] = (
            f"Confirmation: you typed {typed.strip()[:20]!r}, but the batch would act on {plan.count} "
            f"workflow{'s' if plan.count != 1 else ''} now; type {plan.count} to go on."
        )
        return render(request, "monitoring/batch_confirm.html", context, status=400)
    started = services.start_batch_action(user=request.user, plan=plan, reason=form["reason"], arg=arg)
    if not started.ok:
        context["error"] = started.message
        return render(request, "monitoring/batch_confirm.html", context, status=409)
    messages.success(request, started.message)
    return redirect("monitoring:batch_job", started.job_id)


@operators_only
@require_GET
def batch_job(request: AuthenticatedRequest, job_id: str) -> HttpResponse:
    """A batch job's progress (state, total, done, failed), re-read by htmx every second while it
    runs; each read copies the counts onto the job's audit row."""
    context: dict[str, Any] = {"job_id": job_id, "job": None, "error": "", **_snapshot_context()}
    context["audit"] = ActionLog.objects.filter(detail__batch__job_id=job_id).first()
    status = 200
    try:
        context["job"] = job = temporal.run(visibility.describe_batch, job_id=job_id)
    except visibility.NotFound:
        context["error"], status = f"Temporal has no batch job {job_id!r} (or no longer keeps it).", 404
    except temporal.TemporalError as exc:
        context["error"], status = _batch_problem(exc)
    else:
        services.refresh_batch_audit(job=job)
    if request.GET.get("format") == "json":
        data = {"job_id": job_id, "job": dataclasses.asdict(context["job"]) if context["job"] else None,
                "error": context["error"]}  # fmt: skip
        return JsonResponse(data, encoder=DjangoJSONEncoder, status=status)
    template = "monitoring/batch_job.html#progress" if getattr(request, "htmx", False) else "monitoring/batch_job.html"
    return render(request, template, context, status=status)


@operators_only
@require_GET
def batch_jobs(request: AuthenticatedRequest) -> HttpResponse:
    """The namespace's recent batch jobs (Temporal's list), beside Tollgate's audited ones."""
    context: dict[str, Any] = {"jobs": [], "error": "", **_snapshot_context()}
    try:
        context["jobs"] = temporal.run(visibility.list_batches, page_size=50)
    except temporal.TemporalError as exc:
        context["error"], _ = _batch_problem(exc)
    audits = list(services.batch_audit_rows())
    started_by = {a.detail["batch"].get("job_id"): a for a in audits if a.detail["batch"].get("job_id")}
    context["rows"] = [{"job": job, "audit": started_by.get(job.job_id)} for job in context["jobs"]]
    context["audits"] = audits
    return render(request, "monitoring/batch_jobs.html", context)
