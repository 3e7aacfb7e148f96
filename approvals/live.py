"""Live pages: tell the browsers that may show a task that it changed.

Events go out after the transaction commits (nobody hears of a row that rolled
back), from wherever the change happens: the web process or the worker's
activities. A frame is a small JSON trigger, ``{"event": "task", "task": 7,
"kind": "closed"}``; the page then re-fetches its own server-rendered parts
with htmx, so no HTML is ever built outside the templates and nobody receives
data they could not load themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q

from approvals.models import ApprovalTask

log = logging.getLogger(__name__)
OPERATORS = "operators"
MONITORING = "monitoring"


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def audience(task: ApprovalTask) -> list[int]:
    """Everyone who may see the task: assignees (directly, by group, as delegates) and the requester."""
    assignments = task.assignments.all()
    people = User.objects.filter(is_active=True).filter(
        Q(pk__in=assignments.exclude(user=None).values("user"))
        | Q(groups__in=assignments.exclude(group=None).values("group"))
        | Q(pk=task.requester_id or 0)
    )
    return sorted(set(people.values_list("pk", flat=True)))


def task_changed(task: ApprovalTask, kind: str) -> None:
    """Announce a change to ``task`` once the current transaction commits."""
    recipients = audience(task)
    frame = {"type": "live.event", "event": "task", "task": task.pk, "kind": kind}
    transaction.on_commit(lambda: send(recipients, frame))


def monitoring_changed() -> None:
    """The monitoring snapshot moved: open dashboards re-fetch (one request per page, not per row)."""
    frame = {"type": "live.event", "event": "monitoring", "kind": "snapshot"}
    transaction.on_commit(lambda: _send_group(MONITORING, frame))


def _send_group(group: str, frame: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, frame)
    except Exception:  # as in send(): a live page never fails the write behind it
        log.warning("could not send a live event to %s", group, exc_info=True)


def send(user_ids: list[int], frame: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return

    async def deliver() -> None:
        for group in [*(user_group(user_id) for user_id in user_ids), OPERATORS]:
            await layer.group_send(group, frame)

    # One trip into an event loop for all the groups: from a thread without one (an activity, a sync
    # view) each async_to_sync starts a loop in a new thread, and channels_redis a connection per loop.
    try:
        async_to_sync(deliver)()
    except Exception:  # a live page is a nicety: never fail the write that caused it
        log.warning("could not send a live event for %s", frame, exc_info=True)
