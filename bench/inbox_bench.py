"""Inbox at scale: the first inbox page with 100,000 pending tasks against the same page with 100.

    .venv/bin/python bench/inbox_bench.py [--tasks 100000] [--repeat 15] [--quick] [--json PATH]

Uses a throwaway database: a SQLite file in a temporary directory, or, when DATABASE_URL names a
PostgreSQL server, a database created for the run and dropped after it. It seeds the demo cast,
then measures bob's inbox (``/approvals/``, a logged-in session through Django's full stack:
middleware, the header's count, the template) in three states:

1. baseline: 100 pending tasks, all in bob's inbox;
2. the same 100 in bob's inbox among ``--tasks`` pending tasks for other groups;
3. ``--tasks`` pending tasks, all of them in bob's inbox (the worst case).

It prints medians, the ratios against the baseline (target: at most 1.5) and the SQL queries per
view, which must be the same in all three.

Then, in state 3, it measures every sort (both ways) and the filters (requester, policy, overdue,
level, assigned directly or through a group, a payload condition, and all of them at once) and
compares the worst of them with the same baseline. A filtered page counts its own matches (capped at
``INBOX_COUNT_CAP``), one query more than the plain page, which the table shows. A filter that matches
almost nothing still reads every pending task once (no index can serve every combination): those
figures are printed separately as what such a filter costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, machine_info, setup_django, write_result  # noqa: E402

TARGET = 1.5


def add_tasks(count: int, *, group_name: str, offset: int) -> None:
    """Bulk-insert pending tasks assigned to one group at level 1, due over the next weeks."""
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from approvals.models import ApprovalTask, Policy, TaskAssignment

    group = Group.objects.get_or_create(name=group_name)[0]
    policy = Policy.objects.get(slug="standard")
    now = timezone.now()
    for start in range(offset, offset + count, 5000):
        batch = [
            ApprovalTask(
                workflow_id=f"approval-bench-{n}",
                request_id=f"bench-{n}",
                title=f"Bench request {n}",
                requested_by="alice",
                payload={"amount": n % 5000, "n": n},
                policy=policy,
                policy_version=1,
                status=ApprovalTask.Status.PENDING,
                due_at=now + timedelta(minutes=n % 40000),
                created_at=now - timedelta(seconds=n),
            )  # fmt: skip
            for n in range(start, min(start + 5000, offset + count))
        ]
        ApprovalTask.objects.bulk_create(batch, batch_size=1000)
        created = ApprovalTask.objects.filter(workflow_id__in=[t.workflow_id for t in batch]).values_list(
            "pk", flat=True
        )
        TaskAssignment.objects.bulk_create(
            [TaskAssignment(task_id=pk, level=1, group=group) for pk in created], batch_size=1000
        )
    analyze()


def analyze() -> None:
    """Fresh planner statistics, as PostgreSQL's autovacuum keeps them within a minute of a bulk load
    (SQLite has no autovacuum; ``ANALYZE`` is what ``PRAGMA optimize`` would run)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


SORTS = [f"{sign}{key}" for key in ("due", "requested", "requester", "level", "title") for sign in ("", "-")]
FILTERS = {
    "requester=alice": "requester=alice",
    "policy=standard": "policy=standard",
    "level=1": "level=1",
    "via=group": "via=group",
    "where amount >= 1000": "where=amount+%3E%3D+1000",
    "all filters, sorted by -title": "sort=-title&requester=alice&policy=standard&level=1&via=group"
    "&where=amount+%3E%3D+1000",
}
# Filters that match (almost) nothing: the page reads every pending task once to know it.
SPARSE = {
    "overdue (1 task)": "overdue=1",
    "via=direct (none)": "via=direct",
    "where amount == -1 (none)": "where=amount+%3D%3D+-1",
}


