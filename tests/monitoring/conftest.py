"""A Temporal dev server of each test's own (exact counts need a namespace nobody else writes to)
and a worker running the app's workflows plus the sample ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.temporal import DevServer, SampleWorker


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_settings(settings: Any, own_server: DevServer) -> Any:
    settings.TEMPORAL_ADDRESS = own_server.address
    settings.TEMPORAL_TASK_QUEUE = f"monitoring-{uuid.uuid4().hex[:8]}"
    settings.MONITORING_VISIBILITY_LAG_SECONDS = 0
    settings.MONITORING_LIVE_CACHE_SECONDS = 0
    return settings


@pytest.fixture
def sample_worker(own_settings: Any, own_server: DevServer) -> Iterator[SampleWorker]:
    thread = SampleWorker(own_server.address, own_settings.TEMPORAL_TASK_QUEUE)
    thread.start()
    yield thread
    thread.stop()
