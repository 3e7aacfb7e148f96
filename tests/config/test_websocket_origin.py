"""The live websocket accepts only origins Django trusts: same scheme, host and port, or CSRF_TRUSTED_ORIGINS."""

from __future__ import annotations

from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bob_cookie(settings: Any, cast: dict[str, Any]) -> bytes:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    client = Client()
    client.force_login(cast["bob"])
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connects(cookie: bytes, origin: str, host: str = "127.0.0.1:8000", **extra: str) -> bool:
    from config.asgi import application

    headers = [(b"origin", origin.encode()), (b"host", host.encode()), (b"cookie", cookie)]
    headers += [(name.replace("_", "-").encode(), value.encode()) for name, value in extra.items()]
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    connected, _ = await communicator.connect()
    if connected:
        await communicator.disconnect()
    return connected


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:9999",  # another server on this machine
        "http://127.0.0.1:1",
        "http://127.0.0.1",  # port 80, not 8000
        "https://127.0.0.1:8000",  # other scheme
        "http://127.0.0.1:8000.evil.example",
        "http://evil.example:8000",
        "null",
    ],
)
async def test_a_page_on_another_port_scheme_or_host_cannot_open_the_websocket(bob_cookie: bytes, origin: str) -> None:
    assert not await connects(bob_cookie, origin)


async def test_the_page_served_by_the_same_host_and_port_can(bob_cookie: bytes) -> None:
    assert await connects(bob_cookie, "http://127.0.0.1:8000")
    assert await connects(bob_cookie, "http://LOCALHOST:8000", host="localhost:8000")
    assert await connects(bob_cookie, "http://localhost", host="localhost")  # default port on both sides


async def test_a_host_header_outside_allowed_hosts_does_not_vouch_for_its_origin(bob_cookie: bytes) -> None:
    # DNS rebinding: a name the attacker controls pointing at 127.0.0.1.
    assert not await connects(bob_cookie, "http://evil.example:8000", host="evil.example:8000")


async def test_csrf_trusted_origins_are_trusted_by_scheme_host_and_port(bob_cookie: bytes, settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://tollgate.example.com", "https://*.corp.example:8443"]
    assert await connects(bob_cookie, "https://tollgate.example.com")
    assert await connects(bob_cookie, "https://tollgate.example.com:443")
    assert not await connects(bob_cookie, "http://tollgate.example.com")
    assert not await connects(bob_cookie, "https://tollgate.example.com:8443")
    assert await connects(bob_cookie, "https://eu.corp.example:8443")
    assert not await connects(bob_cookie, "https://eu.corp.example")
    assert not await connects(bob_cookie, "https://corp.example.evil:8443")


async def test_behind_a_tls_proxy_the_own_origin_is_https(bob_cookie: bytes, settings: Any) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["tollgate.example.com"]
    host = "tollgate.example.com"
    assert await connects(bob_cookie, "https://tollgate.example.com", host=host, x_forwarded_proto="https")
    assert not await connects(bob_cookie, "http://tollgate.example.com", host=host, x_forwarded_proto="https")
    assert not await connects(bob_cookie, "https://tollgate.example.com", host=host)
