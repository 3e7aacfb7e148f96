from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.functional import cached_property
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from approvals import services
from approvals.audit import verify_task_chain
from approvals.forms import BulkDecisionForm, DecisionForm, RequestForm
from approvals.inbox import SORT_LABELS, VIAS, InboxQuery, inbox_tasks, next_task, parse_inbox_query
from approvals.models import ApprovalTask, BulkDecision, Decision, InboxCounts, Policy, SavedView, TaskClaim
from config.http import AuthenticatedRequest
from monitoring.access import can_monitor
from workflows import client as temporal
from workflows.models import LedgerEntry

PAGE_SIZE = 25


class CappedPaginator(Paginator):
    """Counts at most ``INBOX_COUNT_CAP + 1`` rows, so deep inboxes cost what shallow ones do; pages go as
    far as the cap ("page 3 of 40+"), and a search narrows what lies beyond it."""

    def __init__(self, object_list: Any, per_page: int, *, known: InboxCounts | None = None) -> None:
        super().__init__(object_list, per_page)
        if known is None:
            cap = settings.INBOX_COUNT_CAP
            seen = object_list[: cap + 1].count()
            known = InboxCounts(min(seen, cap), 0, seen > cap)
        self.capped = known.capped
        self._known = known.pending

    @cached_property
    def count(self) -> int:
        return self._known


def get_task_for_user(user: User | AnonymousUser, pk: int) -> ApprovalTask:
    """The task if the user may see it (assigned, requester, staff); 404 otherwise."""
    visible = ApprovalTask.objects.visible_to(user) | ApprovalTask.objects.filter(requester=user.pk)
    if user.has_perm("approvals.view_approvaltask"):  # operators and admins see every task
        visible = ApprovalTask.objects.all()
    try:
        return visible.select_related("policy", "requester").distinct().get(pk=pk)
    except ApprovalTask.DoesNotExist:
        raise Http404("No such task, or it is not assigned to you.") from None


@login_required
@require_GET
def inbox(request: AuthenticatedRequest) -> HttpResponse:
    query = parse_inbox_query(request.GET)
    counts = ApprovalTask.objects.inbox_counts(request.user)
    request.tollgate_pending = counts  # type: ignore[attr-defined]  # the header's badge reuses it
    tasks = (
        inbox_tasks(request.user, query)
        .select_related("policy")
        .prefetch_related(
            Prefetch("claims", queryset=TaskClaim.objects.select_related("user"))  # one query, claims or none
        )
    )
    # The header's counts are the plain pending list's; anything narrower counts its own rows (capped).
    paginator = CappedPaginator(tasks, PAGE_SIZE, known=None if query.narrowed else counts)
    page = paginator.get_page(request.GET.get("page"))
    context = {
        "page": page,
        "counts": counts,
        "query": query,
        "sorts": _sorts(query),
        "field_names": _payload_columns(page.object_list),
        "saved_views": SavedView.objects.filter(user=request.user.pk),
        "policies": Policy.objects.filter(retired_at=None).only("slug", "name"),
        "vias": VIAS,
        "new_run": uuid.uuid4(),
        "bulk_limit": BULK_LIMIT,
    }
    template = "approvals/inbox.html#rows" if request.htmx and not request.htmx.boosted else "approvals/inbox.html"
    return render(request, template, context)


def _sorts(query: InboxQuery) -> dict[str, dict[str, object]]:
    """The sortable headers: label, the link that sorts by it, and whether (and which way) it sorts now."""
    return {
        key: {"label": label, "link": query.sort_link(key), "active": query.sort == key,
              "descending": query.sort == key and query.descending}
        for key, label in SORT_LABELS.items()
    }  # fmt: skip


def _payload_columns(tasks: Any) -> list[str]:
    """The payload fields the page's policies ask to show, in first-seen order (at most three per policy)."""
    names: list[str] = []
    for task in tasks:
        for name in task.policy.inbox_field_names if task.policy else []:
            if name not in names:
                names.append(name)
    return names


