"""The approval read model and escalation policies.

Temporal owns each approval's lifecycle; these rows are what Django renders.
They are written by the workflow's activities (see ``services.py``), except
``Decision``, which the web writes first so that no click is ever lost.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models import Case, Exists, FloatField, OuterRef, Q, Value, When
from django.db.models.fields.json import KeyTextTransform, compile_json_path  # type: ignore[attr-defined]
from django.db.models.functions import Cast, Collate, Length, Lower, Replace, Trim
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals.durations import MAX_DAYS, MAX_SECONDS

FOLD_AT = 240


INBOX_FIELDS_MAX = 3


def parse_inbox_fields(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def validate_inbox_fields(value: str) -> None:
    names = parse_inbox_fields(value)
    if len(names) > INBOX_FIELDS_MAX:
        raise ValidationError(f"At most {INBOX_FIELDS_MAX} fields; {len(names)} given.")
    if any(len(name) > 100 for name in names):
        raise ValidationError("A field name is at most 100 characters.")


class Policy(models.Model):
    class FinalAction(models.TextChoices):
        EXPIRE = "expire", "Expire (nobody approved)"
        APPROVE = "approve", "Approve automatically"
        REJECT = "reject", "Reject automatically"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    final_action = models.CharField(max_length=10, choices=FinalAction.choices, default=FinalAction.EXPIRE)
    is_default = models.BooleanField(
        default=False, help_text="Used for requests that name no policy. Exactly one policy should be the default."
    )
    rejection_is_veto = models.BooleanField(
        default=True,
        help_text="On: any rejection ends the request as rejected. Off: a rejection is one vote against, and the "
        "request is rejected when rejections reach the level's required approvals.",
    )
    inbox_fields = models.CharField(
        max_length=300,
        blank=True,
        validators=[validate_inbox_fields],
        help_text="Up to three payload fields shown as inbox columns, comma-separated (e.g. amount, vendor).",
    )
    no_bulk_decisions = models.BooleanField(
        default=False,
        help_text="On: its tasks must be decided one at a time, on their own page; bulk approve/reject refuses them.",
    )
    claim_for = models.DurationField(
        default=timedelta(hours=1),
        help_text="How long an approver's “I'm on it” holds a task before it is released by itself.",
    )
    # Bumped on every save through the editor: a form opened at revision 3
    # cannot overwrite revision 4 (optimistic locking).
    revision = models.PositiveIntegerField(default=1)
    retired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_policy")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def inbox_field_names(self) -> list[str]:
        return parse_inbox_fields(self.inbox_fields)


class PolicyLevel(models.Model):
    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="levels")
    order = models.PositiveSmallIntegerField(default=1)
    groups = models.ManyToManyField(Group, blank=True, related_name="+")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    timeout = models.DurationField(help_text="How long this level may wait before it escalates (e.g. 1 day).")
    reminder_interval = models.DurationField(
        null=True, blank=True, help_text="Remind this level's approvers at this interval while they wait."
    )
    required_approvals = models.PositiveSmallIntegerField(
        default=1, help_text="Approvals from distinct approvers needed (M of N)."
    )

    class Meta:
        ordering = ["policy", "order"]
        constraints = [models.UniqueConstraint(fields=["policy", "order"], name="unique_level_order")]

    def __str__(self) -> str:
        return f"{self.policy} level {self.order}"

    def clean(self) -> None:
        errors = level_timing_errors(self.timeout, self.reminder_interval)
        if "reminder" in errors:
            errors["reminder_interval"] = errors.pop("reminder")
        if errors:
            raise ValidationError(errors)


def assignees(user_pk: int) -> tuple[list[int], list[int]]:
    """The user ids and group ids whose assignments reach a user: the user, the people they stand
    in for today, and all of those people's groups."""
    users = [
        user_pk,
        *Delegation.objects.active_on(timezone.localdate()).filter(delegate=user_pk).values_list("user", flat=True),
    ]
    groups = list(Group.objects.filter(user__in=users).values_list("pk", flat=True).distinct())
    return users, groups


