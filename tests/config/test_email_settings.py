"""SMTP settings from the environment: EMAIL_URL or EMAIL_HOST..., the console by default, and a
wrong value fails at start with one line naming the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import env_email

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = ("EMAIL_URL", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS",
             "EMAIL_USE_SSL")  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_without_settings_mail_goes_to_the_console() -> None:
    assert env_email() == {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}


def test_an_email_url_gives_host_port_user_password_and_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_URL", "smtp://mailer%40example.com:p%3Ass@mail.example.com:587/?tls=1")
    assert env_email() == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 587, "EMAIL_HOST_USER": "mailer@example.com", "EMAIL_HOST_PASSWORD": "p:ss",
        "EMAIL_USE_TLS": True, "EMAIL_USE_SSL": False,
    }  # fmt: skip
    monkeypatch.setenv("EMAIL_URL", "smtps://mail.example.com")
    assert env_email()["EMAIL_PORT"] == 465 and env_email()["EMAIL_USE_SSL"] is True


def test_the_usual_variables_work_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_HOST", "mail.example.com")
    monkeypatch.setenv("EMAIL_PORT", "2525")
    monkeypatch.setenv("EMAIL_HOST_USER", "tollgate")
    monkeypatch.setenv("EMAIL_HOST_PASSWORD", "secret")
    monkeypatch.setenv("EMAIL_USE_TLS", "yes")
    settings = env_email()
    assert (settings["EMAIL_HOST"], settings["EMAIL_PORT"], settings["EMAIL_USE_TLS"]) == (
        "mail.example.com",
        2525,
        True,
    )
    assert (settings["EMAIL_HOST_USER"], settings["EMAIL_HOST_PASSWORD"]) == ("tollgate", "secret")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("EMAIL_URL", "http://mail.example.com", "EMAIL_URL must be an smtp:// or smtps:// URL"),
        ("EMAIL_URL", "smtp://mail.example.com:99999", "EMAIL_URL has a port that is not a number"),
        ("EMAIL_URL", "smtp://", "EMAIL_URL names no host"),
        ("EMAIL_URL", "smtp://mail.example.com/?tls=maybe", "EMAIL_URL accepts only ?tls=1 or ?ssl=1"),
        ("EMAIL_URL", "smtp://mail.example.com/?tls=1&ssl=1", "EMAIL_URL asks for both tls and ssl"),
        ("EMAIL_PORT", "smtp", "EMAIL_PORT must be a whole number"),
        ("EMAIL_USE_TLS", "perhaps", "EMAIL_USE_TLS must be true or false"),
    ],
)
def test_a_wrong_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    if variable != "EMAIL_URL":
        monkeypatch.setenv("EMAIL_HOST", "mail.example.com")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(says)):
        env_email()


def test_the_password_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_URL", "http://user:hunter2@mail.example.com")
    with pytest.raises(ImproperlyConfigured) as failure:
        env_email()
    assert "hunter2" not in str(failure.value) and "user:***@" in str(failure.value)


def test_a_wrong_email_url_stops_the_start_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("PYTEST")}
    env["EMAIL_URL"] = "smtp://mail.example.com:port"
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tollgate: configuration error: EMAIL_URL has a port that is not a number from 0 to 65535: "
        "'smtp://mail.example.com:port'"
    ]
