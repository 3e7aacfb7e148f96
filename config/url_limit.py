"""A URL longer than ``TOLLGATE_MAX_URL_BYTES`` gets a short 414 page instead of reaching Django.

Daphne's HTTP parser (Twisted's ``HTTPChannel``) reads at most 16,384 bytes of request line and
headers together (``totalHeadersSize``); past that it writes a bare 400 and closes the connection
before the rest of the request is read, so clients usually see the connection dropped. Below that
it passes any URL on, however long. This middleware makes the limit ours and explicit, at a size
every proxy and browser in between handles (8,000 bytes: nginx's and Apache's request lines stop
near 8 KB), and answers what lies between the two with "414 URI Too Long".
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

PAGE = (
    b"414 URI Too Long\n\n"
    b"This address is longer than Tollgate accepts. Shorten it (a shorter search, fewer filters) and try again.\n"
)


class UrlLengthLimitMiddleware:
    """For HTTP scopes: path plus query string, in bytes as they came on the wire."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.limit: int = settings.TOLLGATE_MAX_URL_BYTES

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and url_length(scope) > self.limit:
            await send(
                {
                    "type": "http.response.start",
                    "status": 414,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(PAGE)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": PAGE})
            return
        await self.app(scope, receive, send)


def url_length(scope: dict[str, Any]) -> int:
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope.get("query_string") or b""
    return len(raw_path) + (1 + len(query) if query else 0)
