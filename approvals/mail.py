"""Mail you can act on: notification and digest mails with signed Approve and Reject links.

A link opens a confirmation page; only that page's POST decides (mail scanners follow links, so a
GET never may). Each link is signed (``TimestampSigner``, salted for this use only), names its
recipient, the task, the task's level when it was mailed and the choice, carries a random nonce
that ``MailLinkUse`` makes single-use, and expires after ``TOLLGATE_MAIL_LINK_MAX_AGE``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.mail import EmailMessage
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalTask, Decision, MailLinkUse

SALT = "tollgate.approvals.mail-link"
# The payload fields a mail shows, and how much of each: enough to decide on, little enough to read.
MAIL_FIELDS = 6
MAIL_FIELD_CHARS = 200


@dataclass(frozen=True)
class MailLink:
    task_id: int
    user_id: int
    level: int
    choice: str
    nonce: str


class LinkRefused(Exception):
    """A link that cannot decide, with the honest reason as its message."""

    def __init__(self, message: str, *, status: int = 200) -> None:
        super().__init__(message)
        self.status = status


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def link_token(*, task: ApprovalTask, user: User, choice: str) -> str:
    payload = {"t": task.pk, "u": user.pk, "l": task.level, "c": choice, "n": secrets.token_urlsafe(12)}
    return _signer().sign_object(payload, compress=True)


def link_url(*, task: ApprovalTask, user: User, choice: str) -> str:
    token = link_token(task=task, user=user, choice=choice)
    return settings.TOLLGATE_BASE_URL + reverse("approvals:mail_link", args=[token])


def read_link(token: str) -> MailLink:
    """The link's content, or ``LinkRefused`` when it is expired, altered or not one of ours."""
    hours = int(settings.TOLLGATE_MAIL_LINK_MAX_AGE.total_seconds() // 3600)
    try:
        data = _signer().unsign_object(token, max_age=settings.TOLLGATE_MAIL_LINK_MAX_AGE)
    except signing.SignatureExpired:
        raise LinkRefused(
            f"This link has expired: links in mails work for {hours} hour{'s' if hours != 1 else ''}. "
            "Open the task in Tollgate to decide.",
            status=410,
        ) from None
    except (signing.BadSignature, ValueError):
        raise LinkRefused(
            "This link is not valid: it may have been cut short or changed. Open the task in Tollgate to decide.",
            status=400,
        ) from None
    try:
        link = MailLink(int(data["t"]), int(data["u"]), int(data["l"]), str(data["c"]), str(data["n"]))
    except (KeyError, TypeError, ValueError):
        raise LinkRefused("This link is not valid. Open the task in Tollgate to decide.", status=400) from None
    if link.choice not in Decision.Choice.values:
        raise LinkRefused("This link is not valid. Open the task in Tollgate to decide.", status=400)
    return link


def when(moment: datetime | None) -> str:
    """A time as every page shows it: the active zone (the viewer's, or TIME_ZONE), with its name."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z") if moment else "an unknown time"


def link_refusal(link: MailLink, task: ApprovalTask, user: User) -> str:
    """Why this valid link can no longer decide, in the words the page shows; "" when it can."""
    used = MailLinkUse.objects.filter(nonce=link.nonce).first()
    if used is not None:
        return f"This link was already used at {when(used.used_at)}: each link in a mail works once."
    if task.status != ApprovalTask.Status.PENDING:
        by = f" by {task.decided_by}" if task.decided_by else ""
        return f"This request was already {task.get_status_display().lower()}{by} at {when(task.decided_at)}."
    mine = task.decisions.filter(user=user.pk).first()
    if mine is not None:
        return f"You already decided this request: you chose to {mine.choice} at {when(mine.created_at)}."
    if task.required_approvals <= 1:
        first = (
            task.decisions.exclude(result=Decision.Result.IGNORED).select_related("user").order_by("created_at").first()
        )
        if first is not None:
            return f"Already decided by {first.user} at {when(first.created_at)}."
    if task.level != link.level:
        return (
            f"This request was escalated past you: it is at level {task.level} now, and this link was for "
            f"level {link.level}. Open it in Tollgate to see who decides now."
        )
    refusal = task.decision_refusal(user)
    return f"You may not decide this request now: {refusal}." if refusal else ""


def resolve_link(token: str) -> tuple[MailLink, ApprovalTask, User]:
    """The link, its task and its recipient; ``LinkRefused`` when the link itself is unusable."""
    link = read_link(token)
    task = ApprovalTask.objects.select_related("policy").filter(pk=link.task_id).first()
    user = User.objects.filter(pk=link.user_id, is_active=True).first()
    if task is None or user is None:
        raise LinkRefused("This link's request or recipient no longer exists.", status=410)
    return link, task, user


def mail_fields(task: ApprovalTask) -> list[tuple[str, str]]:
    """The first payload fields, each on one line and cut short: the mail is a summary, the page has all."""
    fields = []
    for key, text, _ in task.payload_items()[:MAIL_FIELDS]:
        line = " ".join(text.split())
        fields.append((key, line if len(line) <= MAIL_FIELD_CHARS else line[: MAIL_FIELD_CHARS - 1] + "…"))
    return fields


def _task_context(task: ApprovalTask, user: User) -> dict[str, Any]:
    return {
        "task": task,
        "fields": mail_fields(task),
        "more_fields": max(len(task.payload or {}) - MAIL_FIELDS, 0),
        "due": when(task.due_at) if task.due_at else "",
        "approve_url": link_url(task=task, user=user, choice=Decision.Choice.APPROVE),
        "reject_url": link_url(task=task, user=user, choice=Decision.Choice.REJECT),
        "task_url": settings.TOLLGATE_BASE_URL + task.get_absolute_url(),
    }


def _headers() -> dict[str, str]:
    # Tell mail servers and out-of-office responders that nobody typed this (RFC 3834).
    return {"Auto-Submitted": "auto-generated"}


def task_mail(*, task: ApprovalTask, user: User, kind: str, level: int) -> EmailMessage:
    """One notification for one approver, with links that decide as that approver only."""
    hours = int(settings.TOLLGATE_MAIL_LINK_MAX_AGE.total_seconds() // 3600)
    context = {
        **_task_context(task, user),
        "kind": kind,
        "level": level,
        "user": user,
        "link_hours": hours,
        "settings_url": settings.TOLLGATE_BASE_URL + reverse("approvals:settings"),
    }
    with timezone.override(settings.TIME_ZONE):  # a mail has no viewer: the deployment's zone, named
        context["due"] = when(task.due_at) if task.due_at else ""
        # A title from any client may hold a newline, which a mail header may not.
        subject = " ".join(render_to_string("approvals/email/subject.txt", context).split())
        body = render_to_string("approvals/email/body.txt", context)
    return EmailMessage(subject, body, None, [user.email], headers=_headers())


def digest_mail(*, user: User, tasks: list[ApprovalTask]) -> EmailMessage:
    """The daily digest: every open task the user may decide, each with its own links."""
    hours = int(settings.TOLLGATE_MAIL_LINK_MAX_AGE.total_seconds() // 3600)
    with timezone.override(settings.TIME_ZONE):
        context = {
            "user": user,
            "items": [_task_context(task, user) for task in tasks],
            "link_hours": hours,
            "inbox_url": settings.TOLLGATE_BASE_URL + reverse("approvals:inbox"),
            "settings_url": settings.TOLLGATE_BASE_URL + reverse("approvals:settings"),
        }
        subject = " ".join(render_to_string("approvals/email/digest_subject.txt", context).split())
        body = render_to_string("approvals/email/digest_body.txt", context)
    return EmailMessage(subject, body, None, [user.email], headers=_headers())
