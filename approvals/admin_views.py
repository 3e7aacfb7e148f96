"""Admins' pages: escalation policies, routing rules; and out of office for everyone."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from approvals import policies, services
from approvals.forms import (
    DelegationForm,
    LevelFormSet,
    PolicyForm,
    RoutingPreviewForm,
    RoutingRuleForm,
    level_initial,
    storable_id,
)
from approvals.models import ApprovalTask, Delegation, Policy, RoutingRule
from config.http import AuthenticatedRequest

OPEN = [ApprovalTask.Status.STARTING, ApprovalTask.Status.PENDING]


def policy_admin_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff with the policy permission; everyone else gets 403."""

    @wraps(view)
    @login_required
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not (request.user.is_staff and request.user.has_perm("approvals.change_policy")):
            raise PermissionDenied("Only admins with the policy permission may manage escalation policies.")
        return view(request, *args, **kwargs)

    return wrapped


@policy_admin_required
@require_GET
def policy_list(request: AuthenticatedRequest) -> HttpResponse:
    rows = Policy.objects.annotate(
        running=Count("tasks", filter=Q(tasks__status__in=OPEN)), level_count=Count("levels", distinct=True)
    ).order_by("retired_at", "name")
    return render(request, "approvals/policies/list.html", {"policies": rows})


@policy_admin_required
@require_http_methods(["GET", "POST"])
def policy_edit(request: AuthenticatedRequest, pk: int | None = None) -> HttpResponse:
    policy = get_object_or_404(Policy, pk=pk) if pk else None
    if request.method == "POST":
        form = PolicyForm(request.POST, instance=policy)
        levels = LevelFormSet(request.POST, prefix="levels")
        action = request.POST.get("action", "save")
        if action == "add_level":
            levels = _with_extra_level(request.POST)
        elif form.is_valid() and levels.is_valid():
            if action == "preview":
                snapshot = _snapshot_from_forms(form.cleaned_data, levels.levels())
                context = {"form": form, "levels": levels, "policy": policy, "preview": policies.timeline(snapshot)}
                return render(request, "approvals/policies/edit.html", context)
            fields = {k: v for k, v in form.cleaned_data.items() if k != "revision"}
            try:
                version = policies.save_policy(
                    policy=policy, fields=fields, levels=levels.levels(), user=request.user,
                    revision=form.cleaned_data.get("revision") or 0,
                )  # fmt: skip
            except policies.StaleEdit as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Saved {version.policy.name} as version {version.number}.")
                return redirect("approvals:policy_detail", pk=version.policy.pk)
        status = 422 if action == "save" else 200
    else:
        form = PolicyForm(instance=policy, initial={"revision": policy.revision if policy else 0})
        initial = level_initial(policy) if policy else [{"required_approvals": 1}]
        levels = LevelFormSet(prefix="levels", initial=initial)
        status = 200
    return render(
        request, "approvals/policies/edit.html", {"form": form, "levels": levels, "policy": policy}, status=status
    )


@policy_admin_required
@require_GET
def policy_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    policy = get_object_or_404(Policy, pk=pk)
    version = policies.current_version(policy)
    running = policy.tasks.filter(status=ApprovalTask.Status.PENDING).order_by("created_at")
    context = {
        "policy": policy,
        "version": version,
        "versions": policy.versions.select_related("created_by"),
        "timeline": policies.timeline(version.snapshot),
        "running": running,
    }
    return render(request, "approvals/policies/detail.html", context)


