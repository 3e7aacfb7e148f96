"""Reference ``OrderSagaWorkflow``: a saga, with its input types and activities.

Each step registers its compensation before it runs, and on rejection, expiry
or any failure the registered compensations run in reverse order. Large orders
ask a person through a child ``ApprovalWorkflow`` while their stock is
reserved, so an approved order cannot find it sold out.

The workflow class is deterministic code; the activities below it touch the
ledger (``workflows.reference.ledger``), imported inside them so the workflow
sandbox never imports Django.

Activities: thin and idempotent. Every step and compensation is one
``LedgerEntry`` made with ``get_or_create``, so a retry finds the row and never
applies twice. A compensation is recorded even when its step never took
effect, and a step refuses to run once its compensation is recorded: a late
retry cannot charge an order already refunded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    is_cancelled_exception,
)

from workflows.parsing import (
    InputError,
    flag,
    json_object,
    json_type,
    known_keys,
    positive_number,
    string_field,
    whole_number,
)
from workflows.reference.common import failure_message, parse_input

if TYPE_CHECKING:
    from workflows.reference.ledger import LedgerEntry
from workflows.types import PARENT_TYPE_MEMO, ApprovalResult

MAX_AMOUNT = 1_000_000_000  # the ledger keeps 14 digits with 2 decimals
MAX_QUANTITY = 1_000_000
MAX_ITEMS = 100
ORDER_FIELDS = (
    "order_id",
    "amount",
    "items",
    "customer",
    "approval_threshold",
    "approvals_queue",
    "fail_payment",
    "hold_confirm",
)


@dataclass(frozen=True)
class OrderItem:
    sku: str
    quantity: int = 1


@dataclass(frozen=True)
class OrderInput:
    order_id: str
    amount: float
    items: list[OrderItem]
    customer: str
    approval_threshold: float = 1000
    approvals_queue: str = ""  # where the child ApprovalWorkflow runs; the saga's own queue when empty
    fail_payment: bool = False  # demo switch: the charge is declined, so the compensations run
    hold_confirm: bool = False  # demo switch: confirmation waits for ``release_hold`` (crash-and-resume demo)

    @classmethod
    def parse(cls, raw: Any) -> OrderInput:
        raw = json_object(raw)
        known_keys(raw, ORDER_FIELDS)
        items = raw.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise InputError("items", f"must be an array of 1 to {MAX_ITEMS} items")
        parsed: list[OrderItem] = []
        for position, item in enumerate(items):
            where = f"items[{position}]"
            if not isinstance(item, dict):
                raise InputError(where, f"must be an object with 'sku' and 'quantity', got {json_type(item)}")
            known_keys(item, ("sku", "quantity"), where)
            sku = string_field(item, "sku", required=True, max_length=50)
            try:
                quantity = whole_number(item, "quantity", default=1, minimum=1, maximum=MAX_QUANTITY)
            except InputError as exc:
                raise InputError(f"{where}.quantity", str(exc).split(": ", 1)[1]) from None
            if any(other.sku == sku for other in parsed):
                raise InputError(f"{where}.sku", f"{sku!r} is listed twice")
            parsed.append(OrderItem(sku=sku, quantity=quantity))
        return cls(
            order_id=string_field(raw, "order_id", required=True, max_length=50),
            amount=positive_number(raw, "amount", maximum=MAX_AMOUNT),
            items=parsed,
            customer=string_field(raw, "customer", required=True, max_length=150),
            approval_threshold=positive_number(raw, "approval_threshold", default=1000, maximum=MAX_AMOUNT),
            approvals_queue=string_field(raw, "approvals_queue", required=False, max_length=200),
            fail_payment=flag(raw, "fail_payment"),
            hold_confirm=flag(raw, "hold_confirm"),
        )


def items_from_text(parts: list[str]) -> list[dict[str, Any]]:
    """``["desk:2", "lamp"]`` (the start form's and ``manage.py start_workflow``'s way of typing
    items) as the input's ``items``; quantities are checked by ``OrderInput.parse``."""
    items: list[dict[str, Any]] = []
    for part in parts:
        sku, _, quantity = part.strip().partition(":")
        if not sku.strip():
            continue
        if quantity.strip() and not (quantity.strip().isdecimal() and len(quantity.strip()) <= 9):
            raise InputError(
                "items",
                f"“{part.strip()[:60]}”: the quantity after the colon must be a whole number up to {MAX_QUANTITY}",
            )
        items.append({"sku": sku.strip(), "quantity": int(quantity) if quantity.strip() else 1})
    return items


