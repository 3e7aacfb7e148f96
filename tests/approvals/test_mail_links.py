"""Mail you can act on: a real SMTP server (aiosmtpd) inside the test, a real Temporal dev server and
worker, and the Approve link in the received message followed with Django's test client, no session."""

from __future__ import annotations

import email
import re
import time
import uuid
from collections.abc import Iterator
from email.message import Message
from typing import Any
from urllib.parse import urlparse

import pytest
from aiosmtpd.controller import Controller
from django.test import Client

from approvals.audit import verify_task_chain
from approvals.models import ApprovalTask, Decision, MailLinkUse
from config.ports import free_port
from tests.support.temporal import eventually
from workflows import client as temporal

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Inbox:
    """What the SMTP server received, as parsed messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if address in self.refuse:
            return "550 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(message.get_content_charset() or "utf-8")


def link(message: Message, choice: str) -> str:
    found = re.search(rf"^\s*{choice}:\s+(\S+)\s*$", body(message), re.MULTILINE)
    assert found, body(message)
    return urlparse(found.group(1)).path


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@pytest.fixture
def smtp(settings: Any) -> Iterator[Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.TOLLGATE_BASE_URL = "http://testserver"
    yield inbox
    controller.stop()


def start_request(payload: dict[str, Any]) -> str:
    token = uuid.uuid4().hex[:10]
    workflow_id = f"approval-mail-{token}"
    request = {"request_id": token, "title": "Laptop for the new hire", "requested_by": "alice", "payload": payload}
    temporal.run(temporal.start_approval, workflow_id=workflow_id, request={**request, "policy": "standard"})
    return workflow_id


def test_the_approve_link_in_a_real_mail_decides_as_its_recipient_without_a_session(
    cast: dict[str, Any], worker: Any, smtp: Inbox
) -> None:
    workflow_id = start_request({"amount": 1200, "vendor": "ACME", "cost centre": "R&D"})
    (message,) = eventually(lambda: smtp.to("bob@example.com"), timeout=20)
    text = body(message)
    assert message["Subject"] == "Approval needed: Laptop for the new hire"
    assert "amount: 1200" in text and "vendor: ACME" in text and "cost centre: R&D" in text
    assert "alice@example.com" not in [m["To"] for m in smtp.messages]  # the requester may not decide
    approve = link(message, "Approve")

    # A GET (what a mail scanner does) decides nothing.
    anonymous = Client(enforce_csrf_checks=True)
    page = anonymous.get(approve)
    assert page.status_code == 200 and "Approve this request?" in page.content.decode()
    assert "deciding as <strong>bob</strong>" in page.content.decode()
    task = ApprovalTask.objects.get(workflow_id=workflow_id)
    assert task.status == "pending" and not Decision.objects.filter(task=task).exists()

    # CSRF still applies to the confirmation's POST.
    assert Client(enforce_csrf_checks=True).post(approve, {"comment": "ok"}).status_code == 403
    assert not Decision.objects.filter(task=task).exists()

    done = anonymous.post(approve, {"csrfmiddlewaretoken": csrf_token(page.content.decode()), "comment": "fine"})
    assert done.status_code == 200
    assert "Approved." in done.content.decode()
    task.refresh_from_db()
    assert (task.status, task.decided_by, task.comment) == ("approved", "bob", "fine")
    decision = Decision.objects.get(task=task)
    assert (decision.user.username, decision.choice, decision.result) == ("bob", "approve", "applied")
    entries = list(task.audit.all())
    assert any(e.kind == "decision" and e.actor == "bob" for e in entries)
    assert verify_task_chain(task, entries=entries, decisions=[decision]).ok

    # The same link again: used, and says so.
    again = anonymous.get(approve)
    assert "This link was already used at" in again.content.decode()
    token = csrf_token(page.content.decode())
    assert anonymous.post(approve, {"csrfmiddlewaretoken": token, "comment": "x"}).status_code == 409
    assert MailLinkUse.objects.filter(task=task).count() == 1


def test_a_mail_server_that_refuses_one_recipient_mails_the_others_once_on_retry(
    cast: dict[str, Any], worker: Any, smtp: Inbox
) -> None:
    from django.contrib.auth.models import Group, User

    erin = User.objects.create_user("erin", "erin@example.com", "x")
    erin.groups.add(Group.objects.get(name="approvers"))
    smtp.refuse.add("erin@example.com")
    workflow_id = start_request({"amount": 5})
    eventually(lambda: smtp.to("bob@example.com"), timeout=20)
    # The first attempt mailed bob, then failed on erin; its progress is kept on the Notification row.
    note = eventually(
        lambda: ApprovalTask.objects.get(workflow_id=workflow_id).notifications.filter(kind="assigned").first()
    )
    assert note.recipients == ["bob@example.com"] and note.sent_at is None
    smtp.refuse.clear()  # the retry (five seconds later) mails erin only
    eventually(lambda: smtp.to("erin@example.com"), timeout=20)
    time.sleep(1)
    assert len(smtp.to("bob@example.com")) == 1  # mailed once though the activity ran more than once
    assert len(smtp.to("erin@example.com")) == 1
    note = ApprovalTask.objects.get(workflow_id=workflow_id).notifications.get(kind="assigned")
    assert sorted(note.recipients) == ["bob@example.com", "erin@example.com"] and note.sent_at is not None
