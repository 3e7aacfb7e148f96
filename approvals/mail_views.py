"""The pages mail leads to: the confirmation page of an Approve/Reject link, and mail settings."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from approvals import services
from approvals.forms import DecisionForm
from approvals.mail import LinkRefused, link_refusal, resolve_link
from approvals.models import MailLinkUse, MailPreference
from config.http import AuthenticatedRequest


def _page(request: HttpRequest, context: dict[str, object], *, status: int = 200) -> HttpResponse:
    response = render(request, "approvals/mail_link.html", context, status=status)
    # The token is the credential: keep it out of caches and out of the Referer of links followed from here.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_http_methods(["GET", "POST"])
def mail_link(request: HttpRequest, token: str) -> HttpResponse:
    """No login: the signed link names its recipient, and the decision is theirs. A GET only shows
    what the link would do (mail scanners open links); the POST (with its CSRF token) decides,
    through the same path as the task page (``services.decide_task``)."""
    try:
        link, task, user = resolve_link(token)
    except LinkRefused as refused:
        return _page(request, {"refusal": str(refused)}, status=refused.status)
    context: dict[str, object] = {"task": task, "recipient": user, "choice": link.choice}
    refusal = link_refusal(link, task, user)
    if refusal:
        return _page(request, {**context, "refusal": refusal}, status=409 if request.method == "POST" else 200)
    form = DecisionForm({"choice": link.choice, "comment": request.POST.get("comment", "")} if request.POST else None)
    if request.method != "POST" or not form.is_valid():
        return _page(request, {**context, "form": form}, status=422 if form.errors else 200)
    try:
        with transaction.atomic():
            MailLinkUse.objects.create(nonce=link.nonce, task=task, user=user, choice=link.choice)
    except IntegrityError:  # the same link, posted twice at once: the other one decides
        return _page(request, {**context, "refusal": link_refusal(link, task, user)}, status=409)
    result = services.decide_task(
        task=task, user=user, choice=link.choice, comment=form.cleaned_data["comment"].strip()
    )
    task.refresh_from_db()
    return _page(request, {**context, "result": result})


class MailSettingsForm(forms.ModelForm):
    class Meta:
        model = MailPreference
        fields = ["delivery"]
        widgets = {"delivery": forms.RadioSelect}
        labels = {"delivery": "Mail me about requests waiting for my decision"}


@login_required
@require_http_methods(["GET", "POST"])
def mail_settings(request: AuthenticatedRequest) -> HttpResponse:
    preference = MailPreference.objects.filter(user=request.user).first() or MailPreference(user=request.user)
    form = MailSettingsForm(request.POST or None, instance=preference)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Saved: {preference.get_delivery_display().lower()}.")
        return redirect("approvals:settings")
    context = {"form": form, "email": request.user.email}
    return render(request, "approvals/settings.html", context, status=422 if form.errors else 200)
