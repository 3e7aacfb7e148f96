"""Times are shown in the viewer's time zone, named by the browser in a cookie."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from monitoring.models import SnapshotState

pytestmark = pytest.mark.django_db


def snapshot_title(client: Client) -> str:
    html = client.get(reverse("monitoring:retries")).content.decode()
    return html.split('class="muted small snapshot-age">', 1)[1].split('title="', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("Asia/Tokyo", "2026-07-01 21:30:00 JST"),
        ("America/New_York", "2026-07-01 08:30:00 EDT"),
        (None, "2026-07-01 12:30:00 UTC"),  # no cookie: TIME_ZONE
        ("Mars/Olympus_Mons", "2026-07-01 12:30:00 UTC"),  # a zone that does not exist is ignored
        ("../../etc/passwd", "2026-07-01 12:30:00 UTC"),
        ("x" * 500, "2026-07-01 12:30:00 UTC"),
    ],
)
def test_times_follow_the_zone_the_browser_names(cast: dict[str, Any], cookie: str | None, expected: str) -> None:
    SnapshotState.objects.update_or_create(pk=1, defaults={"refreshed_at": datetime(2026, 7, 1, 12, 30, tzinfo=UTC)})
    client = Client()
    client.force_login(cast["oscar"])
    if cookie is not None:
        client.cookies["tollgate_tz"] = cookie
    assert snapshot_title(client) == expected
