"""The one place the web side talks to Temporal. Never imports activities.

Every call has a short RPC timeout and turns "the server is not there" into
``TemporalUnavailable``, so a view can answer honestly instead of hanging or
showing a traceback.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from asgiref.sync import async_to_sync
from django.conf import settings
from temporalio.client import Client, TLSConfig, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config import tracing

T = TypeVar("T")
RPC_TIMEOUT = timedelta(seconds=5)
CONNECT_TIMEOUT = 5.0
UNREACHABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}

# temporalio clients are safe to share, but their futures belong to the event
# loop that awaits them; under ASGI that is one loop, in tests one per call.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = weakref.WeakKeyDictionary()


class TemporalError(Exception):
    """Temporal answered with an error we cannot act on (permissions, limits...)."""


class TemporalUnavailable(TemporalError):
    """The Temporal server did not answer."""


class WorkflowClosed(Exception):
    """The workflow had already finished when we tried to reach it."""


def tls_config() -> TLSConfig | bool:
    if not settings.TEMPORAL_TLS and not settings.TEMPORAL_TLS_CLIENT_CERT:
        return False

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as handle:
            return handle.read()

    return TLSConfig(
        server_root_ca_cert=read(settings.TEMPORAL_TLS_SERVER_CA),
        domain=settings.TEMPORAL_TLS_SERVER_NAME or None,
        client_cert=read(settings.TEMPORAL_TLS_CLIENT_CERT),
        client_private_key=read(settings.TEMPORAL_TLS_CLIENT_KEY),
    )


async def connect() -> Client:
    """A new client from the settings (the worker keeps its own)."""
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.TEMPORAL_ADDRESS,
                namespace=settings.TEMPORAL_NAMESPACE,
                tls=tls_config(),
                api_key=settings.TEMPORAL_API_KEY or None,
                interceptors=tracing.client_interceptors(),  # none unless OTEL_* turns tracing on
            ),
            CONNECT_TIMEOUT,
        )
    except (TimeoutError, RuntimeError, OSError) as exc:
        raise TemporalUnavailable(f"cannot reach Temporal at {settings.TEMPORAL_ADDRESS}: {exc}") from None


async def get_client() -> Client:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = await connect()
        _clients[loop] = client
    return client


def forget_clients() -> None:
    """Drop cached clients, e.g. after the settings changed in a test."""
    _clients.clear()


async def call(make: Callable[[Client], Awaitable[T]]) -> T:
    """Run one client call, mapping "not reachable" and other RPC errors to ours.
    Shared with monitoring/visibility.py, the monitoring app's Temporal queries."""
    client = await get_client()
    try:
        return await make(client)
    except RPCError as exc:
        if exc.status in UNREACHABLE:
            raise TemporalUnavailable(str(exc)) from None
        raise TemporalError(f"{exc.status.name}: {exc.message}") from None


class WorkflowExists(TemporalError):
    """A workflow with that id exists (running or closed); ids are not reused."""


