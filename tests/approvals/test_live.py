"""The live websocket: who may connect, who hears what, and that it crosses processes through Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from approvals import live
from approvals.consumers import LiveConsumer
from tests.support.data import pending_task, test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def listen(user: Any) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    return communicator, connected


async def test_anonymous_visitors_cannot_connect(memory_layer: Any) -> None:
    communicator, connected = await listen(AnonymousUser())
    assert not connected


async def test_only_people_who_may_see_a_task_hear_of_it(memory_layer: Any, cast: dict[str, Any]) -> None:
    task = await sync_to_async(pending_task)("Secret budget", requester=cast["alice"])
    listeners = {name: (await listen(cast[name]))[0] for name in ("alice", "bob", "carol", "dave", "oscar")}
    await sync_to_async(live.task_changed)(task, "closed")
    for name in ("alice", "bob", "oscar"):  # requester, assignee through a group, operator
        assert await listeners[name].receive_json_from(timeout=2) == {
            "event": "task",
            "task": task.pk,
            "kind": "closed",
        }
    for name in ("carol", "dave"):  # not assigned (yet), outsider
        assert await listeners[name].receive_nothing(timeout=0.3)
    for communicator in listeners.values():
        await communicator.disconnect()


async def test_dashboards_hear_when_the_monitoring_snapshot_moves(memory_layer: Any, cast: dict[str, Any]) -> None:
    oscar, _ = await listen(cast["oscar"])  # an operator
    bob, _ = await listen(cast["bob"])
    await sync_to_async(live.monitoring_changed)()
    assert await oscar.receive_json_from(timeout=2) == {"event": "monitoring", "kind": "snapshot"}
    assert await bob.receive_nothing(timeout=0.3)
    await oscar.disconnect()
    await bob.disconnect()


async def test_the_websocket_refuses_other_origins_and_knows_the_session(
    memory_layer: Any, cast: dict[str, Any]
) -> None:
    from config.asgi import application

    client = Client()
    await sync_to_async(client.force_login)(cast["bob"])
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    evil = WebsocketCommunicator(
        application, "/ws/live/", headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)]
    )
    assert not (await evil.connect())[0]
    good = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie)],
    )
    assert (await good.connect())[0]
    await good.disconnect()
    anonymous = WebsocketCommunicator(
        application, "/ws/live/", headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    )
    assert not (await anonymous.connect())[0]


async def test_an_event_raised_in_another_process_arrives_through_redis(
    redis_layer: str, redis_url: str, cast: dict[str, Any]
) -> None:
    task = await sync_to_async(pending_task)("Cross-process", requester=cast["alice"])
    bob, connected = await listen(cast["bob"])
    assert connected
    code = (
        "from approvals.models import ApprovalTask as T; from approvals import live; "
        f"live.task_changed(T.objects.get(pk={task.pk}), 'escalated')"
    )
    env = {**os.environ, "REDIS_URL": redis_url, "TOLLGATE_CHANNEL_PREFIX": redis_layer,
           "DATABASE_URL": await sync_to_async(test_database_url)(), "DJANGO_SECRET_KEY": "x"}  # fmt: skip
    result = await sync_to_async(subprocess.run)(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(json.dumps(await bob.receive_json_from(timeout=5))) == {
        "event": "task", "task": task.pk, "kind": "escalated"}  # fmt: skip
    await bob.disconnect()