def measure(repeat: int, query: str = "") -> tuple[float, float, int, int]:
    """Median and p95 milliseconds of bob's first inbox page, its SQL queries and its row count."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bob"))
    path = "/approvals/" + (f"?{query}" if query else "")
    client.get(path)  # warm-up: templates, the session, the query plan
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - began)
        assert response.status_code == 200
        assert b"Ignored" not in response.content, f"{path}: the inbox ignored part of the query"
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    rows = response.content.count(b"<tr class=")
    if os.environ.get("INBOX_BENCH_SQL"):
        print("    ---")
        for q in queries.captured_queries:
            print(f"    {q['time']:>6} {q['sql'][:300]}")
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    return statistics.median(samples) * 1000, p95 * 1000, len(queries), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks, 9 views each")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeat = 10_000, 9

    workdir = Path(tempfile.mkdtemp(prefix="tollgate-inbox-bench-"))
    url, drop = bench_database(workdir, "inbox-bench")
    os.environ.update({
        "TOLLGATE_VAR_DIR": str(workdir), "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings",
        "TOLLGATE_LOG_LEVEL": "WARNING", "DJANGO_ALLOWED_HOSTS": "testserver", "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "inbox-bench-" + "x" * 40),
        "DJANGO_SECURE_COOKIES": "false",
    })  # fmt: skip
    try:
        engine = setup_django()
        print(f"inbox bench on {engine}: {args.tasks} tasks, median of {args.repeat} views", flush=True)

        add_tasks(100, group_name="approvers", offset=0)
        base = measure(args.repeat)
        began = time.monotonic()
        add_tasks(args.tasks - 100, group_name="bench-others", offset=100)
        print(f"  inserted {args.tasks - 100} tasks for another group in {time.monotonic() - began:.0f} s", flush=True)
        among = measure(args.repeat)
        from approvals.models import TaskAssignment

        TaskAssignment.objects.filter(group__name="bench-others").update(
            group=TaskAssignment.objects.filter(group__name="approvers").values("group")[:1]
        )
        analyze()
        worst = measure(args.repeat)
        from approvals.models import Policy

        Policy.objects.filter(slug="standard").update(inbox_fields="amount, n")  # payload columns shown too
        variants = {f"sort={s}": measure(args.repeat, f"sort={s}") for s in SORTS}
        variants |= {name: measure(args.repeat, query) for name, query in FILTERS.items()}
        sparse = {name: measure(max(3, args.repeat // 3), query) for name, query in SPARSE.items()}
    finally:
        drop()
        shutil.rmtree(workdir, ignore_errors=True)

    states = [
        ("100 tasks, all in bob's inbox (baseline)", base),
        (f"{args.tasks} tasks, 100 in bob's inbox", among),
        (f"{args.tasks} tasks, all in bob's inbox", worst),
    ]
    print(f"\n{'state':<44} {'median':>9} {'p95':>9} {'ratio':>6} {'queries':>8} {'rows':>5}")
    for label, (median, p95, queries, shown) in states:
        print(f"{label:<44} {median:7.1f}ms {p95:7.1f}ms {median / base[0]:6.2f} {queries:8d} {shown:5d}")
    same_queries = len({s[1][2] for s in states}) == 1
    print(f"same number of SQL queries in every state: {'yes' if same_queries else 'NO'}")

    print(f"\n{args.tasks} tasks, all in bob's inbox, by sort and filter:")
    print(f"{'sort / filter':<44} {'median':>9} {'p95':>9} {'ratio':>6} {'queries':>8} {'rows':>5}")
    for label, (median, p95, queries, shown) in variants.items():
        print(f"{label:<44} {median:7.1f}ms {p95:7.1f}ms {median / base[0]:6.2f} {queries:8d} {shown:5d}")
    worst_label, worst_variant = max(variants.items(), key=lambda item: item[1][0])
    sorts_queries = {m[2] for label, m in variants.items() if label.startswith("sort=")}
    filter_queries = {m[2] for label, m in variants.items() if not label.startswith("sort=")}
    sorts_same = sorts_queries == {base[2]}
    filters_same = len(filter_queries) == 1
    print(f"worst: {worst_label}, {worst_variant[0] / base[0]:.2f}x the baseline")
    print(f"every sort costs the plain page's {base[2]} queries: {'yes' if sorts_same else 'NO'}; "
          f"every filter the same {sorted(filter_queries)} (one more: its own capped count)")  # fmt: skip
    print("filters matching (almost) nothing, which read every pending task once:")
    for label, (median, p95, queries, shown) in sparse.items():
        print(f"{label:<44} {median:7.1f}ms {p95:7.1f}ms {median / base[0]:6.2f} {queries:8d} {shown:5d}")
    rows = [
        {
            "figure": f"inbox first page, {label}",
            "value": round(m[0], 2),
            "baseline": round(base[0], 2),
            "ratio": round(m[0] / base[0], 3),
            "unit": "ms",
            "target": f"<= {TARGET}x",
            "met": m[0] / base[0] <= TARGET and same_queries,
        }  # fmt: skip
        for label, m in states[1:]
    ]
    rows.append({
        "figure": f"inbox first page, worst sort/filter ({worst_label}), {args.tasks} tasks all in bob's inbox",
        "value": round(worst_variant[0], 2), "baseline": round(base[0], 2),
        "ratio": round(worst_variant[0] / base[0], 3), "unit": "ms", "target": f"<= {TARGET}x",
        "met": worst_variant[0] / base[0] <= TARGET and sorts_same and filters_same,
    })  # fmt: skip
    notes = [
        f"SQL queries per view: {[s[1][2] for s in states]} (must be equal)", f"database: {engine}",
        *(f"sparse filter {k}: {m[0]:.1f} ms ({m[0] / base[0]:.2f}x), reads every task" for k, m in sparse.items()),
    ]  # fmt: skip
    if args.json:
        write_result(args.json, {"bench": "inbox", "rows": rows, "notes": notes, "machine": machine_info()})


if __name__ == "__main__":
    main()