@policy_admin_required
@require_POST
def policy_duplicate(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    copy = policies.duplicate_policy(policy=get_object_or_404(Policy, pk=pk), user=request.user)
    messages.success(request, f"Created {copy.name}. Rename it and adjust its levels.")
    return redirect("approvals:policy_edit", pk=copy.pk)


@policy_admin_required
@require_POST
def policy_retire(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    policy = get_object_or_404(Policy, pk=pk)
    try:
        policies.retire_policy(policy=policy)
    except policies.PolicyInUse as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Retired {policy.name}: new requests can no longer use it.")
    return redirect("approvals:policy_detail", pk=policy.pk)


@policy_admin_required
@require_POST
def policy_push(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Send the current version to chosen running tasks (or all of them)."""
    policy = get_object_or_404(Policy, pk=pk)
    running = policy.tasks.filter(status=ApprovalTask.Status.PENDING)
    unknown: list[str] = []
    if request.POST.get("all") != "1":
        chosen = request.POST.getlist("task")[:1000]
        ids = {int(v) for v in chosen if storable_id(v, ApprovalTask)}  # an IN beyond the column overflows
        running = running.filter(pk__in=ids)
        found = set(running.values_list("pk", flat=True))
        unknown = [v for v in chosen if not (storable_id(v, ApprovalTask) and int(v) in found)]
    for value in unknown:
        messages.error(request, f"Not sent to task {value[:30]!r}: this policy has no running task with that id.")
    tasks = list(running)
    if not tasks:
        if not unknown:
            messages.warning(request, "Choose at least one running task.")
        return redirect("approvals:policy_detail", pk=policy.pk)
    version = policies.current_version(policy)
    sent, problems = services.push_policy_version(version=version, tasks=tasks, user=request.user)
    messages.success(request, f"Version {version.number} sent to {sent} running task(s).")
    for problem in problems:
        messages.error(request, f"Not sent to {problem}")
    return redirect("approvals:policy_detail", pk=policy.pk)


@login_required
@require_http_methods(["GET", "POST"])
def routing(request: AuthenticatedRequest) -> HttpResponse:
    if not (request.user.is_staff and request.user.has_perm("approvals.change_routingrule")):
        raise PermissionDenied("Only admins may manage routing rules.")
    form = RoutingRuleForm(request.POST if request.POST.get("action") == "add" else None)
    preview = RoutingPreviewForm(request.GET if "preview" in request.GET else None)
    if request.method == "POST" and request.POST.get("action") == "add" and form.is_valid():
        form.save()
        messages.success(request, "Routing rule added.")
        return redirect("approvals:routing")
    if request.method == "POST" and request.POST.get("action") == "delete":
        rule = request.POST.get("rule", "")
        RoutingRule.objects.filter(pk=rule if storable_id(rule, RoutingRule) else 0).delete()
        messages.success(request, "Routing rule removed.")
        return redirect("approvals:routing")
    chosen = None
    if preview.is_bound and preview.is_valid():
        data = preview.cleaned_data
        chosen = policies.route_policy(request_type=data["request_type"], payload=data["payload"])
        chosen = chosen or Policy.objects.filter(is_default=True, retired_at=None).first()
    context = {
        "rules": RoutingRule.objects.select_related("policy"),
        "form": form,
        "preview": preview,
        "chosen": chosen,
        "chosen_timeline": policies.timeline(policies.current_version(chosen).snapshot) if chosen else None,
    }
    return render(request, "approvals/routing.html", context, status=422 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def out_of_office(request: AuthenticatedRequest) -> HttpResponse:
    user = request.user
    may_choose = user.is_staff and user.has_perm("approvals.add_delegation")
    form = DelegationForm(request.POST or None, for_user=user, may_choose_user=may_choose)
    if request.method == "POST" and request.POST.get("action") == "end":
        chosen = request.POST.get("delegation", "")
        ending = Delegation.objects.filter(pk=chosen if storable_id(chosen, Delegation) else 0).first()
        if ending is None:
            messages.error(request, "Nothing ended: that out-of-office entry does not exist (any more).")
            return redirect("approvals:away")
        if not may_choose and ending.user_id != user.pk:
            # Said plainly, not "ended": a delegate cannot end the absence of the person they stand in for.
            raise PermissionDenied(
                f"Nothing ended: only {ending.user} or an admin may end {ending.user}'s out of office."
            )
        services.end_delegation(delegation=ending, by=user)
        messages.success(request, f"Out of office ended: {ending.delegate} no longer stands in for {ending.user}.")
        return redirect("approvals:away")
    if request.method == "POST" and form.is_valid():
        delegation = form.save(commit=False)
        delegation.created_by = user
        delegation.save()
        added = services.apply_delegation(delegation=delegation)
        messages.success(
            request,
            f"{delegation.delegate} stands in for {delegation.user}; added to {added} open task{pluralize(added)}.",
        )
        return redirect("approvals:away")
    delegations = Delegation.objects.select_related("user", "delegate").filter(ends_on__gte=timezone.localdate())
    if not may_choose:
        delegations = delegations.filter(Q(user=user) | Q(delegate=user))
    context = {"form": form, "delegations": delegations, "may_choose": may_choose}
    return render(request, "approvals/away.html", context, status=422 if form.errors else 200)


def _with_extra_level(data: Any) -> Any:
    copy = data.copy()
    raw = copy.get("levels-TOTAL_FORMS", "0")
    # ASCII and short: "²" and 5,000 digits pass ``isdigit`` yet ``int`` refuses them.
    total = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 4 else 0
    copy["levels-TOTAL_FORMS"] = str(min(total + 1, 10))
    copy[f"levels-{total}-required_approvals"] = "1"
    return LevelFormSet(copy, prefix="levels")


def _snapshot_from_forms(fields: dict[str, Any], levels: list[policies.LevelData]) -> dict[str, Any]:
    return {
        "final_action": fields["final_action"],
        "levels": [
            {
                "groups": sorted(g.name for g in level.groups),
                "users": sorted(u.get_username() for u in level.users),
                "timeout_seconds": int(level.timeout.total_seconds()),
                "reminder_seconds": int(level.reminder.total_seconds()) if level.reminder else None,
                "required_approvals": level.required_approvals,
            }
            for level in levels
        ],
    }
