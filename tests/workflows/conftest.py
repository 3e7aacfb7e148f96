"""Time-skipping Temporal server and a real worker on a queue of the test's own."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.conftest import time_skipping_server_path
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


HISTORIES = Path(__file__).parent / "histories"


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With RECORD_HISTORIES=1, keep a workflow's history as a replay fixture
    (tests/workflows/test_replay.py replays every one on the current code)."""
    if os.environ.get("RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())
