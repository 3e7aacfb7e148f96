"""A Temporal dev server of each test's own (exact counts need a namespace nobody else writes to)
and a worker running the app's workflows plus the sample ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DevServer, WorkerThread
from tests.monitoring.sample_workflows import SAMPLE_ACTIVITIES, SAMPLE_WORKFLOWS


class SampleWorker(WorkerThread):
    async def _main(self) -> None:
        from temporalio.client import Client
        from temporalio.worker import Worker

        from workflows.worker import ACTIVITIES, WORKFLOWS, DjangoConnectionInterceptor

        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        try:
            client = await Client.connect(self.address)
            with ThreadPoolExecutor(max_workers=8) as executor:
                worker = Worker(
                    client,
                    task_queue=self.task_queue,
                    workflows=[*WORKFLOWS, *SAMPLE_WORKFLOWS],
                    activities=[*ACTIVITIES, *SAMPLE_ACTIVITIES],
                    activity_executor=executor,
                    interceptors=[DjangoConnectionInterceptor()],
                )
                async with worker:
                    self.ready.set()
                    await self.stop_event.wait()
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            raise


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
