"""The reference saga's ledger: what each order's steps and compensations did.

One row per (order, action), so a retried activity finds its row and never
applies twice, and a compensation written first blocks the step it undoes.
"""

from __future__ import annotations

from django.db import models


class LedgerEntry(models.Model):
    """One step or compensation of an order (app label ``workflows``: its table predates the move)."""

    order_id = models.CharField(max_length=50)
    action = models.CharField(max_length=100)  # reserve:<sku>, release:<sku>, charge, refund, confirm, ...
    amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    quantity = models.PositiveIntegerField(default=0)
    undid = models.BooleanField(default=False)  # a compensation that found its step's row
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["order_id", "action"], name="ledger_one_action_per_order")]
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"{self.order_id} {self.action}"

    @property
    def is_compensation(self) -> bool:
        """Written by the saga's unwinding: a release of reserved stock or a refund."""
        return self.action.startswith("release:") or self.action == "refund"