def assigned_to(user_pk: int) -> Q:
    """Assignments that reach a user: directly, through a group, or as today's delegate of
    someone out of office. The one rule for the inbox and for the workflow's eligibility check."""
    # Resolved here, in two small queries, into plain id lists: "user in (...) or group in (...)" lets
    # the database use the (user, task) and (group, task) indexes, where nested subqueries made
    # PostgreSQL and SQLite scan every assignment (182 ms against 3 ms with 100,000 tasks).
    users, groups = assignees(user_pk)
    return Q(user__in=users) | Q(group__in=groups)


def _reach(user: AbstractBaseUser) -> tuple[list[int], list[int]]:
    """``assignees`` of the request's user, asked once per request (kept on that user object): the
    inbox asks for its rows and for its counts."""
    known: tuple[list[int], list[int]] | None = getattr(user, "_tollgate_reach", None)
    if known is None:
        known = assignees(user.pk)
        setattr(user, "_tollgate_reach", known)  # noqa: B010  # on this request's user object only
    return known


def level_timing_errors(timeout: timedelta | None, reminder: timedelta | None) -> dict[str, str]:
    """The rules for a level's timeout and reminder, shared by the editor's form and the admin."""
    errors = {}
    if timeout is not None and timeout < timedelta(minutes=1):
        errors["timeout"] = "A level must wait at least one minute."
    longest = timedelta(seconds=MAX_SECONDS)
    for name, value in (("timeout", timeout), ("reminder", reminder)):
        if value is not None and value > longest:  # the admin's own duration field takes up to 999,999,999 days
            errors[name] = f"A duration must be at most {MAX_DAYS} days (ten years)."
    if reminder is not None and timeout is not None:
        if reminder >= timeout:
            errors["reminder"] = "A reminder must come before the level escalates."
        elif timeout / reminder > 50:
            errors["reminder"] = "At most 50 reminders per level: choose a longer interval."
    return errors


@dataclass(frozen=True)
class InboxCounts:
    pending: int
    overdue: int
    capped: bool  # there are more than ``pending``

    def __str__(self) -> str:
        return f"{self.pending}+" if self.capped else str(self.pending)


class IsJsonNumber(models.Func):
    """Whether a JSON column's top-level key holds a number (not a string that reads as one)."""

    output_field = models.BooleanField()

    def __init__(self, column: str, key: str) -> None:
        super().__init__(models.F(column))
        self.key = key

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(json_type({sql}, %s) IN ('integer', 'real'))", [*params, compile_json_path([self.key])]

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(jsonb_typeof({sql} -> %s) = 'number')", [*params, self.key]

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:  # type: ignore[override]
        return "(1 = 0)", []  # elsewhere every value goes through the text test


