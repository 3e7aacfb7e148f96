"""A fresh database ships one default policy, so a foreign client's first request has somewhere to go."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth.models import Group

from approvals import policies
from approvals.models import Policy, PolicyLevel

shipped = import_module("approvals.migrations.0007_default_policy")
pytestmark = pytest.mark.django_db


def fresh_database() -> None:
    """What a new install has before anyone edits anything: no policy, no group."""
    Policy.objects.all().delete()
    Group.objects.all().delete()


def test_a_request_naming_no_policy_follows_the_shipped_default() -> None:
    fresh_database()
    shipped.add_default_policy(apps, None)
    snapshot = policies.snapshot_policy(slug="", approvers=None)
    assert (snapshot.slug, snapshot.final_action, len(snapshot.levels)) == ("default", "expire", 1)
    assert snapshot.levels[0].groups == ["approvers"] and snapshot.levels[0].users == []
    assert snapshot.levels[0].timeout_seconds == 86_400
    assert Group.objects.filter(name="approvers").exists()


def test_a_database_with_a_default_of_its_own_is_left_alone() -> None:
    fresh_database()
    mine = Policy.objects.create(slug="mine", name="Mine", is_default=True)
    PolicyLevel.objects.create(policy=mine, order=1, timeout=timedelta(hours=2))
    shipped.add_default_policy(apps, None)
    assert list(Policy.objects.values_list("slug", flat=True)) == ["mine"]


def test_undoing_the_migration_removes_the_shipped_policy_only_while_unedited() -> None:
    fresh_database()
    shipped.add_default_policy(apps, None)
    Policy.objects.filter(slug="default").update(revision=2)  # an admin saved it in the editor
    shipped.remove_default_policy(apps, None)
    assert Policy.objects.filter(slug="default").exists()
    Policy.objects.filter(slug="default").update(revision=1)
    shipped.remove_default_policy(apps, None)
    assert not Policy.objects.filter(slug="default").exists()
