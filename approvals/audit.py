"""The tamper-evident audit trail: each task's entries form a hash chain, and decisions are bound into it.

Entry ``n`` of a task stores ``hash = SHA-256(canonical JSON of its task, position, previous hash, time,
kind, actor, level, message and record)`` and ``prev_hash``, the hash of entry ``n - 1``. Changing,
removing, reordering or inserting a row with SQL breaks a hash or a link, and ``verify_task_chain``
names the first place it breaks. Each stored ``Decision`` is copied into a chained entry (its id, user,
choice, comment and time) in the transaction that stores it, so a decision changed or deleted afterwards
no longer matches its entry.

What a chain cannot show by itself: someone with write access who rewrites an entry *and* recomputes
every later hash of that task, or who cuts off a chain's newest entries. Those are caught only against a
head hash kept outside the database (``verify_audit --heads`` prints them, ``--against`` compares).

The canonical form and ``entry_hash`` take plain values and never change: the data migration that chained
the rows from before (0006) uses them too, and every stored hash depends on them.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from approvals.models import ApprovalTask, AuditEntry, Decision

GENESIS = ""  # the prev_hash of a chain's first entry
DECISION = "decision"  # the kind of entry that binds a Decision row
CHUNK = 500  # tasks read at once by verify_all: memory stays bounded however many tasks there are


# ---- the canonical form (pure; the migration depends on it) ----------------------------------------


def iso_utc(moment: datetime) -> str:
    """A time as ISO 8601 in UTC with microseconds: one spelling per instant, whatever the time zone."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    task_id: int,
    seq: int,
    prev_hash: str,
    at: datetime,
    kind: str,
    actor: str,
    level: int | None,
    message: str,
    record: dict[str, Any],
) -> str:
    """SHA-256 (hex) of one entry's content and its place in the chain.

    JSON with sorted keys, no whitespace and ASCII escapes is unambiguous: no choice of message or
    actor can make two different entries serialise alike (a separator inside a value is quoted).
    """
    content = {
        "task": task_id,
        "seq": seq,
        "prev": prev_hash,
        "at": iso_utc(at),
        "kind": kind,
        "actor": actor,
        "level": level,
        "message": message,
        "record": record,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def decision_record(
    *, decision_id: str, user_id: int, choice: str, comment: str, created_at: datetime
) -> dict[str, Any]:
    """What a decision entry vouches for. The user by id, not name: a renamed user is no tampering."""
    return {
        "decision_id": str(decision_id),
        "user_id": user_id,
        "choice": choice,
        "comment": comment,
        "created_at": iso_utc(created_at),
    }


def decision_message(*, username: str, choice: str, comment: str) -> str:
    return f"{username} chose to {choice}" + (f": {comment}" if comment else "")


# ---- appending ----------------------------------------------------------------------------------


def append_entry(
    *,
    task: ApprovalTask,
    event_key: str,
    kind: str,
    at: datetime,
    actor: str = "",
    level: int | None = None,
    message: str = "",
    record: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry to the task's chain, once per ``event_key`` (a retried activity adds nothing).

    The web and the worker's activities append to one task at once; the task row, locked for the
    transaction, makes them take turns, so each reads the head the other just wrote. The unique
    (task, seq) constraint is the backstop: a fork could not commit.
    """
    record = record or {}
    with transaction.atomic():
        list(ApprovalTask.objects.select_for_update().filter(pk=task.pk).values_list("pk", flat=True))
        existing = AuditEntry.objects.filter(event_key=event_key).first()
        if existing is not None:
            return existing
        head = (
            AuditEntry.objects.filter(task=task.pk, seq__isnull=False)
            .order_by("-seq")
            .values_list("seq", "hash")
            .first()
        )
        seq, prev_hash = ((head[0] or 0) + 1, head[1]) if head else (1, GENESIS)
        digest = entry_hash(
            task_id=task.pk,
            seq=seq,
            prev_hash=prev_hash,
            at=at,
            kind=kind,
            actor=actor,
            level=level,
            message=message,
            record=record,
        )
        return AuditEntry.objects.create(
            task=task,
            event_key=event_key,
            seq=seq,
            prev_hash=prev_hash,
            hash=digest,
            at=at,
            kind=kind,
            actor=actor,
            level=level,
            message=message,
            record=record,
        )


def append_decision(*, decision: Decision) -> AuditEntry:
    """Bind a just-stored decision into its task's chain; call it in the transaction that stored it."""
    username = decision.user.get_username()
    return append_entry(
        task=decision.task,
        event_key=f"{decision.task.workflow_id}:decision:{decision.decision_id}",
        kind=DECISION,
        at=decision.created_at,
        actor=username,
        message=decision_message(username=username, choice=decision.choice, comment=decision.comment),
        record=decision_record(
            decision_id=decision.decision_id,
            user_id=decision.user_id,
            choice=decision.choice,
            comment=decision.comment,
            created_at=decision.created_at,
        ),
    )


# ---- verifying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainCheck:
    """One task's trail, verified: what it holds, its head, and the first problem found ("" if none)."""

    task_id: int
    workflow_id: str
    entries: int
    decisions: int
    head_seq: int
    head: str
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        return f"task {self.task_id} ({self.workflow_id}): {self.problem}"


def verify_task_chain(
    task: ApprovalTask,
    *,
    entries: Iterable[AuditEntry] | None = None,
    decisions: Iterable[Decision] | None = None,
) -> ChainCheck:
    """Verify one task's chain and decisions. A page that has already loaded the task's entries and
    decisions passes them in, so verifying costs it no query."""
    return _check(
        task.pk,
        task.workflow_id,
        list(task.audit.all() if entries is None else entries),
        list(task.decisions.all() if decisions is None else decisions),
    )


def _check(task_id: int, workflow_id: str, entries: list[AuditEntry], decisions: list[Decision]) -> ChainCheck:
    chain = sorted((e for e in entries if e.seq is not None), key=lambda e: e.seq or 0)
    problem = _chain_problem(task_id, chain) or _unchained_problem(entries) or _decision_problem(chain, decisions)
    head = chain[-1] if chain else None
    return ChainCheck(
        task_id=task_id,
        workflow_id=workflow_id,
        entries=len(entries),
        decisions=len(decisions),
        head_seq=(head.seq or 0) if head else 0,
        head=head.hash if head else GENESIS,
        problem=problem,
    )


def _chain_problem(task_id: int, chain: list[AuditEntry]) -> str:
    prev_hash = GENESIS
    for position, entry in enumerate(chain, start=1):
        seq = entry.seq or 0
        if seq != position:
            missing = f"entry {position}" if seq == position + 1 else f"entries {position} to {seq - 1}"
            where = f"goes from entry {position - 1} to" if position > 1 else "starts at"
            return f"{missing} removed: the chain {where} entry {seq}"
        label = f"entry {position} ({entry.kind})"
        digest = entry_hash(
            task_id=task_id,
            seq=position,
            prev_hash=entry.prev_hash,
            at=entry.at,
            kind=entry.kind,
            actor=entry.actor,
            level=entry.level,
            message=entry.message,
            record=entry.record,
        )
        if digest != entry.hash:
            return f"{label} altered: hash does not match its content"
        if entry.prev_hash != prev_hash:
            return f"{label} does not follow entry {position - 1}: an entry before it was altered or replaced"
        prev_hash = entry.hash
    return ""


def _unchained_problem(entries: list[AuditEntry]) -> str:
    loose = sorted((e for e in entries if e.seq is None), key=lambda e: (e.at, e.pk))
    if not loose:
        return ""
    entry = loose[0]
    return f"entry ({entry.kind}) at {iso_utc(entry.at)} is not in the chain: it was written outside Tollgate"


def _decision_problem(chain: list[AuditEntry], decisions: list[Decision]) -> str:
    bound = {
        str(e.record.get("decision_id")): (position, e)
        for position, e in enumerate(chain, start=1)
        if e.kind == DECISION and isinstance(e.record, dict)
    }
    for decision in sorted(decisions, key=lambda d: (d.created_at, d.pk)):
        found = bound.pop(str(decision.decision_id), None)
        if found is None:
            return f"decision {decision.decision_id} has no entry in the chain: it was stored outside Tollgate"
        position, entry = found
        stored = decision_record(
            decision_id=decision.decision_id,
            user_id=decision.user_id,
            choice=decision.choice,
            comment=decision.comment,
            created_at=decision.created_at,
        )
        changed = [name.replace("_", " ") for name, value in stored.items() if entry.record.get(name) != value]
        if changed:
            verb = "no longer matches" if len(changed) == 1 else "no longer match"
            return f"decision {decision.decision_id} altered: its {', '.join(changed)} {verb} entry {position}"
    for decision_id, (position, _) in sorted(bound.items(), key=lambda item: item[1][0]):
        return f"entry {position} (decision) records decision {decision_id}, which was deleted"
    return ""


def iter_chains(*, chunk: int = CHUNK) -> Iterator[ChainCheck]:
    """Every task's chain, verified, in task order, reading ``chunk`` tasks' rows at a time."""
    last = 0
    while True:
        tasks = list(ApprovalTask.objects.filter(pk__gt=last).order_by("pk").values_list("pk", "workflow_id")[:chunk])
        if not tasks:
            return
        ids = [pk for pk, _ in tasks]
        entries: dict[int, list[AuditEntry]] = defaultdict(list)
        for entry in AuditEntry.objects.filter(task__in=ids).order_by():
            entries[entry.task_id].append(entry)
        decisions: dict[int, list[Decision]] = defaultdict(list)
        for decision in Decision.objects.filter(task__in=ids).order_by():
            decisions[decision.task_id].append(decision)
        for pk, workflow_id in tasks:
            yield _check(pk, workflow_id, entries.pop(pk, []), decisions.pop(pk, []))
        last = ids[-1]


@dataclass
class TrailSummary:
    tasks: int = 0
    entries: int = 0
    decisions: int = 0
    broken: int = 0
    first_broken: list[ChainCheck] = field(default_factory=list)  # at most ``keep``

    @property
    def ok(self) -> bool:
        return self.broken == 0

    def add(self, check: ChainCheck, *, keep: int) -> None:
        self.tasks += 1
        self.entries += check.entries
        self.decisions += check.decisions
        if not check.ok:
            self.broken += 1
            if len(self.first_broken) < keep:
                self.first_broken.append(check)


def verify_all(*, keep: int = 20, chunk: int = CHUNK) -> TrailSummary:
    """Verify every task; keeps the first ``keep`` broken chains and counts the rest."""
    summary = TrailSummary()
    for check in iter_chains(chunk=chunk):
        summary.add(check, keep=keep)
    return summary
