"""The snapshot's figures, on rows written directly: the database's percentiles equal nearest rank by hand."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import Execution
from monitoring.services import percentile, type_health

pytestmark = pytest.mark.django_db


def test_percentiles_from_the_database_match_nearest_rank_by_hand() -> None:
    now, chance = timezone.now(), random.Random(4)
    expected: dict[str, list[float]] = {}
    for name, count in (("A", 37), ("B", 5), ("C", 1), ("D", 200)):
        values = [round(chance.uniform(0.1, 500), 3) for _ in range(count)]
        expected[name] = values
        Execution.objects.bulk_create(
            Execution(workflow_id=f"{name}-{i}", run_id="r", workflow_type=name, status="completed",
                      start_time=now - timedelta(minutes=30, seconds=v), close_time=now - timedelta(minutes=30),
                      duration=v)
            for i, v in enumerate(values)
        )  # fmt: skip
    # Failed and older runs do not count towards the durations.
    Execution.objects.create(
        workflow_id="A-failed", run_id="r", workflow_type="A", status="failed", start_time=now - timedelta(minutes=5),
        close_time=now - timedelta(minutes=4), duration=10_000,
    )  # fmt: skip
    Execution.objects.create(
        workflow_id="A-old", run_id="r", workflow_type="A", status="completed", start_time=now - timedelta(hours=3),
        close_time=now - timedelta(hours=2), duration=10_000,
    )  # fmt: skip
    rows = {r.workflow_type: r for r in type_health(start=now - timedelta(hours=1), end=now)}
    for name, values in expected.items():
        by_hand = sorted(values)
        ranks = {p: -(-p * len(by_hand) // 100) for p in (50, 95, 99)}  # ceil(p * n / 100)
        assert (rows[name].p50, rows[name].p95, rows[name].p99) == tuple(by_hand[ranks[p] - 1] for p in ranks), name
        assert rows[name].p95 == percentile(values, 95)
    assert rows["A"].failure_rate == 1 / 38 and rows["A"].previous["closed"] == 1
    assert rows["C"].p50 == rows["C"].p99 == expected["C"][0]
