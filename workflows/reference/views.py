"""The start page of the reference workflows (``/approvals/start/``)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from config.http import AuthenticatedRequest
from monitoring.access import can_monitor
from workflows import client as temporal
from workflows.parsing import InputError
from workflows.reference.forms import START_FORMS, StartForm
from workflows.reference.registry import KINDS, StartedWorkflow, start_reference_workflow


@login_required
@require_GET
def start_workflow(request: AuthenticatedRequest) -> HttpResponse:
    """One small form per reference workflow; after a start, what was started and where to watch it."""
    context = _start_context(None)
    context["started"] = request.session.pop("started_workflow", None)
    return render(request, "reference/start_workflow.html", context)


@login_required
@require_POST
def start_workflow_kind(request: AuthenticatedRequest, kind: str) -> HttpResponse:
    if kind not in START_FORMS:
        raise Http404("No such kind of workflow.")
    form = START_FORMS[kind](request.POST, prefix=kind)
    problem, status = "", 422
    if form.is_valid():
        try:
            started = start_reference_workflow(
                kind=kind, data=form.cleaned_data["input"], requested_by=request.user.get_username()
            )
        except InputError as exc:  # the workflow's own parser: the field it names, if the form has it
            name = exc.field.split("[")[0].split(".")[0]
            form.add_error(name if name in form.fields else None, str(exc))
        except temporal.WorkflowExists as exc:
            form.add_error(KINDS[kind].key if KINDS[kind].key in form.fields else None, f"{exc}; choose another id.")
        except temporal.TemporalUnavailable:
            problem, status = (
                "The workflow engine cannot be reached right now; nothing was started. Try again later.",
                503,
            )
        except temporal.TemporalError as exc:
            problem, status = f"The workflow engine refused the start: {exc}", 502
        else:
            request.session["started_workflow"] = _started(request, started)
            messages.success(request, f"Started {started.start.workflow_type} {started.start.workflow_id}.")
            return redirect("reference:start")
    context = _start_context(form)
    context["problem"] = problem
    return render(request, "reference/start_workflow.html", context, status=status)


def _start_context(bound: StartForm | None) -> dict[str, object]:
    forms = [bound if bound and bound.kind == kind else form(prefix=kind) for kind, form in START_FORMS.items()]
    return {"forms": forms, "problem": ""}


def _started(request: AuthenticatedRequest, started: StartedWorkflow) -> dict[str, str]:
    start = started.start
    monitoring_url = ""
    if started.run_id and can_monitor(request.user):
        monitoring_url = reverse("monitoring:execution", args=[start.workflow_id, started.run_id])
    return {
        "workflow_type": start.workflow_type,
        "workflow_id": start.workflow_id,
        "run_id": started.run_id,
        "temporal_url": started.temporal_url,
        "monitoring_url": monitoring_url,
    }
