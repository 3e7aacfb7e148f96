"""Activities of the reference saga (workflows/reference.py): thin and idempotent.

Every step and compensation is one ``LedgerEntry`` made with ``get_or_create``,
so a retry finds the row and never applies twice. A compensation is recorded
even when its step never took effect, and a step refuses to run once its
compensation is recorded: a late retry cannot charge an order already refunded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from workflows.models import LedgerEntry
from workflows.types import LedgerInput, LedgerResult

HOLD_RELEASED = "hold_released"
HOLD_POLL_SECONDS = 0.5


def release_hold(*, order_id: str) -> None:
    """Let an order's held confirmation go on (the crash-and-resume demo)."""
    LedgerEntry.objects.get_or_create(order_id=order_id, action=HOLD_RELEASED)


def _apply(data: LedgerInput, *, compensated_by: str = "") -> LedgerResult:
    if compensated_by and LedgerEntry.objects.filter(order_id=data.order_id, action=compensated_by).exists():
        return LedgerResult(action=data.action, applied=False)
    _, created = LedgerEntry.objects.get_or_create(
        order_id=data.order_id,
        action=data.action,
        defaults={"amount": Decimal(str(data.amount)).quantize(Decimal("0.01")), "quantity": data.quantity},
    )
    return LedgerResult(action=data.action, applied=created)


def _compensate(data: LedgerInput) -> LedgerResult:
    step = LedgerEntry.objects.filter(order_id=data.order_id, action=data.undoes).first()
    entry, created = LedgerEntry.objects.get_or_create(
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
    while data.hold and not LedgerEntry.objects.filter(order_id=data.order_id, action=HOLD_RELEASED).exists():
        if activity.is_cancelled():
            raise CancelledError("the order's saga was cancelled")
        if activity.is_worker_shutdown():
            # Fail this attempt now so the next worker retries it, instead of
            # waiting for the heartbeat timeout.
            raise ApplicationError("worker shutting down while the order was held", type="WorkerShutdown")
        activity.heartbeat()
        time.sleep(HOLD_POLL_SECONDS)
    return _apply(data)


ALL: list[Callable[..., Any]] = [
    reserve_inventory,
    release_inventory,
    charge_payment,
    refund_payment,
    confirm_order,
]
