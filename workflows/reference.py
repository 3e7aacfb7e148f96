"""Reference workflows: patterns to copy. Deterministic workflow code only.

``OrderSagaWorkflow`` is a saga: each step registers its compensation before it
runs, and on rejection, expiry or any failure the registered compensations run
in reverse order. Large orders ask a person through a child ``ApprovalWorkflow``
while their stock is reserved, so an approved order cannot find it sold out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, FailureError

from workflows.types import ApprovalResult, InputError, LedgerInput, LedgerResult, OrderInput, OrderResult

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
        self._compensations: list[LedgerInput] = []
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
                self._compensations.append(
                    LedgerInput(order.order_id, f"release:{sku}", quantity=item.quantity, undoes=f"reserve:{sku}")
                )
                await self._step(
                    "reserve_inventory", LedgerInput(order.order_id, f"reserve:{sku}", quantity=item.quantity)
                )
            if order.amount >= order.approval_threshold:
                approval = await self._ask_approval(order)
                if approval.outcome != "approved":
                    return await self._unwind(order, approval.outcome, approval)
            self._compensations.append(LedgerInput(order.order_id, "refund", amount=order.amount, undoes="charge"))
            await self._step(
                "charge_payment", LedgerInput(order.order_id, "charge", amount=order.amount, fail=order.fail_payment)
            )
            await self._step(
                "confirm_order",
                LedgerInput(order.order_id, "confirm", hold=order.hold_confirm),
                held=order.hold_confirm,
            )
        except (ActivityError, ChildWorkflowError) as exc:
            return await self._unwind(order, "failed", approval, error=_message(exc))
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
        )

    async def _unwind(
        self, order: OrderInput, status: str, approval: ApprovalResult | None, *, error: str = ""
    ) -> OrderResult:
        """Run the registered compensations, last first. Each is idempotent and
        safe when its step never took effect, so all of them run every time."""
        compensated: list[str] = []
        for data in reversed(self._compensations):
            activity = "refund_payment" if data.action == "refund" else "release_inventory"
            await workflow.execute_activity(
                activity, data, result_type=LedgerResult, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRY
            )
            compensated.append(data.action)
        return OrderResult(order.order_id, status, self._done, compensated, approval, error)


def _message(exc: FailureError) -> str:
    cause = exc.cause
    while isinstance(cause, FailureError) and cause.cause is not None:
        cause = cause.cause
    return str(cause or exc)
