from typing import Any

from django.http import HttpRequest

from approvals.models import ApprovalTask


def pending_count(request: HttpRequest) -> dict[str, Any]:
    """The header's pending count: evaluated only if a template uses it."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def count() -> str:
        known = getattr(request, "tollgate_pending", None)  # set by the inbox, which counted already
        return str(known or ApprovalTask.objects.visible_to(user).inbox_counts())

    return {"my_pending_count": count}
