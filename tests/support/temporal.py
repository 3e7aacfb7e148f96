"""Temporal for the tests: servers from the pip-installed binaries, the real worker in a thread,
the ``temporal`` CLI, workflow helpers, and recording histories for the replay test."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from approvals.models import ApprovalTask
from config.ports import free_port
from tests.support.markers import require_marker
from tests.support.sample_workflows import SAMPLE_ACTIVITIES, SAMPLE_WORKFLOWS
from tests.support.waiting_workflows import WAITING_ACTIVITIES, WAITING_WORKFLOWS

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Worker

BIN = Path(sys.executable).parent
TEMPORAL_CLI = BIN / "temporal"
TEST_SERVER = BIN / "temporal-test-server"


def time_skipping_server_path() -> str:
    return str(TEST_SERVER)


# ---- waiting and running coroutines from sync tests ----------------------------------------


def eventually(check: Callable[[], Any], *, timeout: float = 15.0, every: float = 0.1) -> Any:
    """Poll until ``check()`` is truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def run_async(coro_fn: Callable[[], Any]) -> Any:
    """Run a coroutine to completion on a fresh loop in its own thread, so it
    works even where a loop already runs (Playwright's sync API)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coro_fn())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ---- the dev server and the worker ------------------------------------------------------------


class DevServer:
    """``temporal server start-dev`` in a subprocess, stoppable and restartable on one port and file."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.db_file = directory / f"temporal-{self.port}.db"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, keep_port: bool = False) -> None:
        """Start and wait until it answers. A first start that dies at once (another process took
        the free port) retries on a new port; a restart (``keep_port``) must keep its address."""
        require_marker("integration", "the Temporal dev server")
        for _ in range(1 if keep_port else 3):
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
            if keep_port:
                break
            self.port = free_port()
            self.address = f"127.0.0.1:{self.port}"
            self.db_file = self.db_file.with_name(f"temporal-{self.port}.db")
        raise RuntimeError("the Temporal dev server did not start")

    async def _ping(self) -> None:
        from temporalio.client import Client

        client = await Client.connect(self.address)
        await client.service_client.check_health()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WorkerThread:
    """The real worker (``build_worker``) on its own event loop in a thread; ``with`` starts and stops it."""

    def __init__(self, address: str, task_queue: str) -> None:
        self.address = address
        self.task_queue = task_queue
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> WorkerThread:
        self.ready.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(30) or self.error:
            raise RuntimeError(f"worker did not start: {self.error}")
        return self

    def __enter__(self) -> WorkerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from temporalio.client import Client

        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        try:
            client = await Client.connect(self.address)
            with ThreadPoolExecutor(max_workers=8) as executor:
                async with await self._worker(client, executor):
                    self.ready.set()
                    await self.stop_event.wait()
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.ready.set()
            raise

    async def _worker(self, client: Client, executor: ThreadPoolExecutor) -> Worker:
        from workflows.worker import build_worker, ensure_search_attributes

        # As run_worker does: the approvals it runs keep their search attributes current.
        search_attributes = await ensure_search_attributes(client)
        return build_worker(client, executor, task_queue=self.task_queue, search_attributes=search_attributes)

    def stop(self) -> None:
        if self.loop and self.stop_event and self.thread and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(30)


class SampleWorker(WorkerThread):
    """The app's workflows plus the monitoring samples (``tests/support/sample_workflows.py``) and the
    runs that wait on a signal, a timer or nothing (``tests/support/waiting_workflows.py``)."""

    async def _worker(self, client: Client, executor: ThreadPoolExecutor) -> Worker:
        from temporalio.worker import Worker

        from workflows.worker import ACTIVITIES, WORKFLOWS, DjangoConnectionInterceptor

        return Worker(
            client,
            task_queue=self.task_queue,
            workflows=[*WORKFLOWS, *SAMPLE_WORKFLOWS, *WAITING_WORKFLOWS],
            activities=[*ACTIVITIES, *SAMPLE_ACTIVITIES, *WAITING_ACTIVITIES],
            activity_executor=executor,
            interceptors=[DjangoConnectionInterceptor()],
        )


# ---- workflows on a server at an address (sync, for tests on the dev server) -------------------


def start_run(
    address: str, queue: str, workflow: str, *args: Any, timeout: timedelta | None = None, workflow_id: str = ""
) -> tuple[str, str]:
    """Start ``workflow`` with ``args``; its id (``<type>-<random>`` unless given) and its run's id."""
    from temporalio.client import Client

    workflow_id = workflow_id or f"{workflow.lower()}-{uuid.uuid4().hex[:8]}"

    async def go() -> str:
        client = await Client.connect(address)
        handle = await client.start_workflow(
            workflow, args=args, id=workflow_id, task_queue=queue, execution_timeout=timeout
        )
        return handle.result_run_id or ""

    return workflow_id, run_async(go)


