"""How many examples the property-based suites try: all of them in ``make test`` (what CI runs),
a sixth under ``make test-fast`` (``TOLLGATE_FAST_TESTS=1``), so the edit-and-rerun loop stays
near a minute. The examples are derandomized, so the fast run's are the first of the full run's."""

from __future__ import annotations

import os

FAST = os.environ.get("TOLLGATE_FAST_TESTS") == "1"


def examples(full: int) -> int:
    return max(5, full // 6) if FAST else full