class TaskQuerySet(models.QuerySet["ApprovalTask"]):
    def visible_to(self, user: AbstractBaseUser | AnonymousUser) -> TaskQuerySet:
        """Tasks assigned to the user or one of their groups, at any level so far."""
        if not user.is_authenticated:
            return self.none()
        users, groups = _reach(user)
        reaching = TaskAssignment.objects.filter(Q(user__in=users) | Q(group__in=groups), task=OuterRef("pk"))
        return self.filter(Exists(reaching))

    def pending(self) -> TaskQuerySet:
        return self.filter(status=ApprovalTask.Status.PENDING)

    def search(self, text: str) -> TaskQuerySet:
        return self.filter(Q(title__icontains=text) | Q(request_id=text))

    def overdue(self) -> TaskQuerySet:
        return self.filter(status=ApprovalTask.Status.PENDING, due_at__lt=timezone.now())

    def assigned_via(self, user: AbstractBaseUser, *, direct: bool) -> TaskQuerySet:
        """Tasks that reach the user directly (by name, or as a delegate) or through one of their groups."""
        users, groups = _reach(user)
        way = Q(user__in=users) if direct else Q(group__in=groups)
        return self.filter(Exists(TaskAssignment.objects.filter(way, task=OuterRef("pk"))))

    def where_payload(self, field: str, operator: str, value: str) -> TaskQuerySet:
        """Tasks whose payload field meets a condition, as ``compare`` (routing rules) decides it:
        numbers compare as numbers ("10,000" >= 9999.5), everything else as text.

        In SQL on PostgreSQL and SQLite alike: the field's text, commas removed, is cast to a number only
        when it reads as one (a cast of "ACME" fails on PostgreSQL), so a filter costs no Python scan and
        the page still reads its rows in index order."""
        # As plain text: the JSON key lookups (icontains, exact) would read the value as JSON again.
        raw = Cast(KeyTextTransform(field, "payload"), models.TextField())
        # A JSON number is cast at once; text only when it reads as a number. The test on the JSON type
        # comes first so that numbers never reach the regular expression (a Python call per row on
        # SQLite: 2.7x the plain page with 10,000 amounts, against 1.2x without it).
        numeric = Case(
            When(Q(_where_isnum=True, _where_len__lte=40), then=Cast(KeyTextTransform(field, "payload"), FloatField())),
            When(_where_text__regex=r"^[-+]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][-+]?[0-9]{1,2})?$",
                 then=Cast("_where_text", FloatField())),
            default=None,
            output_field=FloatField(),
        )  # fmt: skip
        tasks = self.alias(
            _where_raw=raw,
            _where_isnum=IsJsonNumber("payload", field),
            _where_len=Length("_where_raw"),
            _where_text=Trim(Replace("_where_raw", Value(","), Value(""), output_field=models.TextField())),
            _where_num=numeric,
        ).filter(payload__has_key=field)
        if operator == RoutingRule.Operator.CONTAINS:
            return tasks.filter(_where_raw__icontains=value)
        lookups = {"==": "exact", "!=": "exact", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
        if operator not in lookups:
            return self.none()
        # ``compare`` reads both sides as numbers when both are; otherwise it compares their text, code
        # point by code point (the "C" collation on PostgreSQL, SQLite's default BINARY).
        text = Collate("_where_raw", "C" if connection.vendor == "postgresql" else "BINARY")
        as_text = Q(**{f"_where_bin__{lookups[operator]}": value})
        number = _as_number(value)
        if number is None:
            meets = as_text
        else:
            as_number = Q(**{f"_where_num__{lookups[operator]}": number})
            meets = Q(_where_num__isnull=False) & as_number | Q(_where_num__isnull=True) & as_text
        tasks = tasks.alias(_where_bin=text)
        return tasks.exclude(meets) if operator == RoutingRule.Operator.NE else tasks.filter(meets)

    def sorted_for_inbox(self, column: str, *, descending: bool = False, pending_only: bool = False) -> TaskQuerySet:
        """Ordered by one column then id, both the same way, so that pending tasks come straight from
        that column's (status, column, id) index, read forwards or backwards. With closed tasks too,
        pending ones come first."""
        if column == "due_at" and not descending:
            return self.inbox_order(pending_only=pending_only)
        sign = "-" if descending else ""
        if pending_only:
            return self.order_by(f"{sign}{column}", f"{sign}pk")
        key = models.F(column).desc(nulls_last=True) if descending else models.F(column).asc(nulls_last=True)
        return self.order_by(models.Case(models.When(status="pending", then=0), default=1), key, f"{sign}pk")

    def inbox_order(self, *, pending_only: bool = False) -> TaskQuerySet:
        """Pending first, soonest due first. Pending alone is ordered by (due_at, id) only, which the
        (status, due_at, id) index serves in order: the first page reads 25 rows, not all of them."""
        if pending_only:
            return self.order_by("due_at", "pk")
        return self.order_by(
            models.Case(models.When(status="pending", then=0), default=1),
            models.F("due_at").asc(nulls_last=True),
            "-created_at",
        )

    def inbox_counts(self, user: AbstractBaseUser | AnonymousUser) -> InboxCounts:
        """The user's pending and overdue tasks, each counted up to ``INBOX_COUNT_CAP + 1``.

        Exact counts cost a scan of every visible task; above the cap the inbox says "1000+"
        instead (as mail clients do). They are counted from the user's assignments (through the
        (user, task) and (group, task) indexes), so a few tasks among many cost little.
        """
        if not user.is_authenticated:
            return InboxCounts(0, 0, False)
        now, cap = timezone.now(), settings.INBOX_COUNT_CAP
        users, groups = _reach(user)

        # Pending: each way of being assigned (directly, through a group) read on its own index, at
        # most ``2 * (cap + 1)`` assignment rows of pending tasks, the task ids merged here (a task
        # reached twice counts once). With "user in (...) OR group in (...)" SQLite walked every
        # pending task (84 ms for 100 of bob's tasks among 100,000, bench/inbox_bench.py). The
        # status is compared through a function on purpose: it keeps the planner off the
        # (status, ...) index, whose statistics (SQLite keeps none per value) sent it there.
        mine = TaskAssignment.objects.alias(state=Lower("task__status")).filter(state="pending").order_by()
        arms = [mine.filter(user__in=users)] + ([mine.filter(group__in=groups)] if groups else [])
        limit, seen, capped = 2 * (cap + 1), set(), False
        for arm in arms:
            ids = list(arm.values_list("task_id", flat=True)[:limit])
            capped |= len(ids) == limit
            seen.update(ids)
        capped |= len(seen) > cap
        # Overdue: among those tasks when they are all known; past the cap, from the pending tasks
        # in due order (the (status, due_at, id) index), where the user's own come soon.
        overdue_tasks = self.filter(pk__in=seen) if not capped else self.visible_to(user).pending()
        overdue = overdue_tasks.filter(due_at__lt=now).order_by()[: cap + 1].count()
        return InboxCounts(min(len(seen), cap), min(overdue, cap), capped)


class ApprovalTask(models.Model):
    class Status(models.TextChoices):
        STARTING = "starting", "Starting"
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    workflow_id = models.CharField(max_length=1000, unique=True)  # Temporal allows 1000
    request_type = models.CharField(max_length=100, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=200)
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    payload = models.JSONField(default=dict, blank=True)
    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    policy_snapshot = models.JSONField(default=dict, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    approvals = models.PositiveSmallIntegerField(default=0)
    rejections = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.STARTING, db_index=True)
    level = models.PositiveSmallIntegerField(default=1)
    escalations = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    start_error = models.TextField(blank=True)
    # Set when the approval runs as a child workflow (a saga, budget, campaign, pipeline);
    # blank for stand-alone requests and rows from before parents were recorded.
    parent_workflow_id = models.CharField(max_length=1000, blank=True)
    parent_run_id = models.CharField(max_length=64, blank=True)
    parent_workflow_type = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        # Each inbox sort on pending tasks reads its first page in order from its own index
        # ((status, key, id), scanned either way), never sorting every row.
        indexes = [
            models.Index(fields=["status", "due_at", "id"], name="task_status_due_id"),
            models.Index(fields=["status", "created_at", "id"], name="task_status_created_id"),
            models.Index(fields=["status", "requested_by", "id"], name="task_status_requester_id"),
            models.Index(fields=["status", "level", "id"], name="task_status_level_id"),
            models.Index(fields=["status", "title", "id"], name="task_status_title_id"),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("approvals:detail", args=[self.pk])

    @property
    def policy_name(self) -> str:
        """The policy as the workflow follows it: the snapshot taken at its start."""
        return (self.policy_snapshot or {}).get("name") or (self.policy.name if self.policy else "")

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.STARTING, self.Status.PENDING)

    @property
    def is_overdue(self) -> bool:
        return self.status == self.Status.PENDING and self.due_at is not None and self.due_at < timezone.now()

    def decision_refusal(self, user: AbstractBaseUser | AnonymousUser, *, up_to_level: int | None = None) -> str:
        """Why ``user`` may not decide this task now, or "" when they may: an active user, not the
        requester, assigned (directly, through a group or as a delegate) at a level reached so far
        (``up_to_level``: the workflow's highest level; the rows hold no later one), while the task
        is pending. The one rule for the task page, the decision view and the workflow's
        ``check_eligibility`` activity."""
        if not user.is_authenticated or not user.is_active:
            return "no such active user"
        if self.status != self.Status.PENDING:
            return f"the task is {self.get_status_display().lower()}"
        if self.requester_id is not None and self.requester_id == user.pk:
            return "requesters may not decide their own request"
        users, groups = _reach(user)
        assigned = self.assignments.filter(Q(user__in=users) | Q(group__in=groups))
        if up_to_level is not None:
            assigned = assigned.filter(level__lte=up_to_level)
        if not assigned.exists():
            return f"not assigned at level {up_to_level} or earlier" if up_to_level else "not assigned to you"
        return ""

    def can_be_decided_by(self, user: AbstractBaseUser | AnonymousUser) -> bool:
        return not self.decision_refusal(user)

    def active_claim(self, *, now: datetime | None = None) -> TaskClaim | None:
        """Who said "I'm on it", while it holds: a claim ends by itself ``policy.claim_for`` after it was
        made (computed here, on read: no job releases it). Reads prefetched ``claims`` when there."""
        now = now or timezone.now()
        for claim in self.claims.all():
            if claim.expires_at > now:
                return claim
        return None

    def inbox_columns(self) -> list[tuple[str, str]]:
        """(field, text) for the payload fields the task's policy shows in the inbox; "—" when absent."""
        names = self.policy.inbox_field_names if self.policy is not None else []
        payload = self.payload if isinstance(self.payload, dict) else {}
        shown = []
        for name in names:
            value = payload.get(name)
            text = "—" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            shown.append((name, text if len(text) <= 60 else text[:59] + "…"))
        return shown

    def payload_items(self) -> list[tuple[str, str, bool]]:
        """(key, text, fold) per payload field: nested values as indented JSON,
        long ones folded. The template escapes the text like any other."""
        items = []
        for key, value in (self.payload or {}).items():
            text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
            items.append((str(key), text, len(text) > FOLD_AT or text.count("\n") > 6))
        return items


class TaskAssignment(models.Model):
    task = models.ForeignKey(ApprovalTask, on_delete=models.CASCADE, related_name="assignments")
    level = models.PositiveSmallIntegerField()
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    delegate_for = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["level", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["task", "level", "group"], name="unique_group_assignment"),
            models.UniqueConstraint(fields=["task", "level", "user"], name="unique_user_assignment"),
            models.CheckConstraint(
                condition=Q(group__isnull=False) | Q(user__isnull=False), name="assignment_has_assignee"
            ),
        ]
        indexes = [models.Index(fields=["user", "task"]), models.Index(fields=["group", "task"])]

    def __str__(self) -> str:
        return f"level {self.level}: {self.label}"

    @property
    def label(self) -> str:
        if self.group is not None:
            return f"group {self.group.name}"
        if self.delegate_for is not None:
            return f"{self.user} (delegate of {self.delegate_for})"
        return str(self.user)