def start(
    address: str, queue: str, workflow: str, *args: Any, timeout: timedelta | None = None, workflow_id: str = ""
) -> str:
    """Start ``workflow`` with ``args``; its id (``<type>-<random>`` unless given)."""
    return start_run(address, queue, workflow, *args, timeout=timeout, workflow_id=workflow_id)[0]


def describe(address: str, workflow_id: str) -> Any:
    from temporalio.client import Client

    async def go() -> Any:
        client = await Client.connect(address)
        return await client.get_workflow_handle(workflow_id).describe()

    return run_async(go)


def closed(address: str, workflow_id: str) -> Any:
    """The description once the workflow has closed; None while it runs."""
    description = describe(address, workflow_id)
    return description if description.status != WorkflowExecutionStatus.RUNNING else None


def workflow_result(address: str, workflow_id: str, timeout: float = 20.0) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        from temporalio.client import Client

        client = await Client.connect(address)
        return await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), timeout)

    return run_async(fetch)


def started_event(address: str, workflow_id: str) -> tuple[str, str, dict[str, Any]]:
    """(workflow type, task queue, input) as Temporal recorded the start."""
    from temporalio.client import Client

    async def fetch() -> tuple[str, str, dict[str, Any]]:
        client = await Client.connect(address)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        return started.workflow_type.name, started.task_queue.name, json.loads(started.input.payloads[0].data)

    return run_async(fetch)


def start_with_cli(address: str, task_queue: str, request: dict[str, Any]) -> str:
    """An ApprovalWorkflow started by the ``temporal`` CLI, as a system that is not Tollgate would."""
    require_marker("integration", "a workflow on the Temporal dev server")
    workflow_id = f"approval-{request['request_id']}"
    subprocess.run(
        [str(TEMPORAL_CLI), "workflow", "start", "--address", address, "--type", "ApprovalWorkflow",
         "--task-queue", task_queue, "--workflow-id", workflow_id, "--input", json.dumps(request)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return workflow_id


def registered_task(workflow_id: str) -> ApprovalTask:
    """The workflow's pending task, once its register activity has written it."""
    return eventually(lambda: ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").first())


# ---- ApprovalWorkflow on the time-skipping server (async) ------------------------------------


def decision(user: str, choice: str = "approve", comment: str = "", decision_id: str | None = None) -> dict[str, str]:
    """A ``decide`` signal's argument."""
    return {"decision": choice, "user": user, "comment": comment, "decision_id": decision_id or uuid.uuid4().hex}


async def registered(handle: WorkflowHandle[Any, Any]) -> ApprovalTask:
    """Wait until the read model has the task (the register activity ran)."""
    for _ in range(200):
        status = await handle.query("status")
        if status["level"] >= 1:
            task = await sync_to_async(ApprovalTask.objects.filter(workflow_id=handle.id, status="pending").first)()
            if task:
                return task
        await asyncio.sleep(0.05)
    raise AssertionError("task never registered")


async def pending_child(client: Client, workflow_id: str, *, timeout: float = 30) -> WorkflowHandle[Any, Any]:
    """A child ApprovalWorkflow's handle, once its task is pending in the read model."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await sync_to_async(ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").exists)():
            return client.get_workflow_handle(workflow_id)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id} never registered its task")


@sync_to_async
def task_row(workflow_id: str) -> ApprovalTask:
    return ApprovalTask.objects.get(workflow_id=workflow_id)


# ---- recorded histories (tests/workflows/test_replay.py replays every one) --------------------

HISTORIES = Path(__file__).resolve().parent.parent / "workflows" / "histories"


def recording_histories() -> bool:
    """``RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/...`` (re)writes the replay fixtures."""
    return os.environ.get("RECORD_HISTORIES") == "1"


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With RECORD_HISTORIES=1, keep a workflow's history as ``histories/<name>.json``."""
    if not recording_histories():
        return
    HISTORIES.mkdir(exist_ok=True)
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())


class StartedWorkflows:
    """The workflows one test started, to record as ``<prefix><test-name>-<n>.json`` when it ends
    (a module's ``start()`` helper adds to it; its autouse fixture calls ``record``)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.handles: list[WorkflowHandle[Any, Any]] = []

    def add(self, handle: WorkflowHandle[Any, Any]) -> WorkflowHandle[Any, Any]:
        self.handles.append(handle)
        return handle

    async def record(self, test_name: str) -> None:
        handles, self.handles = self.handles, []
        name = re.sub(r"[^a-z0-9]+", "-", test_name.removeprefix("test_").lower()).strip("-")
        for number, handle in enumerate(handles, start=1):
            await record_history(handle, f"{self.prefix}{name}-{number}")
