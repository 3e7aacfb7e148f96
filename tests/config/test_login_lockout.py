"""Login throttling: ten wrong passwords lock that username (not the address) until the cool-off or an admin."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from tests.support.data import PASSWORD

pytestmark = pytest.mark.django_db
LOCKED = "this username is locked for 15 minutes"


@pytest.fixture
def people(cast: dict[str, Any]) -> dict[str, Any]:
    for user in cast.values():  # the password every login below types
        user.password = make_password(PASSWORD)
        user.save(update_fields=["password"])
    return cast


def log_in(username: str, password: str, *, address: str = "10.0.0.5") -> Any:
    """A fresh browser each time, as an attacker's script would be; all behind one proxy address."""
    return Client(REMOTE_ADDR=address).post(reverse("login"), {"username": username, "password": password})


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == reverse("approvals:inbox")


def test_ten_wrong_passwords_lock_the_username_even_against_the_right_one(people: dict[str, Any]) -> None:
    assert settings.AXES_FAILURE_LIMIT == 10
    for attempt in range(9):
        response = log_in("bob", f"guess-{attempt}")
        assert response.status_code == 200 and LOCKED not in response.content.decode()
    tenth = log_in("bob", "guess-9")
    assert tenth.status_code == 429 and LOCKED in tenth.content.decode()

    refused = log_in("bob", PASSWORD)
    page = refused.content.decode()
    assert refused.status_code == 429 and "sessionid" not in refused.cookies
    # The ordinary login page, with the reason, not a bare error page.
    assert "<h1>Log in</h1>" in page and 'name="password"' in page
    assert "Too many failed logins for “bob”: this username is locked for 15 minutes" in page
    assert "ask an administrator to unlock it" in page


def test_other_usernames_behind_the_same_address_are_unaffected(people: dict[str, Any]) -> None:
    for attempt in range(10):
        log_in("bob", f"guess-{attempt}")
    assert not logged_in(log_in("bob", PASSWORD))
    assert logged_in(log_in("carol", PASSWORD))  # same proxy address, other approver
    assert not logged_in(log_in("bob", PASSWORD, address="10.0.0.99"))  # the lock follows the username


def test_failures_below_the_limit_do_not_lock(people: dict[str, Any]) -> None:
    for attempt in range(9):
        log_in("bob", f"guess-{attempt}")
    assert logged_in(log_in("bob", PASSWORD))


def test_axes_reset_username_unlocks_it(people: dict[str, Any]) -> None:
    for attempt in range(10):
        log_in("bob", f"guess-{attempt}")
    assert not logged_in(log_in("bob", PASSWORD))
    call_command("axes_reset_username", "bob")
    assert logged_in(log_in("bob", PASSWORD))


def test_an_admin_unlocks_it_in_the_admin(people: dict[str, Any]) -> None:
    for attempt in range(10):
        log_in("bob", f"guess-{attempt}")
    admin = Client()
    admin.force_login(people["admin"])
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "bob" in listing.content.decode()
    ids = [str(pk) for pk in AccessAttempt.objects.filter(username="bob").values_list("pk", flat=True)]
    response = admin.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )
    assert response.status_code == 302
    assert logged_in(log_in("bob", PASSWORD))


def test_the_lock_and_each_refused_attempt_are_logged(people: dict[str, Any], caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="tollgate.login")
    for attempt in range(10):
        log_in("bob", f"guess-{attempt}")
    assert [r.getMessage() for r in caplog.records if r.name == "tollgate.login"] == [
        "username 'bob' locked for 15 minutes after 10 failed logins"
    ]
    caplog.clear()
    log_in("bob", PASSWORD)  # the 11th attempt
    assert [r.getMessage() for r in caplog.records if r.name == "tollgate.login"] == [
        "login refused for username 'bob': locked after too many failed logins"
    ]


def test_the_lock_ends_after_the_cool_off(people: dict[str, Any], settings: Any) -> None:
    for attempt in range(10):
        log_in("bob", f"guess-{attempt}")
    assert not logged_in(log_in("bob", PASSWORD))
    # Sixteen minutes later, as far as the database can tell.
    AccessAttempt.objects.filter(username="bob").update(
        attempt_time=AccessAttempt.objects.get(username="bob").attempt_time - settings.AXES_COOLOFF_TIME * 16 / 15
    )
    assert logged_in(log_in("bob", PASSWORD))


def run_settings(**env: str) -> subprocess.CompletedProcess[str]:
    code = "import django; django.setup(); from django.conf import settings as s; "
    code += "print(s.AXES_FAILURE_LIMIT, int(s.AXES_COOLOFF_TIME.total_seconds()))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
    )  # fmt: skip


def test_limit_and_lockout_come_from_the_environment() -> None:
    result = run_settings(TOLLGATE_LOGIN_FAILURE_LIMIT="3", TOLLGATE_LOGIN_LOCKOUT_MINUTES="60")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "3600"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOLLGATE_LOGIN_FAILURE_LIMIT", "ten"),
        ("TOLLGATE_LOGIN_FAILURE_LIMIT", "0"),
        ("TOLLGATE_LOGIN_LOCKOUT_MINUTES", "-5"),
        ("TOLLGATE_LOGIN_LOCKOUT_MINUTES", "a while"),
    ],
)
def test_a_wrong_limit_fails_at_start_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SECRET_KEY": "test-only-key", variable: value},
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tollgate: configuration error: ") and variable in lines[0]
