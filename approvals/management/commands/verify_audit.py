"""``python manage.py verify_audit``: check every task's audit chain and decisions (approvals.audit).

Exit 0 with one line when every chain holds; exit 1 naming each broken task (the first 20) and the
entry where it breaks. ``--heads`` prints each task's head hash to keep outside the database;
``--against FILE`` compares the chains with such a file, which catches what a chain cannot show by
itself (a chain rewritten with every later hash recomputed, newest entries cut off, a task deleted).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.audit import ChainCheck, TrailSummary, iter_chains
from approvals.models import AuditEntry

KEEP = 20  # broken tasks named one by one; the rest are counted


def _plain(text: str) -> str:
    return text


def _one_line(text: str) -> str:
    """Control characters spelled out: a workflow id or decision id (any client chooses them) holding a
    tab or newline must not split a line of the report or shift a column of the heads file."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SavedHeads:
    """Heads exported earlier by ``--heads``, read alongside the chains: both come in task order, so a
    file of any size is compared holding one line at a time."""

    def __init__(self, path: Path) -> None:
        try:
            self.lines = self._parse(path.open(encoding="utf-8"), path)
        except OSError as exc:
            raise CommandError(f"--against: cannot read {path}: {exc.strerror}") from None
        self.pending: tuple[int, str, int, str] | None = next(self.lines, None)

    @staticmethod
    def _parse(handle: Any, path: Path) -> Iterator[tuple[int, str, int, str]]:
        last = 0
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.rstrip("\n").split("\t")
                try:
                    task_id, workflow_id, seq, head = int(parts[0]), parts[1], int(parts[2]), parts[3]
                except (IndexError, ValueError):
                    raise CommandError(
                        f"--against: {path} line {number} is not 'task<TAB>workflow id<TAB>entries<TAB>hash'"
                    ) from None
                if task_id <= last:
                    raise CommandError(f"--against: {path} line {number} is out of task order")
                last = task_id
                yield task_id, workflow_id, seq, head

    def gone_before(self, task_id: int | None) -> Iterator[ChainCheck]:
        """Saved tasks with no row any more (all of the remaining ones when ``task_id`` is None)."""
        while self.pending is not None and (task_id is None or self.pending[0] < task_id):
            gone_id, workflow_id, _, _ = self.pending
            yield ChainCheck(gone_id, workflow_id, 0, 0, 0, "", "deleted since the heads were exported")
            self.pending = next(self.lines, None)

    def compare(self, check: ChainCheck) -> ChainCheck:
        if self.pending is None or self.pending[0] != check.task_id:
            return check  # a task newer than the file
        _, _, seq, head = self.pending
        self.pending = next(self.lines, None)
        if not check.ok or seq == 0:
            return check
        if check.head_seq < seq:
            cut = f"entry {seq}" if check.head_seq + 1 == seq else f"entries {check.head_seq + 1} to {seq}"
            problem = f"{cut} removed since the heads were exported"
        else:
            then = check.head if check.head_seq == seq else _hash_at(check.task_id, seq)
            problem = "" if then == head else f"entry {seq} differs from its exported head: the chain was rewritten"
        return replace(check, problem=problem) if problem else check


def _hash_at(task_id: int, seq: int) -> str | None:
    return AuditEntry.objects.filter(task=task_id, seq=seq).values_list("hash", flat=True).first()


class Command(BaseCommand):
    help = (
        "Verify every task's tamper-evident audit trail: each entry's hash, the chain's order, and that every "
        "decision still matches its entry. Exit 0 when intact, 1 naming the first broken entry per task."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--heads",
            action="store_true",
            help="print each task's head (task id, workflow id, entries, head hash; tab-separated) for "
            "safekeeping outside the database; the verdict then goes to stderr",
        )
        parser.add_argument(
            "--against",
            metavar="FILE",
            type=Path,
            help="also compare the chains with heads saved earlier by --heads",
        )

    def handle(self, *args: Any, heads: bool, against: Path | None, **options: Any) -> None:
        saved = SavedHeads(against) if against else None
        summary = TrailSummary()
        if heads:
            self.stdout.write("# task\tworkflow_id\tentries\thead_sha256")
        for check in iter_chains():
            if saved is not None:
                for gone in saved.gone_before(check.task_id):
                    summary.add(gone, keep=KEEP)
                check = saved.compare(check)
            if heads:
                self.stdout.write(f"{check.task_id}\t{_one_line(check.workflow_id)}\t{check.head_seq}\t{check.head}")
            summary.add(check, keep=KEEP)
        for gone in saved.gone_before(None) if saved is not None else ():
            summary.add(gone, keep=KEEP)
        self._report(summary, to_stderr=heads)
        if not summary.ok:
            sys.exit(1)

    def _report(self, summary: TrailSummary, *, to_stderr: bool) -> None:
        out = self.stderr if to_stderr else self.stdout
        for check in summary.first_broken:
            out.write(_one_line(check.describe()), style_func=_plain)
        if summary.broken > len(summary.first_broken):
            out.write(f"... and {summary.broken - len(summary.first_broken):,} more broken tasks", style_func=_plain)
        if summary.ok:
            out.write(
                f"audit trail intact: {summary.entries:,} entries, {summary.decisions:,} decisions, "
                f"{summary.tasks:,} tasks",
                style_func=_plain,
            )
        else:
            out.write(
                f"audit trail BROKEN: {summary.broken:,} of {summary.tasks:,} tasks fail verification",
                style_func=_plain,
            )