def _new_decision_id() -> str:
    return str(uuid.uuid4())


class Decision(models.Model):
    """A decision as the approver made it, stored before it is sent to Temporal.

    The row is the outbox: ``delivered_at`` stays empty until the ``decide``
    signal has reached the Temporal server, and the worker's relay keeps
    retrying until it does. ``decision_id`` travels with the signal, so a
    redelivery is recognised and ignored by the workflow.
    """

    class Choice(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    class Result(models.TextChoices):
        PENDING = "pending", "Waiting for the workflow"
        APPLIED = "applied", "Applied"
        IGNORED = "ignored", "Ignored"

    # Any client may choose its own unique id (the contract says a string), so
    # this is text; ours are UUIDs.
    decision_id = models.CharField(max_length=100, default=_new_decision_id, unique=True, editable=False)
    task = models.ForeignKey(ApprovalTask, on_delete=models.CASCADE, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    choice = models.CharField(max_length=10, choices=Choice.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveIntegerField(default=0)
    last_delivery_error = models.TextField(blank=True)
    result = models.CharField(max_length=10, choices=Result.choices, default=Result.PENDING)
    result_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One decision per approver and task: a double click or a second tab
            # finds the first one instead of making another.
            models.UniqueConstraint(fields=["task", "user"], name="one_decision_per_user_and_task")
        ]
        indexes = [models.Index(fields=["delivered_at"], name="decision_undelivered")]

    def __str__(self) -> str:
        return f"{self.user} {self.choice} {self.task}"

    def signal_payload(self) -> dict[str, str]:
        return {
            "decision": self.choice,
            "user": self.user.get_username(),
            "comment": self.comment,
            "decision_id": str(self.decision_id),
        }


class AuditEntry(models.Model):
    """What happened to a task, in order: requested, assigned, reminded, decided...

    Each task's entries form a hash chain (``approvals.audit``): entry ``seq`` stores the SHA-256 of
    its own content and of the entry before it, so an entry changed, removed, reordered or slipped in
    with SQL shows up in ``verify_audit``. Append only through ``approvals.audit.append_entry``.
    """

    task = models.ForeignKey(ApprovalTask, on_delete=models.CASCADE, related_name="audit")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=30)
    actor = models.CharField(max_length=150, blank=True)
    level = models.PositiveSmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    event_key = models.CharField(max_length=400, unique=True, null=True, blank=True)
    # The row this entry vouches for, as plain values (a Decision's id, user, choice, comment and time),
    # hashed with the rest; empty for events that stand alone.
    record = models.JSONField(default=dict, blank=True)
    # Position in the task's chain, from 1 in the order entries were appended (which is not always
    # the order of ``at``: activities report times from the workflow). Null only on a row written
    # outside ``append_entry``, which verification reports.
    seq = models.PositiveIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["at", "pk"]
        constraints = [
            # One entry per position: two appends that raced past the lock could not both commit,
            # so a chain cannot fork.
            models.UniqueConstraint(fields=["task", "seq"], name="one_audit_entry_per_position"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.message}"

    @property
    def recorded_due_at(self) -> datetime | None:
        """A deadline the entry holds as data (a policy push's), for the page to show in the viewer's
        zone; messages never bake a time in, since they are hashed and read in every zone."""
        raw = self.record.get("due_at") if isinstance(self.record, dict) else None
        return parse_datetime(raw) if isinstance(raw, str) else None


class Notification(models.Model):
    """One row per notification event, so a retried activity never mails twice."""

    event_key = models.CharField(max_length=400, unique=True)
    task = models.ForeignKey(ApprovalTask, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=20)
    recipients = models.JSONField(default=list)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.event_key


class PolicyVersion(models.Model):
    """An immutable snapshot of a policy, made on every save. Workflows follow
    the version they started with (or one an admin pushed to them)."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    snapshot = models.JSONField()
    changes = models.JSONField(default=list, help_text="What changed since the previous version, readable.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [models.UniqueConstraint(fields=["policy", "number"], name="unique_policy_version")]

    def __str__(self) -> str:
        return f"{self.policy} v{self.number}"


class RoutingRule(models.Model):
    """Picks a policy for a request that names none: the first rule that matches wins."""

    class Operator(models.TextChoices):
        EQ = "==", "="
        NE = "!=", "≠"
        GT = ">", ">"
        GE = ">=", "≥"
        LT = "<", "<"
        LE = "<=", "≤"
        CONTAINS = "contains", "contains"

    order = models.PositiveIntegerField(default=0)
    request_type = models.CharField(max_length=100, blank=True, help_text="Empty: any request type.")
    field = models.CharField(max_length=100, blank=True, help_text="Payload field; empty: no condition.")
    operator = models.CharField(max_length=10, choices=Operator.choices, default=Operator.EQ)
    value = models.CharField(max_length=200, blank=True)
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="routing_rules")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["order", "pk"]

    def __str__(self) -> str:
        return f"{self.describe()} → {self.policy}"

    def describe(self) -> str:
        kind = f"type “{self.request_type}”" if self.request_type else "any type"
        condition = f" and {self.field} {self.get_operator_display()} {self.value}" if self.field else ""
        return kind + condition

    def matches(self, request_type: str, payload: dict[str, object]) -> bool:
        if self.request_type and self.request_type != request_type:
            return False
        if not self.field:
            return True
        if self.field not in payload:
            return False
        return compare(payload[self.field], self.operator, self.value)


def _as_number(text: str) -> float | None:
    try:
        number = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def compare(actual: object, operator: str, expected: str) -> bool:
    """Numbers compare as numbers ("10000" >= 9999.5), everything else as text."""
    if operator == RoutingRule.Operator.CONTAINS:
        return expected.lower() in str(actual).lower()
    try:
        left: float | str = float(str(actual).replace(",", "").strip())
        right: float | str = float(expected.replace(",", "").strip())
    except ValueError:
        left, right = str(actual), expected
    if operator == RoutingRule.Operator.EQ:
        return left == right
    if operator == RoutingRule.Operator.NE:
        return left != right
    if type(left) is not type(right):
        return False
    ordered = {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}  # type: ignore[operator]
    return ordered.get(operator, False)


class DelegationQuerySet(models.QuerySet["Delegation"]):
    def active_on(self, day: date) -> DelegationQuerySet:
        return self.filter(starts_on__lte=day, ends_on__gte=day)


class Delegation(models.Model):
    """Out of office: while away, tasks assigned to ``user`` also go to ``delegate``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegations")
    delegate = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegated_to_me")
    starts_on = models.DateField()
    ends_on = models.DateField()
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = DelegationQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_on"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_on__gte=models.F("starts_on")), name="delegation_dates_ordered"),
            models.CheckConstraint(condition=~Q(user=models.F("delegate")), name="delegation_not_to_self"),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.delegate} ({self.starts_on}–{self.ends_on})"


class MailPreference(models.Model):
    """How a user wants to hear of tasks waiting for them; no row means immediate mail."""

    class Delivery(models.TextChoices):
        IMMEDIATE = "immediate", "A mail for each new task, reminder and escalation"
        DIGEST = "digest", "One mail a day listing my open tasks"
        NONE = "none", "No mail"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_preference")
    delivery = models.CharField(max_length=10, choices=Delivery.choices, default=Delivery.IMMEDIATE)
    # The day (in TIME_ZONE) of the last digest sent, so a retried digest activity mails each user once a day.
    last_digest_on = models.DateField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.delivery}"


