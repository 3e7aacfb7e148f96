"""Builds the worker: the approval workflow and its activities on one task queue."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DataError, close_old_connections
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from approvals import digest
from approvals import digest_workflow as approval_digest_workflows
from config import tracing
from monitoring import snapshot
from monitoring import workflows as monitoring_workflows
from workflows import activities
from workflows.client import RPC_TIMEOUT
from workflows.parsing import MAX_DEPTH, MAX_SAFE_INTEGER
from workflows.reference import registry as reference
from workflows.types import SEARCH_ATTRIBUTES
from workflows.workflows import ApprovalWorkflow

log = logging.getLogger(__name__)
# Every feature folder exports its own WORKFLOWS and ACTIVITIES (as PostHog's do); the worker
# registers them all on one task queue.
WORKFLOWS: Sequence[type] = [
    ApprovalWorkflow,
    *approval_digest_workflows.WORKFLOWS,
    *monitoring_workflows.WORKFLOWS,
    *reference.WORKFLOWS,
]
ACTIVITIES: Sequence[Callable[..., Any]] = [
    *activities.ACTIVITIES,
    *digest.ACTIVITIES,
    *snapshot.ACTIVITIES,
    *reference.ACTIVITIES,
]
# The sandbox re-imports a workflow's modules for every workflow run it starts; the approval
# contract's types and the input checks (``workflows.types``, ``workflows.parsing``: stdlib-only
# frozen dataclasses and pure parsers, no state) are passed through instead, imported once:
# re-running them cost about 18% of the worker's CPU under load (bench/throughput_bench.py). The
# reference workflows keep their input types in their own modules (one module per workflow), so
# those are sandboxed with their workflow.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows.types", "workflows.parsing")
)


def _undecodable(problem: str) -> ApplicationError:
    return ApplicationError(f"invalid input: input: {problem}", "input", type="InvalidInput", non_retryable=True)


class _CheckedJSONDecoder(json.JSONDecoder):
    """Every way JSON text can fail to decode, as a non-retryable ``InvalidInput`` naming the input:
    text that is not JSON (the SDK would wrap it in a RuntimeError), a value nested too deeply for
    the decoder itself (about 1,000 levels: a RecursionError) and a whole number longer than
    Python converts (4,300 digits: a ValueError). Each of those otherwise fails the workflow task,
    which Temporal retries forever."""

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(s, *args, **kwargs)
        except RecursionError:
            raise _undecodable(f"is nested too deeply (at most {MAX_DEPTH} levels of arrays and objects)") from None
        except json.JSONDecodeError as exc:
            raise _undecodable(f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except ValueError:
            raise _undecodable(f"holds a number with too many digits (at most {MAX_SAFE_INTEGER})") from None


class _BoundedJSONPayloadConverter(JSONPlainPayloadConverter):
    """JSON decoding that fails the workflow, not its workflow task, when the payload cannot be
    decoded at all (``_CheckedJSONDecoder``, and bytes that are no Unicode text). A non-retryable
    ``ApplicationError`` raised while decoding fails the workflow at once (the SDK lets it through
    its payload conversion), and a signal that cannot be decoded is dropped. Decodable values are
    then refused, if need be, by the parsers (``workflows.parsing``)."""

    def __init__(self) -> None:
        super().__init__(decoder=_CheckedJSONDecoder)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        try:
            return super().from_payload(payload, type_hint)
        except UnicodeDecodeError:  # ``json.loads`` decodes the bytes before the decoder sees them
            raise _undecodable("is not valid JSON: its bytes are not UTF-8 text") from None


class PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            *(
                _BoundedJSONPayloadConverter() if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = dataclasses.replace(DataConverter.default, payload_converter_class=PayloadConverter)


class _CloseConnections(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, *, search_attributes: bool) -> None:
        super().__init__(next)
        self._search_attributes = search_attributes

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        # The interceptor itself runs on the event loop; only ``input.fn`` runs
        # in the pool thread that owns the Django connection. So wrap ``fn``:
        # Django's per-request clean-up never happens in a worker, and a
        # connection the database dropped must be replaced, not reused.
        if inspect.iscoroutinefunction(input.fn):
            return await self.next.execute_activity(input)
        fn = input.fn

        @functools.wraps(fn)
        def in_thread(*args: Any) -> Any:
            close_old_connections()
            activities.search_attributes_ready.set(self._search_attributes)
            try:
                return fn(*args)
            except DataError as exc:
                # A value the database refuses will be refused on every retry:
                # fail the activity for good instead of retrying forever.
                raise ApplicationError(f"database refused the data: {exc}", type="InvalidData", non_retryable=True)
            finally:
                close_old_connections()

        return await self.next.execute_activity(dataclasses.replace(input, fn=in_thread))


class DjangoConnectionInterceptor(Interceptor):
    """Around every sync activity: fresh database connections, a database refusal made final, and
    what the worker knows of its namespace (``search_attributes``) for ``register_task`` to report."""

    def __init__(self, *, search_attributes: bool = False) -> None:
        self._search_attributes = search_attributes

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CloseConnections(next, search_attributes=self._search_attributes)


def serve_sdk_metrics(address: str) -> None:
    """Serve the SDK's own metrics (Rust core: task slots, poll and schedule-to-start latencies,
    sticky cache hits and misses, activity failures...) in the Prometheus format at
    ``http://<address>/metrics``, for every client and worker this process creates afterwards.

    The metrics belong to the runtime, which a client takes when it connects, so this must run once,
    before the first connection; ``set_default`` refuses a second call. Only ``run_worker`` calls it:
    the web keeps the SDK's plain default runtime. A port already taken fails the start in one line
    naming the variable, as a malformed value does in the settings."""
    try:
        runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except ValueError as exc:  # "Failed starting Prometheus exporter: Address already in use (os error 98)"
        raise ImproperlyConfigured(f"TOLLGATE_WORKER_METRICS {address}: {exc}") from None
    Runtime.set_default(runtime)


def build_worker(
    client: Client,
    executor: ThreadPoolExecutor,
    *,
    task_queue: str | None = None,
    cache_workflows: bool = True,
    search_attributes: bool = False,
) -> Worker:
    """``cache_workflows=False`` turns off the workflow cache and with it sticky task queues, so a
    worker that stops leaves no workflow task bound to it (tests that stop a worker midway).
    ``search_attributes``: what ``ensure_search_attributes`` found; approvals upsert them only then,
    since an upsert of an attribute the namespace lacks fails every workflow task."""
    config = client.config()
    config["data_converter"] = DATA_CONVERTER  # the worker decodes with the bounded JSON converter
    # With tracing on, the worker traces through its client's interceptor; a client connected
    # without it (a test's, a script's) gets it here, so the worker never runs untraced.
    present = {type(interceptor) for interceptor in config["interceptors"]}
    config["interceptors"] = [
        *config["interceptors"],
        *(interceptor for interceptor in tracing.client_interceptors() if type(interceptor) not in present),
    ]
    return Worker(
        Client(**config),
        task_queue=task_queue or settings.TEMPORAL_TASK_QUEUE,
        workflows=list(WORKFLOWS),
        activities=list(ACTIVITIES),
        activity_executor=executor,
        max_concurrent_activities=executor._max_workers,  # one slot per pool thread
        interceptors=[DjangoConnectionInterceptor(search_attributes=search_attributes), *tracing.worker_interceptors()],
        graceful_shutdown_timeout=timedelta(seconds=10),
        max_cached_workflows=settings.TOLLGATE_WORKFLOW_CACHE_SIZE if cache_workflows else 0,
        workflow_runner=SANDBOX,
    )


def create_search_attributes_command(namespace: str) -> str:
    names = " ".join(f"--name {name} --type {kind}" for name, kind in SEARCH_ATTRIBUTES.items())
    return f"temporal operator search-attribute create --namespace {namespace} {names}"


async def ensure_search_attributes(client: Client, *, wait: float = 10.0) -> bool:
    """Check that the namespace has Tollgate's search attributes, creating the missing ones where
    this client may (a self-hosted server or the dev server); True when all are there. Where it
    may not (Temporal Cloud, a restricted role), log one line saying how to create them and return
    False: approvals then run without them until the worker starts again."""
    namespace = client.namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace), timeout=RPC_TIMEOUT
        )
    except RPCError as exc:
        log.warning("cannot read the search attributes of namespace %r (%s)", namespace, exc.message)
        listed = None
    have = dict(listed.custom_attributes) if listed else {}
    wrong = [
        f"{name} is {IndexedValueType.Name(have[name]).removeprefix('INDEXED_VALUE_TYPE_')}, not {kind}"
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name in have and have[name] != _indexed(kind)
    ]
    if wrong:
        log.error(
            "search attributes of the wrong type on namespace %r: %s; approvals run without them",
            namespace,
            "; ".join(wrong),
        )
        return False
    missing = {name: _indexed(kind) for name, kind in SEARCH_ATTRIBUTES.items() if name not in have}
    if not missing:
        return True
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing), timeout=RPC_TIMEOUT
        )
    except RPCError as exc:
        log.warning(
            "namespace %r lacks the search attributes %s and this worker may not create them (%s). Create them "
            "with `%s` (self-hosted), or on Temporal Cloud in the namespace's settings or with `tcld namespace "
            "search-attributes add`; approvals run without them until the worker restarts.",
            namespace, ", ".join(missing), exc.message, create_search_attributes_command(namespace),
        )  # fmt: skip
        return False
    # The server's search attribute cache refreshes on its own schedule: wait until they are listed.
    deadline = asyncio.get_running_loop().time() + wait
    while asyncio.get_running_loop().time() < deadline:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace), timeout=RPC_TIMEOUT
        )
        if all(name in listed.custom_attributes for name in missing):
            break
        await asyncio.sleep(0.2)
    log.info("created search attributes %s on namespace %r", ", ".join(missing), namespace)
    return True


def _indexed(kind: str) -> IndexedValueType.ValueType:
    # "KeywordList" -> INDEXED_VALUE_TYPE_KEYWORD_LIST
    words = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(kind)).upper()
    return IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{words}")


async def relay_outbox(stop: asyncio.Event, *, interval: float | None = None) -> None:
    """Deliver decisions and workflow starts that failed while Temporal was down."""
    from asgiref.sync import sync_to_async

    from approvals.services import deliver_outbox

    def tick() -> tuple[int, int]:
        close_old_connections()  # as around each activity: no connection the database dropped
        try:
            return deliver_outbox()
        finally:
            close_old_connections()

    every = interval or settings.TOLLGATE_OUTBOX_INTERVAL_SECONDS
    while not stop.is_set():
        try:
            delivered, started = await sync_to_async(tick, thread_sensitive=False)()
            if delivered or started:
                log.info("outbox: delivered %d decision(s), started %d workflow(s)", delivered, started)
        except Exception:  # keep relaying whatever one tick hit
            log.exception("outbox relay tick failed")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
