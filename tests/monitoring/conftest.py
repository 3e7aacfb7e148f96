"""A Temporal dev server of each test's own (exact counts need a namespace nobody else writes to)
and a worker running the app's workflows plus the sample ones."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEMPORAL_CLI, DevServer, WorkerThread, free_port, run_async
from tests.monitoring.sample_workflows import SAMPLE_ACTIVITIES, SAMPLE_WORKFLOWS


class SampleWorker(WorkerThread):
    async def _main(self) -> None:
        from temporalio.client import Client
        from temporalio.worker import Worker

        from workflows import activities
        from workflows.worker import WORKFLOWS, DjangoConnectionInterceptor

        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        try:
            client = await Client.connect(self.address)
            with ThreadPoolExecutor(max_workers=8) as executor:
                worker = Worker(
                    client,
                    task_queue=self.task_queue,
                    workflows=[*WORKFLOWS, *SAMPLE_WORKFLOWS],
                    activities=[*activities.ALL, *SAMPLE_ACTIVITIES],
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


class OwnDevServer(DevServer):
    """A dev server that gives up on a port at once when the process dies (another process on this
    machine took the free port first) and tries another, instead of waiting a minute."""

    def start(self) -> None:
        for _ in range(3):
            self.proc = subprocess.Popen(
                [str(TEMPORAL_CLI), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.port),
                 "--db-filename", str(self.db_file), "--log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    run_async(self._ping)
                    return
                except Exception:
                    time.sleep(0.2)
            self.stop()
            self.port = free_port()
            self.address = f"127.0.0.1:{self.port}"
            self.db_file = self.db_file.with_name(f"temporal-{self.port}.db")
        raise RuntimeError("the Temporal dev server did not start")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[DevServer]:
    server = OwnDevServer(tmp_path)
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
