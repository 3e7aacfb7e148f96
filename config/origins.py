"""Websocket origin check by scheme, host and port, the way Django's CSRF check judges a form's origin.

Channels' ``AllowedHostsOriginValidator`` compares host names only, so a page served by anything
else on the same machine (``http://localhost:9999``, any port) could open ``/ws/live/`` with the
user's session cookie. Here an origin is allowed only when it is one Django itself trusts: an entry
of ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` covers the subdomains, as for CSRF), or the
origin the connection itself was made to: the ``Host`` header (which must be in ``ALLOWED_HOSTS``)
with the connection's scheme and the same port.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

Origin = tuple[str, str, int]
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(value: str) -> Origin | None:
    """``(scheme, host, port)`` of an http(s) origin, the port filled in; None for anything else ("null")."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:  # a port out of range or not a number
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _is_secure(scope: dict[str, Any]) -> bool:
    """wss, or https at a TLS-terminating proxy that says so in the header Django trusts for it."""
    if scope.get("scheme") == "wss":
        return True
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        value = _header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        return value is not None and value.split(",", 1)[0].strip() == secure_value
    return False


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin of the page that was served from the host this connection was made to."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return parse_origin(f"{'https' if _is_secure(scope) else 'http'}://{host}")


def origin_allowed(scope: dict[str, Any]) -> bool:
    raw = _header(scope, b"origin")
    origin = parse_origin(raw) if raw else None
    if origin is None:
        return False  # browsers always send one; a client that does not is no page of ours
    if origin == own_origin(scope):
        return True
    scheme, host, port = origin
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        wildcard = "://*." in trusted
        pattern = parse_origin(trusted.replace("://*.", "://", 1) if wildcard else trusted)
        if pattern is None or (pattern[0], pattern[2]) != (scheme, port):
            continue
        if host == pattern[1] or (wildcard and is_same_domain(host, "." + pattern[1])):
            return True
    return False


class OriginValidatorMiddleware:
    """Refuses a websocket whose Origin is not allowed (see the module docstring); HTTP passes through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            await receive()  # websocket.connect
            # A close before the accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 4403})
            return
        await self.app(scope, receive, send)
