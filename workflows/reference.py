"""Reference workflows: patterns to copy. Deterministic workflow code only.

``TeamBudgetWorkflow`` is a long-lived entity: signals change its state, a
query reads it, large spends ask for approval through child workflows, and it
continues as new (carrying its state) before its history grows too long.

``OrderSagaWorkflow`` is a saga: each step registers its compensation before it
runs, and on rejection, expiry or any failure the registered compensations run
in reverse order. Large orders ask a person through a child ``ApprovalWorkflow``
while their stock is reserved, so an approved order cannot find it sold out.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    is_cancelled_exception,
)

from workflows.types import (
    PARENT_TYPE_MEMO,
    ApprovalResult,
    BudgetInput,
    InputError,
    LedgerInput,
    LedgerResult,
    OrderInput,
    OrderResult,
    SpendSignal,
)

STEP_TIMEOUT = timedelta(seconds=30)
# Until the database is back; declined payments and bad input are final.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["InvalidInput", "PaymentDeclined"],
)
HOLD_TIMEOUT = timedelta(hours=1)
HOLD_HEARTBEAT = timedelta(seconds=10)


@workflow.defn(name="OrderSagaWorkflow")
class OrderSagaWorkflow:
    def __init__(self) -> None:
        self._compensations: list[tuple[str, LedgerInput]] = []  # (activity, its argument)
        self._done: list[str] = []

    @workflow.run
    async def run(self, raw: Any) -> OrderResult:
        try:
            order = OrderInput.parse(raw)
        except InputError as exc:
            raise ApplicationError(f"invalid input: {exc}", exc.field, type="InvalidInput", non_retryable=True)

        approval: ApprovalResult | None = None
        try:
            for item in order.items:
                sku = item.sku
                release = LedgerInput(order.order_id, f"release:{sku}", quantity=item.quantity, undoes=f"reserve:{sku}")
                self._compensations.append(("release_inventory", release))
                await self._step(
                    "reserve_inventory", LedgerInput(order.order_id, f"reserve:{sku}", quantity=item.quantity)
                )
            if order.amount >= order.approval_threshold:
                approval = await self._ask_approval(order)
                if approval.outcome != "approved":
                    return await self._unwind(order, approval.outcome, approval)
            refund = LedgerInput(order.order_id, "refund", amount=order.amount, undoes="charge")
            self._compensations.append(("refund_payment", refund))
            await self._step(
                "charge_payment", LedgerInput(order.order_id, "charge", amount=order.amount, fail=order.fail_payment)
            )
            await self._step(
                "confirm_order",
                LedgerInput(order.order_id, "confirm", hold=order.hold_confirm),
                held=order.hold_confirm,
            )
        except (ActivityError, ChildWorkflowError, asyncio.CancelledError) as exc:
            if is_cancelled_exception(exc):
                # Cancelled through Temporal: undo what was done, then end as cancelled.
                await self._unwind(order, "cancelled", approval)
                raise
            return await self._unwind(order, "failed", approval, error=failure_message(exc))
        return OrderResult(order.order_id, "confirmed", self._done, [], approval)

    async def _step(self, activity: str, data: LedgerInput, *, held: bool = False) -> None:
        await workflow.execute_activity(
            activity,
            data,
            result_type=LedgerResult,
            start_to_close_timeout=HOLD_TIMEOUT if held else STEP_TIMEOUT,
            heartbeat_timeout=HOLD_HEARTBEAT if held else None,
            retry_policy=STEP_RETRY,
        )
        self._done.append(data.action)

    async def _ask_approval(self, order: OrderInput) -> ApprovalResult:
        items = ", ".join(f"{item.quantity} x {item.sku}" for item in order.items)
        return await workflow.execute_child_workflow(
            "ApprovalWorkflow",
            {
                "request_id": f"order-{order.order_id}",
                "title": f"Order {order.order_id} for {order.customer}: {order.amount:.2f}",
                "requested_by": order.customer,
                "payload": {"order_id": order.order_id, "amount": order.amount, "items": items},
            },
            id=f"approval-order-{order.order_id}",
            task_queue=order.approvals_queue or workflow.info().task_queue,
            result_type=ApprovalResult,
            memo={PARENT_TYPE_MEMO: "OrderSagaWorkflow"},  # not a command: replay-safe
            # A terminated or timed-out order cancels its approval (which closes the task) rather
            # than terminating it (which would leave the task pending in the inbox).
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
        )

    async def _unwind(
        self, order: OrderInput, status: str, approval: ApprovalResult | None, *, error: str = ""
    ) -> OrderResult:
        """Run the registered compensations, last first. Each is idempotent and
        safe when its step never took effect, so all of them run every time."""
        compensated: list[str] = []
        for activity, data in reversed(self._compensations):
            await workflow.execute_activity(
                activity, data, result_type=LedgerResult, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRY
            )
            compensated.append(data.action)
        return OrderResult(order.order_id, status, self._done, compensated, approval, error)


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
        try:
            self._state = BudgetInput.parse(raw)
        except InputError as exc:
            raise ApplicationError(f"invalid input: {exc}", exc.field, type="InvalidInput", non_retryable=True)
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


def failure_message(exc: BaseException) -> str:
    """The innermost cause's message: what actually went wrong in a child or activity."""
    cause = exc.cause if isinstance(exc, FailureError) else None
    while isinstance(cause, FailureError) and cause.cause is not None:
        cause = cause.cause
    return str(cause or exc)
