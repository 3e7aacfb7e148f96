"""A fresh install answers its first request: one default policy, editable and replaceable like any.

Without it, the first ``ApprovalWorkflow`` a foreign client starts on a new database fails with "no
policy named, no routing rule matched, and no default policy". The policy: group ``approvers`` (created
if missing) for one day, then the request expires. Only made when no policy is the default yet, so a
database that has one (any upgraded install) is left as it is.
"""

from datetime import timedelta

from django.db import migrations

SLUG = "default"


def add_default_policy(apps, schema_editor):
    Policy = apps.get_model("approvals", "Policy")
    PolicyLevel = apps.get_model("approvals", "PolicyLevel")
    Group = apps.get_model("auth", "Group")
    if Policy.objects.filter(is_default=True).exists() or Policy.objects.filter(slug=SLUG).exists():
        return
    policy = Policy.objects.create(
        slug=SLUG,
        name="Default",
        description="Shipped with Tollgate: group approvers has a day, then the request expires. Edit or replace it.",
        final_action="expire",
        is_default=True,
    )
    level = PolicyLevel.objects.create(policy=policy, order=1, timeout=timedelta(days=1))
    level.groups.add(Group.objects.get_or_create(name="approvers")[0])


def remove_default_policy(apps, schema_editor):
    Policy = apps.get_model("approvals", "Policy")
    # Only the shipped policy as it was shipped: never one that was edited or is in use.
    Policy.objects.filter(slug=SLUG, tasks=None, revision=1).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0006_chain_existing_audit"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(add_default_policy, remove_default_policy)]