class MailLinkUse(models.Model):
    """A mailed Approve/Reject link that was used. Each link carries a random nonce; the unique
    constraint makes it work once, even for two clicks at the same moment."""

    nonce = models.CharField(max_length=40, unique=True)
    task = models.ForeignKey(ApprovalTask, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    choice = models.CharField(max_length=10)
    used_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.user} {self.choice} {self.task} (mail link)"


class SavedView(models.Model):
    """A user's named inbox sort and filters: the inbox's query string, shown as a tab.

    Only the query string is stored, so a saved view is as shareable as the URL it opens: a colleague
    following it sees the same sort and filters applied to their own tasks."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=60)
    query = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="one_saved_view_per_name")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("approvals:inbox") + (f"?{self.query}" if self.query else "")


class BulkDecision(models.Model):
    """One bulk approve/reject: its progress while it runs (polled by the inbox) and each task's result.

    The tasks themselves go through the single decision's path (``services.record_decision``, one
    ``Decision`` row each); this row only reports on them. Its id comes from the page that submits it,
    so the page can ask for progress before the answer arrives."""

    class Phase(models.TextChoices):
        RECORDING = "recording", "Recording decisions"
        SENDING = "sending", "Sending them to the workflow engine"
        WAITING = "waiting", "Waiting for the workflows to confirm"
        DONE = "done", "Done"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bulk_decisions")
    choice = models.CharField(max_length=10, choices=Decision.Choice.choices)
    comment = models.TextField(blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.RECORDING)
    results = models.JSONField(default=list, blank=True)  # [{"task", "title", "state", "message"}]
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} {self.choice} {self.total} tasks"


DEFAULT_CLAIM_FOR = timedelta(hours=1)


class TaskClaim(models.Model):
    """ "I'm on it": one approver tells the others who may decide a task that they are looking at it.
    Advisory only: it never stops another eligible approver from deciding. One row per task at most;
    it holds until ``expires_at`` (from the task's policy, computed on read) or until released."""

    task = models.ForeignKey(ApprovalTask, on_delete=models.CASCADE, related_name="claims")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claimed_at = models.DateTimeField(default=timezone.now)
    holds_for = models.DurationField(default=DEFAULT_CLAIM_FOR)  # the policy's claim_for when claimed

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task"], name="one_claim_per_task")]

    def __str__(self) -> str:
        return f"{self.user} on {self.task}"

    @property
    def expires_at(self) -> datetime:
        return self.claimed_at + self.holds_for


class TaskComment(models.Model):
    """A question or answer on a task between its approvers and its requester, without deciding.
    Each is also an entry in the task's audit chain (``services.comment_on_task``)."""

    task = models.ForeignKey(ApprovalTask, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.author} on {self.task}"
