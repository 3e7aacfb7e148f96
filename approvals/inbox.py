"""The inbox's sort and filters: read from the query string, applied to the tasks, written back to links.

Everything the inbox shows is in its URL (``?sort=-requested&policy=standard&where=amount>=1000``), so a
view can be bookmarked, shared, saved as a tab and carried to a task page for "next task". A value
the inbox cannot use is ignored with a message naming the parameter, never an error page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q
from django.http import QueryDict

from approvals.models import ApprovalTask, RoutingRule, TaskQuerySet

# sort key in the URL → the task's column; each has a (status, column, id) index for pending tasks
SORTS = {"due": "due_at", "requested": "created_at", "requester": "requested_by", "level": "level", "title": "title"}
SORT_LABELS = {
    "due": "Due",
    "requested": "Requested",
    "requester": "Requested by",
    "level": "Level",
    "title": "Request",
}
VIAS = {"direct": "Assigned to me", "group": "Through a group"}
OPERATORS = [op.value for op in RoutingRule.Operator]
# "amount >= 1000", "vendor == ACME", "note contains quote": a payload field, an operator, a value.
WHERE = re.compile(r"^\s*([\w\- ]{1,100}?)\s*(==|!=|>=|<=|=|>|<|\s+contains\s+)\s*(.{1,200}?)\s*$", re.DOTALL)
TEXT_LIMIT = 200
LEVEL_LIMIT = 1000


@dataclass(frozen=True)
class PayloadCondition:
    field: str
    operator: str  # one of RoutingRule.Operator
    value: str

    def __str__(self) -> str:
        return f"{self.field} {self.operator} {self.value}"


@dataclass(frozen=True)
class InboxQuery:
    show: str = "pending"  # or "all"
    q: str = ""
    sort: str = "due"
    descending: bool = False
    requester: str = ""
    policy: str = ""
    request_type: str = ""
    overdue: bool = False
    level: int | None = None
    via: str = ""
    where: PayloadCondition | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def pending_only(self) -> bool:
        return self.show == "pending"

    @property
    def default_sort(self) -> bool:
        return (self.sort, self.descending) == ("due", False)

    @property
    def narrowed(self) -> bool:
        """Anything beyond the plain pending list (which the header's counts already count)."""
        return self.params(sort=False, show=False) != {} or not self.pending_only

    def params(self, *, sort: bool = True, show: bool = True) -> dict[str, str]:
        """The query string's parameters that differ from the defaults, in a stable order."""
        values = {
            "show": self.show if show and self.show != "pending" else "",
            "q": self.q,
            "sort": ("-" if self.descending else "") + self.sort if sort and not self.default_sort else "",
            "requester": self.requester,
            "policy": self.policy,
            "type": self.request_type,
            "overdue": "1" if self.overdue else "",
            "level": str(self.level) if self.level is not None else "",
            "via": self.via,
            "where": str(self.where) if self.where else "",
        }  # fmt: skip
        return {k: v for k, v in values.items() if v}

    def urlencode(self, **changes: object) -> str:
        return urlencode(replace(self, **changes).params() if changes else self.params())  # type: ignore[arg-type]

    def sort_link(self, key: str) -> str:
        """The query string that sorts by ``key``: ascending first, the other way when already sorted by it."""
        descending = not self.descending if key == self.sort else False
        return urlencode(replace(self, sort=key, descending=descending).params())


def _text(data: QueryDict, name: str, problems: list[str]) -> str:
    value = data.get(name, "")
    if "\x00" in value:
        problems.append(f"Ignored “{name}”: it holds a NUL character.")
        return ""
    value = value.strip()
    if len(value) > TEXT_LIMIT:
        problems.append(f"Ignored “{name}”: at most {TEXT_LIMIT} characters.")
        return ""
    return value


def parse_inbox_query(data: QueryDict) -> InboxQuery:
    """The inbox's sort and filters from a query string; unusable values are dropped, each with a message."""
    problems: list[str] = []
    show = "all" if data.get("show") == "all" else "pending"
    sort_value = _text(data, "sort", problems)
    sort, descending = sort_value.removeprefix("-"), sort_value.startswith("-")
    if sort_value and sort not in SORTS:
        problems.append(f"Ignored sort “{sort_value[:40]}”: sort by {', '.join(SORTS)} (a leading “-” reverses it).")
        sort, descending = "due", False
    sort = sort or "due"
    level_text = _text(data, "level", problems)
    level = None
    if level_text:
        if level_text.isascii() and level_text.isdigit() and 1 <= int(level_text[:6]) <= LEVEL_LIMIT:
            level = int(level_text)
        else:
            problems.append(f"Ignored level “{level_text[:40]}”: a level is a whole number from 1 to {LEVEL_LIMIT}.")
    via = _text(data, "via", problems)
    if via and via not in VIAS:
        problems.append(f"Ignored “via” “{via[:40]}”: choose direct or group.")
        via = ""
    return InboxQuery(
        show=show,
        q=_text(data, "q", problems),
        sort=sort,
        descending=descending,
        requester=_text(data, "requester", problems),
        policy=_text(data, "policy", problems),
        request_type=_text(data, "type", problems),
        overdue=data.get("overdue") in ("1", "on", "true"),
        level=level,
        via=via,
        where=_where(_text(data, "where", problems), problems),
        problems=tuple(problems),
    )


def _where(text: str, problems: list[str]) -> PayloadCondition | None:
    if not text:
        return None
    match = WHERE.match(text)
    if match is None:
        problems.append(
            f"Ignored condition “{text[:60]}”: write a payload field, an operator "
            f"({', '.join(OPERATORS)}) and a value, e.g. amount >= 1000."
        )
        return None
    name, operator, value = match.group(1).strip(), match.group(2).strip(), match.group(3)
    operator = "==" if operator == "=" else operator
    if operator in (">", ">=", "<", "<=") and not is_number(value):
        problems.append(f"Ignored condition “{text[:60]}”: {operator} compares numbers, and “{value[:40]}” is not one.")
        return None
    return PayloadCondition(name, operator, value)


NUMBER = re.compile(r"^[-+]?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})([eE][-+]?\d{1,2})?$")


def is_number(text: str) -> bool:
    """Whether ``approvals.models.compare`` reads ``text`` as a number, within the forms the database's
    numeric cast reads too (no "inf", "nan", "1_000", no exponent beyond 99)."""
    return bool(NUMBER.match(text.replace(",", "").strip()))


def inbox_tasks(user: AbstractBaseUser, query: InboxQuery) -> TaskQuerySet:
    """The user's tasks for this sort and filters, in order, as an unevaluated queryset."""
    tasks = ApprovalTask.objects.visible_to(user)
    if query.pending_only:
        tasks = tasks.pending()
    if query.q:
        tasks = tasks.search(query.q)
    if query.requester:
        tasks = tasks.filter(requested_by=query.requester)
    if query.policy:
        tasks = tasks.filter(policy__slug=query.policy)
    if query.request_type:
        tasks = tasks.filter(request_type=query.request_type)
    if query.overdue:
        tasks = tasks.overdue()
    if query.level is not None:
        tasks = tasks.filter(level=query.level)
    if query.via:
        tasks = tasks.assigned_via(user, direct=query.via == "direct")
    if query.where is not None:
        tasks = tasks.where_payload(query.where.field, query.where.operator, query.where.value)
    return tasks.sorted_for_inbox(SORTS[query.sort], descending=query.descending, pending_only=query.pending_only)


def next_task(user: AbstractBaseUser, query: InboxQuery, current: ApprovalTask) -> ApprovalTask | None:
    """The pending task after ``current`` in this sort and filter that the user has not decided yet;
    after the last one, the first (the queue's top, where newly arrived tasks may wait). Read as a
    keyset from the sort's index: two single-row queries at most, whatever the inbox's size."""
    column = SORTS[query.sort]
    tasks = inbox_tasks(user, query).exclude(pk=current.pk).exclude(decisions__user=user.pk)
    value = getattr(current, column)
    if value is None:
        return tasks.first()
    sign = "lt" if query.descending else "gt"
    after = Q(**{f"{column}__{sign}": value}) | Q(**{column: value, f"pk__{sign}": current.pk})
    return tasks.filter(after).first() or tasks.first()
