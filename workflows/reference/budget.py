"""Reference ``TeamBudgetWorkflow``: a long-lived entity, with its input and signal types.

Signals change its state, a query reads it, large spends ask for approval
through child workflows, and it continues as new (carrying its state) before
its history grows too long. Deterministic workflow code only.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ChildWorkflowError,
)

from workflows.parsing import (
    InputError,
    check_json,
    json_object,
    json_type,
    known_keys,
    number,
    positive_number,
    string_field,
    whole_number,
)
from workflows.reference.common import failure_message, parse_input
from workflows.types import PARENT_TYPE_MEMO, ApprovalResult

MAX_AMOUNT = 1_000_000_000
MAX_SPENT = 10**15  # spends add up across runs
BUDGET_FIELDS = (
    "team",
    "balance",
    "limit",
    "max_events",
    "approvals_queue",
    "spent",
    "runs",
    "queued",
    "seen",
    "recent",
)


@dataclass(frozen=True)
class SpendSignal:
    amount: float
    by: str
    reason: str
    spend_id: str = ""  # the caller's key: a spend signalled twice is applied once

    @classmethod
    def parse(cls, raw: Any) -> SpendSignal:
        if not isinstance(raw, dict):
            raise InputError("spend", f"must be a JSON object, got {json_type(raw)}")
        check_json(raw, "spend")
        known_keys(raw, ("amount", "by", "reason", "spend_id"), "spend")
        return cls(
            amount=positive_number(raw, "amount", maximum=MAX_AMOUNT),
            by=string_field(raw, "by", required=True, max_length=150),
            reason=string_field(raw, "reason", required=False, max_length=500),
            spend_id=string_field(raw, "spend_id", required=False, max_length=100),
        )


@dataclass(frozen=True)
class BudgetInput:
    """A team's budget; also the state one run hands to the next through continue-as-new."""

    team: str
    balance: float
    limit: float  # spends above it need an approval
    max_events: int = 500  # spends handled per run before it continues as new
    approvals_queue: str = ""
    spent: float = 0
    runs: int = 1
    queued: list[dict[str, Any]] = field(default_factory=list)  # signals not yet handled when the run ended
    seen: list[str] = field(default_factory=list)  # recent spend ids, for de-duplication across runs
    recent: list[dict[str, Any]] = field(default_factory=list)  # what the ``balance`` query shows

    @classmethod
    def parse(cls, raw: Any) -> BudgetInput:
        raw = json_object(raw)
        known_keys(raw, BUDGET_FIELDS)
        balance = number(raw, "balance", default=None, minimum=0, maximum=MAX_AMOUNT)
        max_events = whole_number(raw, "max_events", default=500, minimum=1, maximum=10_000)
        queued = raw.get("queued", [])
        seen = raw.get("seen", [])
        recent = raw.get("recent", [])
        for name, value in (("queued", queued), ("seen", seen), ("recent", recent)):
            if not isinstance(value, list):
                raise InputError(name, "must be an array (state carried by continue-as-new)")
        return cls(
            team=string_field(raw, "team", required=True, max_length=100),
            balance=balance,
            limit=positive_number(raw, "limit", maximum=MAX_AMOUNT),
            max_events=max_events,
            approvals_queue=string_field(raw, "approvals_queue", required=False, max_length=200),
            spent=number(raw, "spent", default=0, minimum=0, maximum=MAX_SPENT),
            runs=whole_number(raw, "runs", default=1, minimum=1, maximum=2**31 - 1),
            queued=queued,
            seen=[str(key) for key in seen],
            recent=[entry for entry in recent if isinstance(entry, dict)],
        )


MAX_SEEN = 200  # spend ids remembered for de-duplication, carried from run to run
MAX_RECENT = 50  # entries the ``balance`` query shows


