"""Time-skipping Temporal server and a real worker on a queue of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from temporalio.testing import WorkflowEnvironment

from tests.support.temporal import time_skipping_server_path
from workflows.worker import build_worker


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=time_skipping_server_path())
    async with environment:
        yield environment
    # sync_to_async's thread keeps its connection; PostgreSQL would then refuse
    # to drop the test database at the end.
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def queue(env: WorkflowEnvironment) -> AsyncIterator[str]:
    name = f"approvals-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with build_worker(env.client, executor, task_queue=name):
            yield name