@login_required
@require_POST
def save_view(request: AuthenticatedRequest) -> HttpResponse:
    """Name the inbox's current sort and filters; the name becomes a tab (saving a name again replaces it)."""
    name = request.POST.get("name", "").strip().replace("\x00", "")[:60]
    query = parse_inbox_query(QueryDict(request.POST.get("query", "")[:1000]))
    if not name:
        messages.error(request, "A saved view needs a name.")
    else:
        SavedView.objects.update_or_create(user=request.user, name=name, defaults={"query": query.urlencode()})
        messages.success(request, f"Saved the view “{name}”.")
    return redirect(reverse("approvals:inbox") + (f"?{query.urlencode()}" if query.urlencode() else ""))


@login_required
@require_POST
def delete_view(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    deleted, _ = SavedView.objects.filter(user=request.user.pk, pk=pk).delete()
    if not deleted:
        raise Http404("No such saved view of yours.")
    messages.success(request, "Saved view removed.")
    return redirect("approvals:inbox")


@login_required
@require_GET
def task_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    task = get_task_for_user(request.user, pk)
    return render(request, "approvals/task_detail.html", _detail_context(request, task, DecisionForm()))


@login_required
@require_POST
def decide(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    task = get_task_for_user(request.user, pk)
    if task.requester_id == request.user.pk:
        raise PermissionDenied("Requesters may not decide their own request.")
    form = DecisionForm(request.POST)
    if not form.is_valid():
        context = _detail_context(request, task, form)
        return render(request, "approvals/task_detail.html#decision", context, status=422)
    if not task.can_be_decided_by(request.user) and not task.decisions.filter(user=request.user.pk).exists():
        result = services.DecideResult("lost", _closed_message(task))
    else:
        result = services.decide_task(
            task=task,
            user=request.user,
            choice=form.cleaned_data["choice"],
            comment=form.cleaned_data["comment"].strip(),
        )
    task.refresh_from_db()
    if not request.htmx:
        level = messages.SUCCESS if result.state == "applied" else messages.WARNING
        messages.add_message(request, level, result.message)
        query = parse_inbox_query(request.GET).urlencode()
        return redirect(task.get_absolute_url() + (f"?{query}" if query else ""))
    context = _detail_context(request, task, DecisionForm(), result=result)
    response = render(request, "approvals/task_detail.html#decided", context)
    return trigger_client_event(response, "tollgate:decided", {"task": task.pk, "state": result.state})


@login_required
@require_POST
def claim(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """ "I'm on it" (``action=claim``) or give it back (``action=release``)."""
    task = get_task_for_user(request.user, pk)
    if request.POST.get("action") == "release":
        message = services.release_claim(task=task, user=request.user)
    else:
        message = services.claim_task(task=task, user=request.user)
    messages.info(request, message)
    query = parse_inbox_query(request.GET).urlencode()
    return redirect(task.get_absolute_url() + (f"?{query}" if query else ""))


@login_required
@require_POST
def withdraw(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    task = get_task_for_user(request.user, pk)
    if task.requester_id != request.user.pk:
        raise PermissionDenied("Only the requester may withdraw a request.")
    reason = request.POST.get("reason", "").replace("\x00", "").strip()[:500]
    messages.info(request, services.withdraw_request(task=task, user=request.user, reason=reason))
    return redirect(task)


@login_required
@require_POST
def comment(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Ask or answer on a task: its requester and those it is assigned to (not bystanders who only
    see every task, such as operators)."""
    task = get_task_for_user(request.user, pk)
    if not _may_comment(request, task):
        raise PermissionDenied("Only the requester and the task's approvers discuss it.")
    body = request.POST.get("body", "").strip()
    if not body or "\x00" in body or len(body) > 2000:
        messages.error(request, "A comment needs some text (at most 2,000 characters).")
    else:
        services.comment_on_task(task=task, user=request.user, body=body)
    query = parse_inbox_query(request.GET).urlencode()
    return redirect(task.get_absolute_url() + (f"?{query}" if query else "") + "#task-comments")


BULK_LIMIT = 500  # per bulk decision: about 500 rows and signals, a few seconds at most


@login_required
@require_POST
def bulk_decide(request: AuthenticatedRequest) -> HttpResponse:
    form = BulkDecisionForm(request.POST)
    tasks = _bulk_tasks(request, form) if form.is_valid() else []
    missing = (
        []
        if not form.is_valid() or form.cleaned_data["all"]
        else sorted(set(form.task_ids()[:BULK_LIMIT]) - {t.pk for t in tasks})
    )
    if form.is_valid() and not tasks and not missing:
        form.add_error(None, "Select at least one pending task.")
    if not form.is_valid():
        if not request.htmx:
            messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
            return redirect("approvals:inbox")
        return render(request, "approvals/bulk.html#results", {"form": form, "new_run": uuid.uuid4()}, status=422)
    run_id = form.cleaned_data["run"] or uuid.uuid4()
    run, created = BulkDecision.objects.get_or_create(
        pk=run_id,
        user=request.user,
        defaults={"choice": form.cleaned_data["choice"], "comment": form.cleaned_data["comment"].strip(),
                  "total": len(tasks) + len(missing)},
    )  # fmt: skip
    if created:  # a second submission of the same run (a double click) shows the first one's results
        services.decide_in_bulk(run=run, tasks=tasks, user=request.user, missing=missing)
    if not request.htmx:
        return redirect("approvals:bulk_result", pk=run.pk)
    return render(request, "approvals/bulk.html#results", {"run": run, "labels": services.BULK_LABELS,
                                                            "new_run": uuid.uuid4()})  # fmt: skip


def _bulk_tasks(request: AuthenticatedRequest, form: BulkDecisionForm) -> list[ApprovalTask]:
    """The tasks a bulk decision names, in the inbox's order: every pending task matching the inbox's
    query, or the ticked ones the user may see (ids of other tasks name nothing)."""
    if form.cleaned_data["all"]:
        query = replace(parse_inbox_query(QueryDict(form.cleaned_data["query"])), show="pending")
        tasks = inbox_tasks(request.user, query)
    else:
        ids = form.task_ids()[:BULK_LIMIT]
        tasks = ApprovalTask.objects.visible_to(request.user).filter(pk__in=ids).order_by("due_at", "pk")
    return list(tasks.select_related("policy")[:BULK_LIMIT])


@login_required
@require_GET
def bulk_result(request: AuthenticatedRequest, pk: uuid.UUID) -> HttpResponse:
    run = get_object_or_404(BulkDecision, pk=pk, user=request.user.pk)
    return render(request, "approvals/bulk.html", {"run": run, "labels": services.BULK_LABELS})


@login_required
@require_GET
def bulk_progress(request: AuthenticatedRequest, pk: uuid.UUID) -> HttpResponse:
    """Polled by the inbox while its bulk decision runs; before the run's row exists, "Starting…"."""
    run = BulkDecision.objects.filter(pk=pk, user=request.user.pk).first()
    return render(request, "approvals/bulk.html#progress", {"run": run})


@login_required
@require_GET
def pending_count(request: AuthenticatedRequest) -> HttpResponse:
    """The header's badge, re-fetched by live pages."""
    return render(request, "approvals/_count.html")


@login_required
@require_GET
def my_decisions(request: AuthenticatedRequest) -> HttpResponse:
    decisions = Decision.objects.filter(user=request.user.pk).select_related("task").order_by("-created_at")
    page = Paginator(decisions, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "approvals/my_decisions.html", {"page": page})


@login_required
@require_GET
def my_requests(request: AuthenticatedRequest) -> HttpResponse:
    tasks = ApprovalTask.objects.filter(requester=request.user.pk).select_related("policy").order_by("-created_at")
    page = Paginator(tasks, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "approvals/my_requests.html", {"page": page})


@login_required
@require_http_methods(["GET", "POST"])
def new_request(request: AuthenticatedRequest) -> HttpResponse:
    form = RequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        task = services.create_request(
            user=request.user,
            title=form.cleaned_data["title"],
            description=form.cleaned_data["description"],
            policy=form.cleaned_data["policy"],
            payload=form.cleaned_data["payload"],
            request_type=form.cleaned_data["request_type"].strip(),
        )
        messages.success(request, "Request sent. It appears in the approvers' inboxes as soon as its workflow starts.")
        return redirect(task)
    return render(request, "approvals/new_request.html", {"form": form}, status=422 if form.errors else 200)


def _detail_context(
    request: AuthenticatedRequest, task: ApprovalTask, form: DecisionForm, result: services.DecideResult | None = None
) -> dict[str, object]:
    my_decision = task.decisions.filter(user=request.user.pk).first()
    # The confirmation of my decision stays on the page through live refreshes and reloads: it is
    # derived from my Decision row, not only from the answer to the click.
    if result is None and my_decision is not None:
        result = services.outcome_of(decision=my_decision, wait=False)
    # The inbox's sort and filters, carried from the inbox to the task and on to the next one.
    query = parse_inbox_query(request.GET)
    # Loaded once, shown and verified: the trail's check costs the page no query.
    decisions = list(task.decisions.select_related("user"))
    entries = list(task.audit.all())
    # Someone else's decision on a one-approval task that is still open: it is being applied (or is in
    # the outbox), so nobody else may decide, and the page says whose it is instead of offering a form.
    decided_by_other = None
    if my_decision is None and task.is_open and task.required_approvals <= 1:
        others = [d for d in decisions if d.user_id != request.user.pk and d.result != Decision.Result.IGNORED]
        decided_by_other = min(others, key=lambda d: d.created_at) if others else None
    return {
        "task": task,
        "form": form,
        "result": result,
        "can_decide": my_decision is None and decided_by_other is None and task.can_be_decided_by(request.user),
        "my_decision": my_decision,
        "decided_by_other": decided_by_other,
        "decisions": decisions,
        "assignments": task.assignments.select_related("group", "user"),
        "audit": entries,
        "trail": verify_task_chain(task, entries=entries, decisions=decisions),
        "temporal_url": _temporal_ui_link(request, task),
        "parent": _parent(request, task),
        "ledger": _order_ledger(task),
        "inbox_query": query.urlencode(),
        "next_task_url": _next_task_url(request, task, query) if my_decision or not task.is_open else "",
        "claim": task.active_claim() if task.is_open else None,
        "comments": task.comments.select_related("author"),
        "may_comment": _may_comment(request, task),
    }


def _may_comment(request: AuthenticatedRequest, task: ApprovalTask) -> bool:
    return (
        task.requester_id == request.user.pk
        or ApprovalTask.objects.visible_to(request.user).filter(pk=task.pk).exists()
    )


def _next_task_url(request: AuthenticatedRequest, task: ApprovalTask, query: InboxQuery) -> str:
    """The next task to decide in the inbox's order, with the same query string; "" when none is left."""
    following = next_task(request.user, replace(query, show="pending"), task)
    if following is None:
        return ""
    return following.get_absolute_url() + (f"?{query.urlencode()}" if query.urlencode() else "")


def _parent(request: HttpRequest, task: ApprovalTask) -> dict[str, str] | None:
    """The workflow that asked for this approval as a child, with links for who may follow them."""
    if not task.parent_workflow_id:
        return None
    workflow_id, run_id = task.parent_workflow_id, task.parent_run_id
    monitoring_url = ""
    if run_id and can_monitor(request.user):
        monitoring_url = reverse("monitoring:execution", args=[workflow_id, run_id])
    temporal_url = ""
    if request.user.has_perm("approvals.view_approvaltask"):
        temporal_url = temporal.temporal_ui_url(workflow_id, run_id)
    return {
        "type": task.parent_workflow_type,
        "workflow_id": workflow_id,
        "monitoring_url": monitoring_url,
        "temporal_url": temporal_url,
    }


def _order_ledger(task: ApprovalTask) -> list[LedgerEntry]:
    """For an order saga's approval: what the order has reserved, charged and compensated so far."""
    order_id = task.payload.get("order_id") if isinstance(task.payload, dict) else None
    if task.parent_workflow_type != "OrderSagaWorkflow" or not isinstance(order_id, str):
        return []
    return list(LedgerEntry.objects.filter(order_id=order_id))


def _temporal_ui_link(request: HttpRequest, task: ApprovalTask) -> str:
    """The workflow in the Temporal UI, for operators and admins."""
    return temporal.temporal_ui_url(task.workflow_id) if request.user.has_perm("approvals.view_approvaltask") else ""


def _closed_message(task: ApprovalTask) -> str:
    if task.status == ApprovalTask.Status.PENDING:
        return "This task is not assigned to you at its current level."
    by = f" by {task.decided_by}" if task.decided_by else ""
    return f"Already {task.status}{by}."
