"""The snapshot's figures, on rows written directly: the database's percentiles equal nearest rank by hand."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

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


def test_the_refresh_stores_each_preset_window_and_the_overview_reads_it(client: Any) -> None:
    """Page views read the rows the refresh computed (one row per window), not the runs; a custom
    window is computed from the runs; the rows survive the trip through JSON unchanged."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from monitoring.models import SnapshotState, WindowHealth
    from monitoring.services import store_window_health, window_health

    now = timezone.now()
    Execution.objects.create(
        workflow_id="p-1", run_id="r", workflow_type="PaymentWorkflow", status="failed", failure_message="declined",
        start_time=now - timedelta(minutes=20), close_time=now - timedelta(minutes=10), duration=600,
    )  # fmt: skip
    Execution.objects.create(
        workflow_id="p-2", run_id="r", workflow_type="PaymentWorkflow", status="completed",
        start_time=now - timedelta(minutes=20), close_time=now - timedelta(minutes=15), duration=300,
    )  # fmt: skip
    store_window_health(now)
    SnapshotState.objects.create(pk=1, refreshed_at=now, close_watermark=now)
    assert sorted(WindowHealth.objects.values_list("window", flat=True)) == ["1h", "24h", "7d"]
    stored = window_health(window="1h", start=now - timedelta(hours=1), end=now, snapshot_at=now)
    computed = type_health(start=now - timedelta(hours=1), end=now)
    assert [r.as_json() for r in stored] == [r.as_json() for r in computed]
    assert stored[0].failure_rate == 0.5 and stored[0].latest_failure_at == now - timedelta(minutes=10)

    oscar = get_user_model().objects.create_user("oscar-figures")
    oscar.groups.add(Group.objects.get_or_create(name="operators")[0])
    client.force_login(oscar)
    WindowHealth.objects.filter(window="24h").update(
        rows=[{**r, "workflow_type": "FromTheRefresh"} for r in WindowHealth.objects.get(window="24h").rows]
    )
    page = client.get("/monitoring/", {"window": "24h", "format": "json"}).json()
    assert [t["workflow_type"] for t in page["types"]] == ["FromTheRefresh"]
    custom = client.get(
        "/monitoring/",
        {"window": "custom", "start": (now - timedelta(days=1)).isoformat(), "end": now.isoformat(), "format": "json"},
    ).json()
    assert [t["workflow_type"] for t in custom["types"]] == ["PaymentWorkflow"]
    # Rows of an older refresh are not served for a newer snapshot.
    SnapshotState.objects.filter(pk=1).update(refreshed_at=now + timedelta(seconds=30))
    page = client.get("/monitoring/", {"window": "24h", "format": "json"}).json()
    assert [t["workflow_type"] for t in page["types"]] == ["PaymentWorkflow"]


def test_trends_count_each_bucket_by_hand_and_are_computed_once_per_snapshot() -> None:
    from monitoring.services import trends

    end = timezone.now().replace(microsecond=0)
    start, snapshot_at = end - timedelta(hours=4), end

    def run(n: int, status: str, closed_ago: timedelta, duration: float) -> None:
        Execution.objects.create(
            workflow_id=f"t-{n}", run_id="r", workflow_type="T", status=status,
            start_time=end - closed_ago - timedelta(seconds=duration), close_time=end - closed_ago, duration=duration,
        )  # fmt: skip

    run(1, "completed", timedelta(hours=3, minutes=59), 0.5)  # bucket 0 (of 4, one hour each)
    run(2, "failed", timedelta(hours=3, minutes=1), 5)  # bucket 0
    run(3, "completed", timedelta(minutes=30), 30)  # bucket 3
    run(4, "timed_out", timedelta(minutes=1), 7200)  # bucket 3
    run(5, "completed", timedelta(hours=5), 1)  # before the window
    figures = trends(start=start, end=end, buckets=4, snapshot_at=snapshot_at)
    assert [(p["closed"], p["failed"]) for p in figures["series"]] == [(2, 1), (0, 0), (0, 0), (2, 1)]
    assert [p["failure_rate"] for p in figures["series"]] == [0.5, None, None, 0.5]
    assert figures["durations"] == {"T": {"< 1s": 1, "1-10s": 0, "10s-1m": 1, "1-10m": 0, "10m-1h": 0, "> 1h": 0}}

    run(6, "completed", timedelta(minutes=2), 2)
    # The same snapshot: the figures it was computed for; the next snapshot sees the new run.
    assert trends(start=start, end=end, buckets=4, snapshot_at=snapshot_at) == figures
    later = trends(start=start, end=end, buckets=4, snapshot_at=snapshot_at + timedelta(seconds=30))
    assert later["series"][3]["closed"] == 3 and later["durations"]["T"]["1-10s"] == 1
