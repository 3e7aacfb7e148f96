"""Django finds an app's models here; the workflows app's only table is the reference saga's
ledger, defined beside the saga (``workflows/reference/ledger.py``)."""

from workflows.reference.ledger import LedgerEntry

__all__ = ["LedgerEntry"]