@workflow.defn(name="TeamBudgetWorkflow")
class TeamBudgetWorkflow:
    def __init__(self) -> None:
        self._state: BudgetInput | None = None
        self._queue: list[Any] = []
        self._seen: list[str] = []
        self._recent: list[dict[str, Any]] = []
        self._awaiting: dict[str, SpendSignal] = {}
        self._handled = 0

    @workflow.run
    async def run(self, raw: Any) -> None:
        self._state = parse_input(BudgetInput.parse, raw)
        # Signals may have arrived before this line (they run first on a new run): keep their order.
        self._queue[:0] = self._state.queued
        self._seen = list(self._state.seen)
        self._recent = list(self._state.recent)
        approvals: list[asyncio.Task[None]] = []  # held, so no running approval task is garbage collected
        while True:
            await workflow.wait_condition(lambda: bool(self._queue) or self._should_continue())
            while self._queue and not self._should_continue():
                task = self._handle(self._queue.pop(0))
                if task is not None:
                    approvals.append(task)
            if self._should_continue():
                break
        # Children's results would be lost across runs: let pending approvals end first,
        # while new spends keep queueing and travel to the next run.
        await workflow.wait_condition(lambda: not self._awaiting and workflow.all_handlers_finished())
        state = self._state
        workflow.continue_as_new(
            asdict(
                replace(
                    state,
                    runs=state.runs + 1,
                    queued=list(self._queue),
                    seen=self._seen[-MAX_SEEN:],
                    recent=self._recent,
                )
            )
        )

    def _should_continue(self) -> bool:
        assert self._state is not None
        return self._handled >= self._state.max_events or workflow.info().is_continue_as_new_suggested()

    def _handle(self, raw: Any) -> asyncio.Task[None] | None:
        assert self._state is not None
        self._handled += 1
        try:
            spend = SpendSignal.parse(raw)
        except InputError as exc:
            self._record("ignored", detail=f"malformed spend: {exc}")
            return None
        spend_id = spend.spend_id or str(workflow.uuid4())
        if spend_id in self._seen:
            self._record("ignored", spend_id=spend_id, by=spend.by, detail="duplicate spend_id")
            return None
        self._seen.append(spend_id)
        spend = replace(spend, spend_id=spend_id)
        if spend.amount > self._state.balance:
            self._record("refused", spend, detail="insufficient balance")
            return None
        if spend.amount > self._state.limit:
            self._awaiting[spend_id] = spend
            self._record("awaiting_approval", spend)
            return asyncio.create_task(self._approve(spend))
        self._apply(spend)
        return None

    async def _approve(self, spend: SpendSignal) -> None:
        assert self._state is not None
        team = self._state.team
        try:
            result = await workflow.execute_child_workflow(
                "ApprovalWorkflow",
                {
                    "request_id": f"budget-{team}-{spend.spend_id}",
                    "title": f"{team} budget: {spend.amount:.2f} for {spend.reason or 'no reason given'}",
                    "requested_by": spend.by,
                    "payload": {"team": team, "amount": spend.amount, "reason": spend.reason},
                },
                id=f"approval-budget-{team}-{spend.spend_id}",
                task_queue=self._state.approvals_queue or workflow.info().task_queue,
                result_type=ApprovalResult,
                memo={PARENT_TYPE_MEMO: "TeamBudgetWorkflow"},
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,  # as the order saga
            )
        except ChildWorkflowError as exc:
            self._record("refused", spend, detail=f"approval failed: {failure_message(exc)}")
        else:
            if result.outcome != "approved":
                self._record("refused", spend, detail=f"approval {result.outcome}")
            elif spend.amount > self._state.balance:  # other spends went first
                self._record("refused", spend, detail="insufficient balance after approval")
            else:
                self._apply(spend, approved_by=result.decided_by or "")
        finally:
            del self._awaiting[spend.spend_id]

    def _apply(self, spend: SpendSignal, *, approved_by: str = "") -> None:
        assert self._state is not None
        self._state = replace(
            self._state, balance=self._state.balance - spend.amount, spent=self._state.spent + spend.amount
        )
        self._record("spent", spend, approved_by=approved_by)

    def _record(self, kind: str, spend: SpendSignal | None = None, **fields: Any) -> None:
        entry: dict[str, Any] = {"at": workflow.now().isoformat(), "type": kind}
        if spend is not None:
            entry.update(spend_id=spend.spend_id, amount=spend.amount, by=spend.by, reason=spend.reason)
        entry.update(fields)
        self._recent = [*self._recent, entry][-MAX_RECENT:]

    @workflow.signal(name="spend")
    def spend_signal(self, raw: Any) -> None:
        """{"amount": 120.5, "by": "alice", "reason": "...", "spend_id": "optional key"}"""
        self._queue.append(raw)

    @workflow.query(name="balance")
    def balance(self) -> dict[str, Any]:
        state = self._state
        return {
            "team": state.team if state else "",
            "balance": state.balance if state else 0,
            "spent": state.spent if state else 0,
            "limit": state.limit if state else 0,
            "run": state.runs if state else 0,
            "awaiting_approval": [asdict(spend) for spend in self._awaiting.values()],
            "queued": len(self._queue),
            "recent": self._recent,
        }