@dataclass(frozen=True)
class LedgerInput:
    """One saga step or compensation: ``action`` is unique per order in the ledger."""

    order_id: str
    action: str
    amount: float = 0
    quantity: int = 0
    undoes: str = ""  # for a compensation: the action it reverses
    fail: bool = False  # charge only: decline it (demo of compensation)
    hold: bool = False  # confirm only: wait for ``release_hold`` first


@dataclass(frozen=True)
class LedgerResult:
    action: str
    applied: bool  # False when a retry found the entry already there, or a compensation had nothing to undo


@dataclass(frozen=True)
class OrderResult:
    order_id: str
    status: str  # confirmed | rejected | expired | cancelled | failed
    done: list[str]  # steps that took effect, in order
    compensated: list[str]  # compensations run, in the order they ran (reverse of registration)
    approval: ApprovalResult | None = None
    error: str = ""


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
        order = parse_input(OrderInput.parse, raw)

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
        for name, data in reversed(self._compensations):
            await workflow.execute_activity(
                name, data, result_type=LedgerResult, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRY
            )
            compensated.append(data.action)
        return OrderResult(order.order_id, status, self._done, compensated, approval, error)


# ---- activities (run on the worker's thread pool, outside the sandbox) ----

HOLD_RELEASED = "hold_released"
HOLD_POLL_SECONDS = 0.5


def _ledger() -> type[LedgerEntry]:
    # Imported here, not at the top: the workflow sandbox re-imports this module for every
    # saga it runs, and must never import Django's models.
    from workflows.reference.ledger import LedgerEntry

    return LedgerEntry


def release_hold(*, order_id: str) -> None:
    """Let an order's held confirmation go on (the crash-and-resume demo)."""
    _ledger().objects.get_or_create(order_id=order_id, action=HOLD_RELEASED)


def _apply(data: LedgerInput, *, compensated_by: str = "") -> LedgerResult:
    if compensated_by and _ledger().objects.filter(order_id=data.order_id, action=compensated_by).exists():
        return LedgerResult(action=data.action, applied=False)
    _, created = _ledger().objects.get_or_create(
        order_id=data.order_id,
        action=data.action,
        defaults={"amount": Decimal(str(data.amount)).quantize(Decimal("0.01")), "quantity": data.quantity},
    )
    return LedgerResult(action=data.action, applied=created)


def _compensate(data: LedgerInput) -> LedgerResult:
    step = _ledger().objects.filter(order_id=data.order_id, action=data.undoes).first()
    entry, created = _ledger().objects.get_or_create(
        order_id=data.order_id,
        action=data.action,
        defaults={
            "amount": step.amount if step else 0,
            "quantity": step.quantity if step else 0,
            "undid": step is not None,
        },
    )
    return LedgerResult(action=data.action, applied=created and entry.undid)


@activity.defn(name="reserve_inventory")
def reserve_inventory(data: LedgerInput) -> LedgerResult:
    sku = data.action.removeprefix("reserve:")
    return _apply(data, compensated_by=f"release:{sku}")


@activity.defn(name="release_inventory")
def release_inventory(data: LedgerInput) -> LedgerResult:
    return _compensate(data)


@activity.defn(name="charge_payment")
def charge_payment(data: LedgerInput) -> LedgerResult:
    if data.fail:
        raise ApplicationError(
            f"payment declined for order {data.order_id}", type="PaymentDeclined", non_retryable=True
        )
    return _apply(data, compensated_by="refund")


@activity.defn(name="refund_payment")
def refund_payment(data: LedgerInput) -> LedgerResult:
    return _compensate(data)


@activity.defn(name="confirm_order")
def confirm_order(data: LedgerInput) -> LedgerResult:
    while data.hold and not _ledger().objects.filter(order_id=data.order_id, action=HOLD_RELEASED).exists():
        if activity.is_cancelled():
            raise CancelledError("the order's saga was cancelled")
        if activity.is_worker_shutdown():
            # Fail this attempt now so the next worker retries it, instead of
            # waiting for the heartbeat timeout.
            raise ApplicationError("worker shutting down while the order was held", type="WorkerShutdown")
        activity.heartbeat()
        time.sleep(HOLD_POLL_SECONDS)
    return _apply(data)


ACTIVITIES: list[Callable[..., Any]] = [
    reserve_inventory,
    release_inventory,
    charge_payment,
    refund_payment,
    confirm_order,
]
