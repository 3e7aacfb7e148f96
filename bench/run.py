"""Run every benchmark and write the results table into BENCHMARKS.md (``make bench``, ``make bench QUICK=1``).

Each bench script starts what it measures itself (its own Temporal dev server, worker and throwaway
database), prints its own table, and writes its figures as JSON; this runner runs them one after the
other (never side by side: they would measure each other), then replaces the part of BENCHMARKS.md
between the two result markers with one table. The prose around the markers (what dominates where
a target is missed) is written by hand.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...] [--args NAME="--flag value"] [--no-write]

``--args`` replaces one bench's arguments (say ``--args escalation="--approvals 2000"`` where the
issue's 10,000 would take 40 minutes); the table says which benches ran with arguments of their own.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine_info  # noqa: E402

# name: (script, arguments for the full run, arguments for the quick run)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "decision": ("decision_bench.py", [], ["--quick"]),
    "throughput": ("throughput_bench.py", [], ["--quick"]),
    "inbox": ("inbox_bench.py", [], ["--quick"]),
    "monitoring": ("monitoring_bench.py", [], ["--quick"]),
    "escalation": ("escalation_bench.py", [], ["--quick"]),
    "memory": ("memory_bench.py", [], ["--quick"]),
}
START, END = "<!-- results:start -->", "<!-- results:end -->"


def run(name: str, quick: bool, out: Path, override: list[str] | None = None) -> dict[str, Any]:
    script, full, fast = BENCHES[name]
    target = out / f"{name}.json"
    chosen = override if override is not None else fast if quick else full
    command = [sys.executable, str(ROOT / "bench" / script), *chosen, "--json", str(target)]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    began = time.monotonic()
    finished = subprocess.run(command, cwd=ROOT, check=False)
    seconds = time.monotonic() - began
    ended = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    if finished.returncode != 0 or not target.exists():
        failed = [f"FAILED (exit code {finished.returncode})"]
        return {"bench": name, "rows": [], "notes": failed, "seconds": seconds, "ended": ended}
    result: dict[str, Any] = json.loads(target.read_text())
    result["seconds"], result["ended"] = seconds, ended
    if override is not None:
        result.setdefault("notes", []).insert(0, f"run with `{' '.join(override)}`")
    return result


def cell(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def table(results: list[dict[str, Any]], quick: bool) -> str:
    machine = machine_info()
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `make bench{' QUICK=1' if quick else ''}`"
        f" ({'quick sizes' if quick else 'full sizes'}).",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB; {machine['os']};"
        f" load average {machine['load_average']} when the table was written.",
        f"Versions: Python {machine['python']}, Django {machine['django']}, temporalio {machine['temporalio']},"
        f" {machine['temporal_cli']}.",
        "",
        "| bench | figure | value | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            unit = f" {row.get('unit', '')}".rstrip()
            met = {True: "yes", False: "**no**", None: "–"}[row.get("met")]
            value, baseline = cell(row.get("value"), unit), cell(row.get("baseline"), unit)
            lines.append(
                f"| {result['bench']} | {row['figure']} | {value} | {baseline} | {cell(row.get('ratio'), 'x')}"
                f" | {row.get('target', '')} | {met} |"
            )
    lines.append("")
    for result in results:
        notes = "; ".join(result.get("notes", []))
        lines.append(
            f"- {result['bench']} ({result.get('seconds', 0):.0f} s, ended {result.get('ended', '?')}): {notes}"
        )
    return "\n".join(lines)


def _bench_of(line: str) -> str:
    """The bench a table row (``| name | ...``) or a note (``- name (...``) belongs to, or ""."""
    name = line[2:].split(" ", 1)[0] if line.startswith(("| ", "- ")) else ""
    return name if name in BENCHES else ""


def merged(report: str, ran: list[str]) -> str:
    """This run's table with the rows and notes of the benches it did not run kept from the table in
    BENCHMARKS.md (``--keep-others``: one bench measured again after a fix, the rest as they were),
    all in one table in the usual order; each bench's note says when it ended, so a merged table
    still tells when each was measured."""
    path = ROOT / "BENCHMARKS.md"
    if not path.exists() or START not in path.read_text():
        return report
    old = path.read_text().split(START, 1)[1].split(END, 1)[0].splitlines()
    kept = [line for line in old if _bench_of(line) and _bench_of(line) not in ran]
    lines = report.splitlines()
    first = next(i for i, line in enumerate(lines) if _bench_of(line))
    order = list(BENCHES)  # rows before notes, benches in this order; sorted() keeps each bench's own
    ordered = sorted(
        (line for line in lines + kept if _bench_of(line)),
        key=lambda line: (line.startswith("- "), order.index(_bench_of(line))),
    )
    rows = [line for line in ordered if line.startswith("| ")]
    notes = [line for line in ordered if line.startswith("- ")]
    return "\n".join([*lines[:first], *rows, "", *notes])


def write(report: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{START}\n{report}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole suite in under 5 minutes")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--keep-others", action="store_true", help="keep the other benches' rows in BENCHMARKS.md")
    parser.add_argument(
        "--args", action="append", default=[], metavar='NAME="ARGS"', help="arguments of one bench's own"
    )
    args = parser.parse_args()
    overrides: dict[str, list[str]] = {}
    for item in args.args:
        name, _, rest = item.partition("=")
        if name not in BENCHES:
            parser.error(f"--args: no bench named {name!r}")
        overrides[name] = shlex.split(rest)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-results-") as out:
        results = [run(name, args.quick, Path(out), overrides.get(name)) for name in (args.only or BENCHES)]
    report = table(results, args.quick)
    if args.keep_others:
        report = merged(report, [r["bench"] for r in results])
    print(f"\n{report}\n\nall benches: {time.monotonic() - began:.0f} s")
    if not args.no_write:
        write(report)
        print("written to BENCHMARKS.md")
    failed = [r["bench"] for r in results if not r["rows"]]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
