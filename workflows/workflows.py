"""Deterministic workflow code only: no Django, ORM, settings or I/O imports.

``ApprovalWorkflow`` implements the public contract in shared/ARCHITECTURE.md.
It owns the lifecycle of one approval: it loads its escalation policy once
(through an activity, so the snapshot sits in the history and replays the
same), keeps the Django read model current through activities, waits for the
first valid decision, reminds and escalates on timers, and applies the
policy's final action when the last level times out.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from workflows.types import (
    DECISIONS,
    FINAL_ACTIONS,
    PARENT_TYPE_MEMO,
    ApprovalInput,
    ApprovalResult,
    CancelSignal,
    CompleteTaskInput,
    DecisionSignal,
    Eligibility,
    EligibilityInput,
    EscalateInput,
    FailTaskInput,
    InputError,
    LevelSnapshot,
    LoadPolicyInput,
    NotifyInput,
    PolicyChangeInput,
    PolicySnapshot,
    RegisterTaskInput,
    RegisterTaskResult,
    VoteInput,
)

# Database activities retry until the database is back: a decision must never
# be lost because PostgreSQL restarted. Bad input is marked non-retryable.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["InvalidInput"],
)
DB_TIMEOUT = timedelta(seconds=30)
# Mail is best effort with retries; a dead mail server must not hold up an
# escalation, so failures are recorded in the task's history and left there.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=8,
)


STRICT_INPUT_PATCH = "strict-input"
SEARCH_ATTRIBUTES_PATCH = "search-attributes-v1"
# The custom search attributes (workflows.types.SEARCH_ATTRIBUTES), typed for upserts.
STATUS = SearchAttributeKey.for_keyword("ApprovalStatus")
REQUEST_ID = SearchAttributeKey.for_keyword("ApprovalRequestId")
REQUESTED_BY = SearchAttributeKey.for_keyword("ApprovalRequestedBy")
POLICY = SearchAttributeKey.for_keyword("ApprovalPolicy")
LEVEL = SearchAttributeKey.for_int("ApprovalLevel")
DUE_AT = SearchAttributeKey.for_datetime("ApprovalDueAt")
ASSIGNEES = SearchAttributeKey.for_keyword_list("ApprovalAssignees")
MAX_REMINDERS_PER_LEVEL = 50
MAX_IGNORED = 100  # kept for the audit trail; a flood of bad signals is not


def _parent_type() -> str:
    """The parent's type, when the parent put it in the memo; any other value is ignored."""
    value = workflow.memo_value(PARENT_TYPE_MEMO, "")
    return value[:200] if isinstance(value, str) else ""


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@workflow.defn(name="ApprovalWorkflow")
class ApprovalWorkflow:
    def __init__(self) -> None:
        self._request_id = ""
        self._level = 0
        self._due_at: datetime | None = None
        self._assignees: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._seen_decisions: set[str] = set()
        self._ignored: list[dict[str, Any]] = []
        self._escalations = 0
        self._registered = False
        self._result: ApprovalResult | None = None
        self._policy: PolicySnapshot | None = None
        self._notifications: list[asyncio.Task[None]] = []
        self._checks_in_flight = 0
        self._started: datetime | None = None
        self._votes: dict[str, dict[str, Any]] = {}
        self._pushed_policy: tuple[PolicySnapshot, str] | None = None
        self._pushed = False  # a version was pushed: deadlines never lie in the past
        self._max_level = 0
        self._search_attributes = False  # the worker said the namespace has them (register_task's result)

    # ---- run -------------------------------------------------------------

    @workflow.run
    async def run(self, *args: Any) -> ApprovalResult:
        # ``*args: Any``, not a dataclass or dict: a payload the converter cannot map, or a start
        # with no argument or two (a TypeError calling ``run``), would fail the workflow task and
        # retry forever; ``parse`` instead fails the workflow at once with the field's name.
        # Histories recorded before the contract refused unknown keys, non-object payloads and
        # values beyond the limits replay with the lenient parse they ran with.
        strict = workflow.patched(STRICT_INPUT_PATCH)
        try:
            if len(args) != 1:
                raise InputError("input", f"must be exactly one JSON object, got {len(args)} arguments")
            request = ApprovalInput.parse(args[0], strict=strict)
        except InputError as exc:
            await self._reject_input(f"invalid input: {exc}", exc.field)
        self._request_id = request.request_id
        self._event("requested", user=request.requested_by, detail=request.title)

        try:
            policy = await workflow.execute_activity(
                "load_policy",
                LoadPolicyInput(
                    policy=request.policy,
                    approvers=request.approvers,
                    request_type=request.request_type,
                    payload=request.payload,
                ),
                result_type=PolicySnapshot,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "InvalidInput":
                await self._reject_input(f"invalid input: {cause.message}", *cause.details)
            raise
        self._policy = policy
        try:
            await self._register_and_wait(request, policy)
        except (asyncio.CancelledError, ActivityError) as exc:
            # A Temporal cancellation request, while waiting or while an
            # activity ran: close the task like the cancel signal would, so no
            # inbox keeps showing it. Other activity failures propagate.
            if isinstance(exc, ActivityError) and not is_cancelled_exception(exc):
                raise
            if self._result is None:
                self._finish("cancelled", None, "Workflow cancellation requested")

        assert self._result is not None
        await workflow.wait_condition(workflow.all_handlers_finished)
        await workflow.execute_activity(
            "complete_task",
            CompleteTaskInput(
                workflow_id=workflow.info().workflow_id,
                outcome=self._result.outcome,
                decided_by=self._result.decided_by,
                comment=self._result.comment,
                decided_at=self._result.decided_at,
                level=self._result.level,
                escalations=self._result.escalations,
                decision_id=self._result.decision_id,
                ignored=self._ignored,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        return self._result

    async def _register_and_wait(self, request: ApprovalInput, policy: PolicySnapshot) -> None:
        started = self._started = workflow.now()
        self._level = 1
        self._due_at = started + timedelta(seconds=policy.levels[0].timeout_seconds)
        self._activate_level(policy.levels[0])
        # Only the activity's argument grows (no new command), so older histories still replay.
        parent = workflow.info().parent
        search_attributes = workflow.patched(SEARCH_ATTRIBUTES_PATCH)
        registered = await workflow.execute_activity(
            "register_task",
            RegisterTaskInput(
                workflow_id=workflow.info().workflow_id,
                run_id=workflow.info().run_id,
                request=request,
                policy=policy,
                started_at=_iso(started),
                due_at=_iso(self._due_at),
                parent_workflow_id=parent.workflow_id if parent else "",
                parent_run_id=parent.run_id if parent else "",
                parent_workflow_type=_parent_type() if parent else "",
            ),
            result_type=RegisterTaskResult,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        self._registered = True
        # Histories recorded before the patch have no result here (the activity returned nothing).
        self._search_attributes = search_attributes and bool(registered and registered.search_attributes)
        self._upsert(
            REQUEST_ID.value_set(request.request_id),
            REQUESTED_BY.value_set(request.requested_by),
            POLICY.value_set(policy.slug),
        )
        self._notify("assigned")
        await self._wait_for_outcome()

    async def _reject_input(self, message: str, *details: Any) -> NoReturn:
        """Fail at once, naming the field. A request made through Tollgate's form
        already has a row (status "starting"): mark it failed so its requester
        sees why. Never creates a row, so no empty task reaches an inbox."""
        try:
            await workflow.execute_activity(
                "fail_task",
                FailTaskInput(workflow_id=workflow.info().workflow_id, error=message),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            pass  # the error below is what matters; the row is only a courtesy
        # ``from None``: the failure's cause chain holds this one non-retryable error, not the
        # InputError being handled (which a client reading the deepest cause would take as retryable).
        raise ApplicationError(message, *details, type="InvalidInput", non_retryable=True) from None

    async def _wait_for_outcome(self) -> None:
        while self._result is None:
            policy = self._policy
            assert policy is not None
            level = policy.levels[self._level - 1]
            assert self._due_at is not None
            level_started = self._due_at - timedelta(seconds=level.timeout_seconds)
            reminder = timedelta(seconds=level.reminder_seconds) if level.reminder_seconds else None
            next_reminder = level_started + reminder if reminder else None
            reminders_sent = 0
            if self._pushed and next_reminder is not None and reminder is not None:
                # After a push, reminders that fell due in the past are skipped, not sent at once.
                while next_reminder <= workflow.now():
                    next_reminder += reminder
                    reminders_sent += 1
            while self._result is None:
                wake = self._due_at
                if next_reminder is not None and next_reminder < wake:
                    wake = next_reminder
                remaining = (wake - workflow.now()).total_seconds()
                if remaining > 0:
                    try:
                        await workflow.wait_condition(
                            lambda: self._result is not None or self._pushed_policy is not None, timeout=remaining
                        )
                    except TimeoutError:
                        pass
                if self._result is not None:
                    return
                if self._pushed_policy is not None:
                    break  # recompute this level's deadline and reminders below
                now = workflow.now()
                if now >= self._due_at:
                    # A decision that arrived in time may still be having its
                    # eligibility checked: it wins over the deadline.
                    await workflow.wait_condition(lambda: self._checks_in_flight == 0 or self._result is not None)
                    if self._result is not None:
                        return
                    break
                if next_reminder is not None and reminder is not None and now >= next_reminder:
                    reminders_sent += 1
                    self._event("reminded", detail=f"reminder {reminders_sent} at level {self._level}")
                    # The version keeps keys unique when a pushed version restarts the count.
                    suffix = f"v{policy.version}.{reminders_sent}" if self._pushed else str(reminders_sent)
                    self._notify("reminder", suffix=suffix)
                    # One reminder per wake-up, even after an outage; and a
                    # bound per level, so the history stays far from its limit.
                    while next_reminder <= now:
                        next_reminder += reminder
                    if reminders_sent >= MAX_REMINDERS_PER_LEVEL:
                        next_reminder = None
            if self._result is not None:
                return
            if self._pushed_policy is not None:
                await self._apply_pushed_policy()
                continue
            if self._level < len(policy.levels):
                await self._escalate(policy.levels[self._level])
                self._check_quorum()
            else:
                outcome = FINAL_ACTIONS[policy.final_action]
                self._event("final_action", detail=f"{policy.final_action} after level {self._level} timed out")
                self._finish(
                    outcome,
                    None,
                    f"No decision before the last deadline: the policy's final action is '{policy.final_action}'.",
                )

    async def _escalate(self, level: LevelSnapshot) -> None:
        assert self._due_at is not None
        # After a push the old deadline may lie far back: the next level gets its
        # full time from now, so a push never runs through every level at once.
        at = max(self._due_at, workflow.now()) if self._pushed else self._due_at
        self._level += 1
        self._escalations += 1
        self._due_at = at + timedelta(seconds=level.timeout_seconds)
        self._activate_level(level)
        self._event("escalated", detail=f"to level {self._level}")
        await workflow.execute_activity(
            "escalate_task",
            EscalateInput(
                workflow_id=workflow.info().workflow_id,
                level=self._level,
                assignees=level,
                due_at=_iso(self._due_at),
                escalations=self._escalations,
                at=_iso(workflow.now()),
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        self._upsert()
        self._notify("escalated")

    async def _apply_pushed_policy(self) -> None:
        """Follow a new policy version from here on, with deadlines counted from
        this workflow's own start: level n is due at start + the first n timeouts."""
        assert self._pushed_policy is not None and self._started is not None
        policy, by = self._pushed_policy
        self._pushed_policy = None
        self._policy = policy
        self._level = min(self._level, len(policy.levels))
        offset = sum(level.timeout_seconds for level in policy.levels[: self._level])
        level = policy.levels[self._level - 1]
        # Counted from the start. If that is already past, a middle level
        # escalates now and the next one gets its full time (see _escalate);
        # the last level gets its full time from now, so a push alone never
        # applies the final action without a person having had the chance.
        now = workflow.now()
        last = self._level == len(policy.levels)
        floor = now + timedelta(seconds=level.timeout_seconds) if last else now
        self._due_at = max(self._started + timedelta(seconds=offset), floor)
        self._pushed = True
        self._activate_level(level)
        self._event("policy_changed", user=by, detail=f"{policy.name} version {policy.version}")
        await workflow.execute_activity(
            "apply_policy_change",
            PolicyChangeInput(
                workflow_id=workflow.info().workflow_id,
                policy=policy,
                level=self._level,
                due_at=_iso(self._due_at),
                by=by,
                at=_iso(workflow.now()),
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        self._upsert(POLICY.value_set(policy.slug))
        self._check_quorum()

    @workflow.signal(name="update_policy")
    def update_policy_signal(self, raw: Any) -> None:
        """An admin pushed a policy version: {"policy": {...version snapshot...}, "by": "admin"}."""
        if not workflow.patched("policy-push-v1"):
            return  # replaying a history from before policy pushes existed
        try:
            if not isinstance(raw, dict):
                raise InputError("update_policy", "must be a JSON object")
            policy = PolicySnapshot.parse(raw.get("policy"))
        except InputError as exc:
            self._event("ignored", detail=f"malformed policy update: {exc}")
            return
        if self._result is not None:
            self._event("ignored", detail=f"policy update after close: {self._closed_reason()}")
            return
        by = str(raw.get("by") or "")[:150]
        self._pushed_policy = (policy, by)

    def _check_quorum(self) -> None:
        """After an escalation or a policy change, earlier approvals may suffice."""
        if self._result is not None or not self._votes or self._policy is None:
            return
        required = self._policy.levels[self._level - 1].required_approvals
        for side, outcome in (("approve", "approved"), ("reject", "rejected")):
            votes = [vote for vote in self._votes.values() if vote["decision"] == side]
            if len(votes) >= required:
                last = votes[-1]
                self._finish(outcome, last["user"], last["comment"], last["decision_id"])
                return

    def _activate_level(self, level: LevelSnapshot) -> None:
        self._max_level = max(self._max_level, self._level)
        self._assignees.append({"level": self._level, "groups": level.groups, "users": level.users})

    # ---- decisions and cancellation --------------------------------------

    @workflow.signal(name="decide")
    async def decide_signal(self, raw: Any) -> None:
        await self._decide(raw)

    @workflow.update(name="decide")
    async def decide_update(self, raw: Any) -> dict[str, Any]:
        return await self._decide(raw)

    @decide_update.validator
    def validate_decide_update(self, raw: Any) -> None:
        decision = DecisionSignal.parse(raw)  # InputError rejects the update
        if decision.decision_id in self._seen_decisions:
            raise ApplicationError("duplicate decision_id", type="DuplicateDecision")
        if self._result is not None:
            raise ApplicationError(self._closed_reason(), type="AlreadyDecided")

    async def _decide(self, raw: Any) -> dict[str, Any]:
        try:
            decision = DecisionSignal.parse(raw)
        except InputError as exc:
            return self._ignore(raw, f"malformed decision: {exc}")
        if decision.decision_id in self._seen_decisions:
            return self._ignore(raw, "duplicate decision_id", record=False)
        self._seen_decisions.add(decision.decision_id)
        if self._result is not None:
            return self._ignore(raw, self._closed_reason())
        # A decision can arrive before the task exists in the read model.
        await workflow.wait_condition(lambda: self._registered or self._result is not None)
        if self._result is not None:
            return self._ignore(raw, self._closed_reason())
        self._checks_in_flight += 1
        try:
            eligibility = await workflow.execute_activity(
                "check_eligibility",
                # The highest level reached: a push to fewer levels keeps earlier assignees' right to decide.
                EligibilityInput(workflow_id=workflow.info().workflow_id, user=decision.user, level=self._max_level),
                result_type=Eligibility,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
            )
        finally:
            self._checks_in_flight -= 1
        if self._result is not None:
            return self._ignore(raw, self._closed_reason())
        if not eligibility.eligible:
            return self._ignore(raw, f"{decision.user} may not decide: {eligibility.reason}")
        assert self._policy is not None
        required = self._policy.levels[self._level - 1].required_approvals
        final = required <= 1 or (decision.decision == "reject" and self._policy.rejection_is_veto)
        if not final and workflow.patched("quorum-v1"):
            return await self._vote(decision, required)
        self._event(
            "decided", user=decision.user, detail=decision.decision, comment=decision.comment, id=decision.decision_id
        )
        self._finish(DECISIONS[decision.decision], decision.user, decision.comment, decision.decision_id)
        return {"applied": True, "outcome": self._result.outcome if self._result else "", "reason": ""}

    async def _vote(self, decision: DecisionSignal, required: int) -> dict[str, Any]:
        """M of N: count distinct approvers' votes until one side reaches M."""
        if decision.user in self._votes:
            return self._ignore(
                {"decision_id": decision.decision_id, "user": decision.user}, f"{decision.user} has already voted"
            )
        self._votes[decision.user] = {
            "decision": decision.decision,
            "user": decision.user,
            "comment": decision.comment,
            "decision_id": decision.decision_id,
            "level": self._level,
        }
        approvals = sum(1 for vote in self._votes.values() if vote["decision"] == "approve")
        rejections = len(self._votes) - approvals
        self._event("voted", user=decision.user, detail=decision.decision, id=decision.decision_id)
        side, count = ("approve", approvals) if decision.decision == "approve" else ("reject", rejections)
        if count >= required:
            self._finish(DECISIONS[side], decision.user, decision.comment, decision.decision_id)
            return {"applied": True, "outcome": self._result.outcome if self._result else "", "reason": ""}
        await workflow.execute_activity(
            "record_vote",
            VoteInput(
                workflow_id=workflow.info().workflow_id,
                decision_id=decision.decision_id,
                user=decision.user,
                decision=decision.decision,
                comment=decision.comment,
                approvals=approvals,
                rejections=rejections,
                required=required,
                level=self._level,
                at=_iso(workflow.now()),
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        return {"applied": True, "outcome": "", "reason": f"vote counted: {approvals} of {required} approvals"}

    @workflow.signal(name="cancel")
    def cancel_signal(self, raw: Any) -> None:
        try:
            cancel = CancelSignal.parse(raw)
        except InputError as exc:
            self._event("ignored", detail=f"malformed cancel: {exc}")
            return
        if self._result is not None:
            self._event("ignored", user=cancel.user, detail=f"cancel after close: {self._closed_reason()}")
            return
        self._event("cancelled", user=cancel.user, detail=cancel.reason)
        self._finish("cancelled", cancel.user or None, cancel.reason)

    def _upsert(self, *extra: SearchAttributeUpdate[Any]) -> None:
        """Keep the search attributes current (status, level, deadline, the current level's assignees,
        plus ``extra``), when the worker found them on the namespace."""
        if not self._search_attributes:
            return
        current = self._assignees[-1] if self._assignees else {"groups": [], "users": []}
        updates: list[SearchAttributeUpdate[Any]] = [
            STATUS.value_set(self._result.outcome if self._result else "pending"),
            LEVEL.value_set(self._level),
            ASSIGNEES.value_set(sorted({*current["groups"], *current["users"]})),
        ]
        if self._due_at is not None:
            updates.append(DUE_AT.value_set(self._due_at))
        workflow.upsert_search_attributes([*updates, *extra])

    def _finish(self, outcome: str, user: str | None, comment: str, decision_id: str | None = None) -> None:
        self._result = ApprovalResult(
            outcome=outcome,
            decided_by=user,
            comment=comment,
            decided_at=_iso(workflow.now()),
            level=self._level,
            escalations=self._escalations,
            decision_id=decision_id,
            request_id=self._request_id,
        )
        self._upsert()

    def _closed_reason(self) -> str:
        assert self._result is not None
        by = f" by {self._result.decided_by}" if self._result.decided_by else ""
        return f"already {self._result.outcome}{by} at {self._result.decided_at}"

    def _ignore(self, raw: Any, reason: str, *, record: bool = True) -> dict[str, Any]:
        decision_id = raw.get("decision_id") if isinstance(raw, dict) else None
        user = raw.get("user") if isinstance(raw, dict) else None
        # Anything a client sent is cut to the read model's column sizes.
        entry = {"decision_id": str(decision_id or "")[:100], "user": str(user or "")[:150], "reason": reason[:500]}
        if record and len(self._ignored) < MAX_IGNORED:
            self._ignored.append(entry)
        if len(self._ignored) < MAX_IGNORED:
            self._event("ignored", user=entry["user"], detail=entry["reason"], id=entry["decision_id"])
        return {"applied": False, "outcome": self._result.outcome if self._result else "", "reason": reason}

    # ---- status and history -----------------------------------------------

    @workflow.query(name="status")
    def status(self) -> dict[str, Any]:
        return {
            "request_id": self._request_id,
            "level": self._level,
            "assignees": self._assignees,
            "due_at": _iso(self._due_at) if self._due_at else None,
            "escalations": self._escalations,
            "result": asdict(self._result) if self._result else None,
            "policy_version": self._policy.version if self._policy else None,
            "votes": list(self._votes.values()),
            "events": self._events,
        }

    def _event(self, kind: str, **fields: Any) -> None:
        self._events.append({"at": _iso(workflow.now()), "type": kind, "level": self._level, **fields})

    def _notify(self, kind: str, *, suffix: str = "") -> None:
        # The run id is unique across workflows; the key stays short whatever the workflow id.
        key = f"{workflow.info().run_id}:{kind}:{self._level}:{suffix}"
        notify = NotifyInput(event_key=key, workflow_id=workflow.info().workflow_id, kind=kind, level=self._level)
        self._notifications.append(asyncio.create_task(self._send(notify)))

    async def _send(self, notify: NotifyInput) -> None:
        try:
            await workflow.execute_activity(
                "send_notification", notify, start_to_close_timeout=timedelta(minutes=1), retry_policy=NOTIFY_RETRY
            )
        except ActivityError as exc:
            self._event("notification_failed", detail=f"{notify.kind}: {exc.cause or exc}")