async def start_workflow(*, workflow_type: str, workflow_id: str, input: dict[str, Any]) -> str:
    """Start any workflow by its type name on the approvals task queue; returns the run id.

    The web side never imports workflow classes: a type written elsewhere (the
    deployment pipeline) starts the same way. An id is never reused, so a second
    order 42 is refused instead of meeting the first one's ledger rows."""

    async def start(client: Client) -> str:
        try:
            handle = await client.start_workflow(
                workflow_type,
                input,
                id=workflow_id,
                task_queue=settings.TEMPORAL_TASK_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            raise WorkflowExists(f"a workflow with id {workflow_id!r} already exists") from None
        return handle.result_run_id or ""

    return await call(start)


async def start_approval(*, workflow_id: str, request: dict[str, Any]) -> str:
    """Start ``ApprovalWorkflow``; starting one that already exists is a no-op (returns "")."""
    try:
        return await start_workflow(workflow_type="ApprovalWorkflow", workflow_id=workflow_id, input=request)
    except WorkflowExists:
        return ""


async def signal_decision(*, workflow_id: str, payload: dict[str, str]) -> None:
    async def signal(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id)
        try:
            await handle.signal("decide", payload, rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            # NOT_FOUND also means a wrong namespace: only a workflow that
            # exists and has closed makes the decision "too late".
            if await _closed(handle):
                raise WorkflowClosed(str(exc)) from None
            raise

    await call(signal)


SIGNAL_CONCURRENCY = 20  # in flight at once: a bulk decision is not a load test of the frontend


async def signal_decisions(*, signals: list[tuple[str, dict[str, str]]]) -> list[BaseException | None]:
    """``signal_decision`` for many (workflow id, payload) pairs at once, on one client; per pair, None
    when it was sent or the exception it raised, in order, so each is handled as a single one is."""
    if not signals:
        return []
    try:
        await get_client()
    except TemporalUnavailable as exc:
        return [exc] * len(signals)  # one connect attempt for all, not one 5 s timeout each
    gate = asyncio.Semaphore(SIGNAL_CONCURRENCY)

    async def one(workflow_id: str, payload: dict[str, str]) -> None:
        async with gate:
            await signal_decision(workflow_id=workflow_id, payload=payload)

    return list(await asyncio.gather(*(one(w, p) for w, p in signals), return_exceptions=True))


async def signal_workflow(*, workflow_id: str, name: str, payload: dict[str, Any]) -> None:
    async def signal(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).signal(name, payload, rpc_timeout=RPC_TIMEOUT)

    await call(signal)


async def _closed(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        description = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status is not None and description.status != WorkflowExecutionStatus.RUNNING


async def workflow_closed(*, workflow_id: str) -> bool:
    """Whether the workflow exists and is no longer running."""

    async def check(client: Client) -> bool:
        return await _closed(client.get_workflow_handle(workflow_id))

    return await call(check)


@dataclass(frozen=True)
class RunState:
    """What Temporal says of one run: its type, its status as a slug ("running", "terminated",
    "canceled", "timed_out", "failed", "completed", "continued_as_new") and when it closed."""

    workflow_type: str
    status: str
    close_time: datetime | None


async def describe_run(*, workflow_id: str, run_id: str = "") -> RunState | None:
    """One describe of a run (the latest when ``run_id`` is empty); None when there is no such workflow."""

    async def describe(client: Client) -> RunState | None:
        try:
            description = await client.get_workflow_handle(workflow_id, run_id=run_id or None).describe(
                rpc_timeout=RPC_TIMEOUT
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        status = description.status.name.lower() if description.status is not None else "unknown"
        return RunState(description.workflow_type, status, description.close_time)

    return await call(describe)


async def ping() -> None:
    """Raise ``TemporalUnavailable`` unless the server answers."""

    async def check(client: Client) -> None:
        await client.service_client.check_health(timeout=RPC_TIMEOUT)

    await call(check)


def temporal_ui_url(workflow_id: str, run_id: str = "") -> str:
    """The execution in the Temporal UI: TEMPORAL_UI_URL, or the dev server's UI that make run
    starts (frontend port + 1000); empty when neither applies."""
    base = settings.TEMPORAL_UI_URL
    host, port = settings.TEMPORAL_ADDRESS.rsplit(":", 1)
    if not base and host in ("127.0.0.1", "localhost"):
        base = f"http://{host}:{int(port) + 1000}"
    if not base:
        return ""
    path = f"namespaces/{quote(settings.TEMPORAL_NAMESPACE, safe='')}/workflows/{quote(workflow_id, safe='')}"
    if run_id:
        path += f"/{quote(run_id, safe='')}/history"
    return f"{base.rstrip('/')}/{path}"


def run(coro_fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
    """Run one of the calls above from sync code (views, services)."""
    return async_to_sync(coro_fn)(**kwargs)
