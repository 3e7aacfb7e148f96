"""Helpers shared by the bench scripts: machine facts and the JSON result file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlparse, urlunparse

from config.ports import free_port

if TYPE_CHECKING:
    from temporalio.client import Client

BIN = Path(sys.executable).parent


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory and the versions that matter."""
    from importlib.metadata import version

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = int(
            next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1]
        )
    except (OSError, StopIteration, ValueError):
        kib = 0
    try:
        temporal = subprocess.run([str(BIN / "temporal"), "--version"], capture_output=True, text=True, timeout=10)
        cli = temporal.stdout.strip()
    except OSError:
        cli = "not found"
    return {
        "cpu": cpu or platform.processor(), "cores": os.cpu_count(), "ram_gib": round(kib / 2**20, 1),
        "python": platform.python_version(), "django": version("django"), "temporalio": version("temporalio"),
        "temporal_cli": cli, "os": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A Temporal dev server of the bench's own, with its UI: (process, frontend address, UI URL).

    Its SQLite file is in WAL mode without fsync: as fast to fill as the in-memory one (about 200
    starts/s here), which held 3 GB at 60,000 executions and once died there. Its log is kept in
    ``directory/temporal.log`` to show why it died, if it does.
    """
    port, ui_port = free_port(), free_port()
    log = (directory / "temporal.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--ui-port", str(ui_port), "--log-level", "warn", "--db-filename", str(directory / "temporal.db"),
         "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=off"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    ui = f"http://127.0.0.1:{ui_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{ui}/api/v1/namespaces/default/workflow-count", timeout=2).read()  # noqa: S310
            return proc, f"127.0.0.1:{port}", ui
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the Temporal dev server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_database(workdir: Path, name: str = "bench") -> tuple[str, Callable[[], None]]:
    """A throwaway database URL for this run, and how to drop it afterwards: a SQLite file in
    ``workdir``, or, when DATABASE_URL names a PostgreSQL server, a database created for the run."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{workdir / f'{name}.sqlite3'}", lambda: None
    import psycopg

    database = f"tollgate_{name}_{os.getpid()}"
    parts = urlparse(url)
    admin = urlunparse(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    return urlunparse(parts._replace(path=f"/{database}")), drop


# ---- approvals waiting on the real worker (escalation_bench, memory_bench) ---------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def approval_bench_env(workdir: Path, *, address: str, database_url: str) -> dict[str, str]:
    """Settings shared by a bench process and the worker it starts: put them in ``os.environ`` before
    ``django.setup()``, and the worker subprocess inherits them.

    Production-like (no debug: Django would keep every SQL query), except mail: it is rendered and
    handed to a backend as in production, then dropped (the dummy backend), because the locmem backend
    would keep every message in the worker's memory and the console one would print thousands.
    """
    return {
        "TOLLGATE_VAR_DIR": str(workdir), "DATABASE_URL": database_url, "TEMPORAL_ADDRESS": address,
        "DJANGO_SETTINGS_MODULE": "config.settings", "TOLLGATE_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "approval-bench-" + "x" * 40),
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
    }  # fmt: skip


def setup_django() -> str:
    """``django.setup()`` on the settings already in ``os.environ``, the schema migrated and the demo
    cast seeded; the database engine's short name, for the report."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from approvals.demo import seed_users_and_policies

    call_command("migrate", verbosity=0)
    seed_users_and_policies()
    return str(settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1])


@contextlib.contextmanager
def approval_bench(name: str, *, web: bool = False) -> Iterator[tuple[Path, subprocess.Popen[bytes], str, str]]:
    """What a bench of approvals on the real worker stands on: a temporary directory, a dev server,
    a throwaway database and Django set up on them; yields (workdir, server, address, engine) and
    removes all of it afterwards. ``web``: Django's test clients will call the pages too. If the
    bench fails, the end of its worker's log is printed, to show why."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tollgate-{name}-bench-"))
    server, address, _ui = start_server(workdir)
    drop: Callable[[], None] = lambda: None  # noqa: E731
    try:
        url, drop = bench_database(workdir, f"{name}-bench")
        os.environ.update(approval_bench_env(workdir, address=address, database_url=url))
        if web:  # Django's test client calls itself "testserver" and speaks plain http
            os.environ.update({"DJANGO_ALLOWED_HOSTS": "testserver", "DJANGO_SECURE_COOKIES": "false"})
            (workdir / "static").mkdir()  # STATIC_ROOT, which make run creates: whitenoise warns without it
        yield workdir, server, address, setup_django()
    except BaseException:
        log = workdir / "worker.log"
        if log.exists():
            print(f"--- worker.log (last lines)\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        drop()
        stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)


async def pause_snapshot_schedule(client: Client) -> None:
    """Create the monitoring snapshot schedule, paused, before any worker starts (the worker then finds it
    and leaves it alone). Its refresh reads visibility every 30 s, a load of its own that monitoring_bench
    measures; left running it would land at random in these figures."""
    from monitoring.snapshot import SNAPSHOT_SCHEDULE_ID, ensure_snapshot_schedule

    await ensure_snapshot_schedule(client)
    await client.get_schedule_handle(SNAPSHOT_SCHEDULE_ID).pause(note="paused by a bench")


def start_worker(workdir: Path, **settings: str) -> subprocess.Popen[bytes]:
    """``manage.py run_worker`` in a process of its own, as production runs it, with extra settings
    (``TOLLGATE_WORKFLOW_CACHE_SIZE="100"``); then await ``worker_polling``. Its output goes to
    ``workdir/worker.log``, to show why it died if it does."""
    log = (workdir / "worker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_worker"], cwd=ROOT, env={**os.environ, **settings},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


async def worker_polling(client: Client, proc: subprocess.Popen[bytes], workdir: Path) -> None:
    """Return once the worker process polls the task queue (it takes a few seconds to import Django)."""
    from django.conf import settings
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=settings.TEMPORAL_TASK_QUEUE),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        # A worker's identity is "<pid>@<host>": an earlier worker's pollers stay listed for a while.
        pollers = (await client.workflow_service.describe_task_queue(request)).pollers
        if any(poller.identity.startswith(f"{proc.pid}@") for poller in pollers):
            return
        await asyncio.sleep(0.3)
    stop_worker(proc)
    raise SystemExit(f"the worker did not start polling; see {workdir / 'worker.log'}")


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a deployment stops it: it finishes in-flight activities (up to 10 s) and exits."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.asynccontextmanager
async def running_worker(client: Client, workdir: Path, **settings: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``start_worker`` until it polls (``worker_polling``), for the block; ``stop_worker`` after it."""
    worker = start_worker(workdir, **settings)
    try:
        await worker_polling(client, worker, workdir)
        yield worker
    finally:
        await asyncio.to_thread(stop_worker, worker)


async def start_approvals(
    client: Client,
    count: int,
    *,
    prefix: str,
    policy: str | Callable[[int, float], str] = "standard",
    rate: float | None = None,
    concurrency: int = 32,
    first: int = 0,
) -> list[float]:
    """Start ``count`` ApprovalWorkflows through the public contract (workflow ids ``approval-<prefix>-<n>``
    for n from ``first``, requested by alice), as fast as the server takes them, or paced at ``rate`` a second.

    ``policy`` is a slug, or picks one for request ``n`` from the wall-clock time (``time.time()``) its
    start is sent at. Returns those send times, in request order.
    """
    from django.conf import settings

    gate = asyncio.Semaphore(concurrency)
    began = time.time()
    sent = [0.0] * count

    async def start(n: int) -> None:
        if rate:
            await asyncio.sleep(max(0.0, began + (n - first) / rate - time.time()))
        async with gate:
            sent[n - first] = time.time()
            slug = policy if isinstance(policy, str) else policy(n, sent[n - first])
            request = {"request_id": f"{prefix}-{n}", "title": f"Bench approval {n}", "requested_by": "alice",
                       "payload": {"n": n}, "policy": slug}  # fmt: skip
            await client.start_workflow(
                "ApprovalWorkflow", request, id=f"approval-{prefix}-{n}", task_queue=settings.TEMPORAL_TASK_QUEUE
            )

    await asyncio.gather(*(start(n) for n in range(first, first + count)))
    return sent


def count_waiting(prefix: str) -> int:
    """Approvals of this run that wait: registered, and their first mail sent (``assigned``), which is
    the last activity before the workflow sleeps on its level's timer."""
    from approvals.models import Notification

    return Notification.objects.filter(
        kind="assigned", sent_at__isnull=False, task__workflow_id__startswith=f"approval-{prefix}-"
    ).count()


async def wait_until(
    done: Callable[[], int], count: int, *, what: str, give_up: float, every: float = 1.0, quiet: bool = False
) -> float:
    """Poll ``done()`` (a database count, run in a thread) until it reaches ``count``; returns the
    ``time.time()`` it was seen there, or stops the bench after ``give_up`` seconds. Prints progress
    every ten seconds unless ``quiet``."""
    began = last = time.monotonic()
    while (have := await asyncio.to_thread(done)) < count:
        now = time.monotonic()
        if now - began > give_up:
            raise SystemExit(f"only {have} of {count} {what} after {give_up:.0f} s")
        if not quiet and now - last >= 10:
            print(f"  {have} of {count} {what} ({now - began:.0f} s)", flush=True)
            last = now
        await asyncio.sleep(every)
    return time.time()


class PageResponse(Protocol):
    """What the benches read from a Django test client's response (sync or async)."""

    status_code: int
    content: bytes

    @property
    def headers(self) -> Mapping[str, str]: ...


Response = TypeVar("Response", bound=PageResponse)


async def as_under_daphne(request: Awaitable[Response]) -> Response:
    """Await one request of Django's async test client as Django's ``ASGIHandler`` runs it under daphne:
    its sync code (middleware, view) in a thread of the request's own, from a thread-sensitive context
    that the test client's handler does not open, and at its end the ``request_finished`` clean-up of
    that thread's database connection, which the test client skips (it keeps connections for test
    transactions). Without the first, concurrent requests would queue on one thread; without the
    second, the web side would hold its database connections as no deployment does."""
    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from django.db import close_old_connections

    async with ThreadSensitiveContext():
        response = await request
        await sync_to_async(close_old_connections)()  # thread-sensitive: in the request's thread
    return response


async def start_windowed(client: Client, count: int, *, prefix: str, window: int, give_up: float) -> float:
    """Start ``count`` approvals on the standard policy (a day to wait), as fast as the worker takes them
    but with at most ``window`` between their start and waiting; returns the ``time.time()`` all wait.

    A worker whose cache holds fewer workflows than are in flight evicts one between its workflow tasks
    and replays it from its history at the next (a new sandbox each time): three times slower with
    cache 100 and 250 in flight. A window of half the cache keeps every start's tasks cached.
    """
    started = 0
    began = last = time.monotonic()
    while (waiting := await asyncio.to_thread(count_waiting, prefix)) < count:
        now = time.monotonic()
        if now - began > give_up:
            raise SystemExit(f"only {waiting} of {count} approvals waiting after {give_up:.0f} s")
        if now - last >= 10:
            print(f"  {waiting} of {count} waiting ({now - began:.0f} s)", flush=True)
            last = now
        if started < count and started - waiting < window:
            batch = min(window - (started - waiting), count - started)
            await start_approvals(client, batch, prefix=prefix, first=started)
            started += batch
        await asyncio.sleep(0.5)
    return time.time()
