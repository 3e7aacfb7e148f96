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
        return str(known or ApprovalTask.objects.inbox_counts(user))

    # Pages other than the inbox leave the header's badge to a request of its own, made as they load
    # (as GitHub does with its notifications dot): the count's query took half the time of a page
    # such as the monitoring explorer, whose main content should not wait for it.
    return {"my_pending_count": count, "my_pending_deferred": not hasattr(request, "tollgate_pending")}
