"""Chain the audit entries written before the chain existed, and bind the decisions stored before.

Per task, in the order the page shows them (``at``, then ``pk``): each decision without an entry gets
one (at its own time), then every entry gets its position, the previous entry's hash and its own. The
hash is ``approvals.audit.entry_hash``, a pure function of plain values, so this keeps working however
the models change later. Tasks are read 500 at a time, one task's rows at a time.
"""

from django.db import migrations

from approvals.audit import DECISION, GENESIS, decision_message, decision_record, entry_hash

CHUNK = 500


def chain_task(AuditEntry, Decision, task_id, workflow_id):
    bound = {
        str(record.get("decision_id"))
        for record in AuditEntry.objects.filter(task_id=task_id, kind=DECISION).values_list("record", flat=True)
        if isinstance(record, dict)
    }
    unbound = (
        Decision.objects.filter(task_id=task_id)
        .exclude(decision_id__in=bound)
        .order_by("created_at", "pk")
        .values_list("decision_id", "user_id", "user__username", "choice", "comment", "created_at")
    )
    for decision_id, user_id, username, choice, comment, created_at in unbound:
        AuditEntry.objects.create(
            task_id=task_id,
            event_key=f"{workflow_id}:decision:{decision_id}"[:400],
            kind=DECISION,
            at=created_at,
            actor=username,
            level=None,
            message=decision_message(username=username, choice=choice, comment=comment),
            record=decision_record(
                decision_id=decision_id, user_id=user_id, choice=choice, comment=comment, created_at=created_at
            ),
        )
    entries = list(AuditEntry.objects.filter(task_id=task_id).order_by("at", "pk"))
    prev_hash = GENESIS
    for seq, entry in enumerate(entries, start=1):
        entry.seq, entry.prev_hash = seq, prev_hash
        entry.hash = entry_hash(
            task_id=task_id,
            seq=seq,
            prev_hash=prev_hash,
            at=entry.at,
            kind=entry.kind,
            actor=entry.actor,
            level=entry.level,
            message=entry.message,
            record=entry.record,
        )
        prev_hash = entry.hash
    # Positions are unique per task: clear any first, so running this again cannot collide midway.
    AuditEntry.objects.filter(task_id=task_id).update(seq=None)
    AuditEntry.objects.bulk_update(entries, ["seq", "prev_hash", "hash"], batch_size=CHUNK)


def chain_existing(apps, schema_editor):
    ApprovalTask = apps.get_model("approvals", "ApprovalTask")
    AuditEntry = apps.get_model("approvals", "AuditEntry")
    Decision = apps.get_model("approvals", "Decision")
    last = 0
    while True:
        tasks = list(ApprovalTask.objects.filter(pk__gt=last).order_by("pk").values_list("pk", "workflow_id")[:CHUNK])
        if not tasks:
            return
        for task_id, workflow_id in tasks:
            chain_task(AuditEntry, Decision, task_id, workflow_id)
        last = tasks[-1][0]


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0005_audit_chain"),
    ]

    operations = [
        migrations.RunPython(chain_existing, migrations.RunPython.noop),
    ]
