"""The monitoring half of ``client.py``: visibility, describes, histories, actions.

Like ``client.py`` (whose connection cache and error mapping it reuses), it is
the only place monitoring talks to Temporal, and it hands back plain
dataclasses and dicts, never protobufs, so templates and JSON stay simple.
Every function makes a fixed number of RPCs, whatever the data.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from temporalio.api.batch.v1 import (
    BatchOperationCancellation,
    BatchOperationReset,
    BatchOperationSignal,
    BatchOperationTermination,
)
from temporalio.api.common.v1 import Payloads, ResetOptions, WorkflowExecution
from temporalio.api.enums.v1 import EventType, IndexedValueType, TaskQueueType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import (
    DescribeBatchOperationRequest,
    DescribeTaskQueueRequest,
    GetWorkflowExecutionHistoryRequest,
    GetWorkflowExecutionHistoryReverseRequest,
    ListBatchOperationsRequest,
    ListWorkflowExecutionsRequest,
    ResetWorkflowExecutionRequest,
    StartBatchOperationRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.client import WorkflowExecution as ListedExecution
from temporalio.service import RPCError, RPCStatusCode

from workflows.client import RPC_TIMEOUT, TemporalError, call

HISTORY_PAGE = 1000
HISTORY_CAP = 3000  # events the execution page reads (3 pages at most); it says so when cut
FOLD_VALUE_AT = 4000  # characters of one attribute value shown; the rest is cut, saying how much
DESCRIBE_CONCURRENCY = 10


class BadQuery(TemporalError):
    """The server refused a visibility query; the message is the server's."""


class NotFound(TemporalError):
    """No such workflow run."""


class NotResettable(TemporalError):
    """The run has no point it could safely be reset to."""


@dataclass(frozen=True)
class ExecutionInfo:
    workflow_id: str
    run_id: str
    workflow_type: str
    status: str  # running, completed, failed, canceled, terminated, continued_as_new, timed_out
    task_queue: str
    start_time: datetime
    close_time: datetime | None
    # None when not known: visibility records a run's history length only when it closes, so a
    # running run listed there says 0 (a describe gives the real length).
    history_length: int | None
    parent_id: str = ""

    @property
    def duration(self) -> float | None:
        if self.close_time is None:
            return None
        return max((self.close_time - self.start_time).total_seconds(), 0.0)


@dataclass(frozen=True)
class Described:
    info: ExecutionInfo
    pending_activities: list[dict[str, Any]]
    pending_children: list[dict[str, str]] = field(default_factory=list)
    workflow_task_attempt: int = 0
    # What an idle or failing run waits on, read from the end of its history (``_read_waiting``);
    # None when not read this refresh (its history has not grown since the last read).
    waiting: dict[str, Any] | None = None


@dataclass
class Changes:
    """What one snapshot refresh read from Temporal."""

    closed: list[ExecutionInfo] = field(default_factory=list)
    running: list[ExecutionInfo] = field(default_factory=list)
    described: list[Described] = field(default_factory=list)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    truncated: bool = False


def status_slug(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


def visibility_time(moment: datetime) -> str:
    """A timestamp as visibility queries want it (RFC 3339, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(message: Message, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    return getattr(message, name).ToDatetime(tzinfo=UTC)


def _info(listed: ListedExecution) -> ExecutionInfo:
    return ExecutionInfo(
        workflow_id=listed.id,
        run_id=listed.run_id,
        workflow_type=listed.workflow_type,
        status=status_slug(listed.status),
        task_queue=listed.task_queue,
        start_time=listed.start_time,
        close_time=listed.close_time,
        history_length=listed.history_length or (None if listed.status == WorkflowExecutionStatus.RUNNING else 0),
        parent_id=listed.parent_id or "",
    )


def _raise_for(exc: RPCError) -> None:
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        raise BadQuery(exc.message) from None
    if exc.status == RPCStatusCode.NOT_FOUND:
        raise NotFound(exc.message) from None


# ---- the web's reads -------------------------------------------------------------------


async def count_by_status(*, where: str = "") -> dict[str, int]:
    """Exact counts per status for the namespace (or the runs ``where`` matches): one COUNT ... GROUP BY."""

    async def count(client: Client) -> dict[str, int]:
        result = await client.count_workflows(f"{where} GROUP BY ExecutionStatus".strip(), rpc_timeout=RPC_TIMEOUT)
        counts: dict[str, int] = {}
        for group in result.groups:
            name = str(group.group_values[0]) if group.group_values else "unknown"
            counts[_status_from_visibility(name)] = group.count
        return counts

    return await call(count)


def _status_from_visibility(name: str) -> str:
    # Visibility spells them "Running", "Completed", "ContinuedAsNew", "TimedOut".
    return {"ContinuedAsNew": "continued_as_new", "TimedOut": "timed_out", "Canceled": "canceled"}.get(
        name, name.lower()
    )


async def count(*, query: str) -> int:
    async def run(client: Client) -> int:
        try:
            return (await client.count_workflows(query, rpc_timeout=RPC_TIMEOUT)).count
        except RPCError as exc:
            _raise_for(exc)
            raise

    return await call(run)


async def list_page(*, query: str, page_size: int, token: bytes | None) -> tuple[list[ExecutionInfo], bytes | None]:
    """One page of the executions list (one RPC). Read straight from the protobuf: the SDK's
    conversion also decodes memos and search attributes, which took longer than the call itself."""

    async def page(client: Client) -> tuple[list[ExecutionInfo], bytes | None]:
        try:
            response = await client.workflow_service.list_workflow_executions(
                ListWorkflowExecutionsRequest(
                    namespace=client.namespace, page_size=page_size, next_page_token=token or b"", query=query
                ),
                timeout=RPC_TIMEOUT,
            )
        except RPCError as exc:
            _raise_for(exc)
            raise
        return [_raw_info(e) for e in response.executions], response.next_page_token or None

    return await call(page)


def _raw_info(raw: WorkflowExecutionInfo) -> ExecutionInfo:
    start = _time(raw, "start_time")
    return ExecutionInfo(
        workflow_id=raw.execution.workflow_id,
        run_id=raw.execution.run_id,
        workflow_type=raw.type.name,
        status=status_slug(WorkflowExecutionStatus(raw.status)) if raw.status else "unknown",
        task_queue=raw.task_queue,
        start_time=start or datetime.min.replace(tzinfo=UTC),
        close_time=_time(raw, "close_time"),
        history_length=raw.history_length or (None if raw.status == WorkflowExecutionStatus.RUNNING.value else 0),
        parent_id=raw.parent_execution.workflow_id if raw.HasField("parent_execution") else "",
    )


async def list_page_and_count(
    *, query: str, page_size: int, token: bytes | None
) -> tuple[list[ExecutionInfo], bytes | None, int]:
    """A page and the exact total, the two RPCs side by side."""
    page, total = await asyncio.gather(list_page(query=query, page_size=page_size, token=token), count(query=query))
    return page[0], page[1], total


async def describe_execution(*, workflow_id: str, run_id: str) -> dict[str, Any]:
    """Describe plus the history (pages of 1,000 events, up to ``HISTORY_CAP``): status, input, result
    and its outcome in words, failure, events with their decoded attributes, activities, timers and
    children grouped, pending activities and children, the workflow task's last failure."""

    async def describe(client: Client) -> dict[str, Any]:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
        try:
            description = await handle.describe(rpc_timeout=RPC_TIMEOUT)
            events: list[HistoryEvent] = []
            token = b""
            while True:
                page = await client.workflow_service.get_workflow_execution_history(
                    GetWorkflowExecutionHistoryRequest(
                        namespace=client.namespace,
                        execution=WorkflowExecution(workflow_id=workflow_id, run_id=description.run_id),
                        maximum_page_size=HISTORY_PAGE,
                        next_page_token=token,
                    ),
                    timeout=RPC_TIMEOUT,
                )
                events.extend(page.history.events)
                token = page.next_page_token
                if not token or len(events) >= HISTORY_CAP:
                    break
        except RPCError as exc:
            _raise_for(exc)
            raise
        raw = description.raw_description
        truncated = bool(token) or len(events) > HISTORY_CAP
        events = events[:HISTORY_CAP]
        converter = client.data_converter.payload_converter
        result_value = _decoded_value(converter, _result_payloads(events))
        info = _info(description)
        attempt = raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0
        return {
            "info": info,
            "pending_activities": [_pending_activity(p) for p in raw.pending_activities],
            "pending_children": [_pending_child(c) for c in raw.pending_children],
            "workflow_task": {"attempt": attempt, "failure": _last_task_failure(events) if attempt > 1 else ""},
            "children": _children(events, raw.pending_children),
            "events": [_event(e, converter) for e in events],
            "groups": event_groups(events),
            "events_truncated": truncated,
            "input": await _decode(client, _input_payloads(events)),
            "result": await _decode(client, _result_payloads(events)),
            "outcome": outcome_in_words(info.status, result_value),
            "failure": _close_failure(events[-1]) if events and not truncated else "",
            "memo_fields": sorted(raw.workflow_execution_info.memo.fields.keys()),
        }

    return await call(describe)


def outcome_in_words(status: str, result: Any) -> str:
    """ "Completed: rejected" where the workflow returns its outcome (an ``outcome`` or ``status``
    field, as ApprovalWorkflow and the reference workflows do), so the page says how it ended."""
    if status != "completed" or not isinstance(result, dict):
        return ""
    for key in ("outcome", "status"):
        value = result.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:100]
    return ""


def _last_task_failure(events: list[HistoryEvent]) -> str:
    for event in reversed(events):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return ""
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            return _typed_failure_text(event.workflow_task_failed_event_attributes.failure)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            return "the workflow task timed out"
    return ""


async def reported_problems(*, limit: int) -> list[ExecutionInfo]:
    """Running runs the server flags with ``TemporalReportedProblems`` (repeated workflow-task failures)."""
    rows, _ = await list_page(
        query='TemporalReportedProblems IS NOT NULL AND ExecutionStatus = "Running"', page_size=limit, token=None
    )
    return rows


async def task_queue_stats(*, names: Iterable[str]) -> list[dict[str, Any]]:
    """Backlog and pollers per task queue (DescribeTaskQueue with report_stats): one RPC per queue."""

    async def describe(client: Client) -> list[dict[str, Any]]:
        rows = []
        for name in names:
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=name),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                    report_stats=True,
                ),
                timeout=RPC_TIMEOUT,
            )
            stats = response.stats
            rows.append(
                {
                    "task_queue": name,
                    "backlog": stats.approximate_backlog_count,
                    "backlog_age_seconds": stats.approximate_backlog_age.ToTimedelta().total_seconds(),
                    "pollers": len(response.pollers),
                }
            )
        return rows

    return await call(describe)


# ---- actions ---------------------------------------------------------------------------


async def cancel_workflow(*, workflow_id: str, run_id: str) -> None:
    async def cancel(client: Client) -> None:
        try:
            await client.get_workflow_handle(workflow_id, run_id=run_id or None).cancel(rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            _raise_for(exc)
            raise

    await call(cancel)


async def terminate_workflow(*, workflow_id: str, run_id: str, reason: str) -> None:
    async def terminate(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
        try:
            await handle.terminate(reason=reason, rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            _raise_for(exc)
            raise

    await call(terminate)


async def signal_workflow(*, workflow_id: str, run_id: str, name: str, arg: Any) -> None:
    async def signal(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
        try:
            if arg is None:
                await handle.signal(name, rpc_timeout=RPC_TIMEOUT)
            else:
                await handle.signal(name, arg, rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            _raise_for(exc)
            raise

    await call(signal)


async def reset_workflow(*, workflow_id: str, run_id: str, reason: str) -> str:
    """Reset to the run's first completed workflow task, the one reset point that is always safe to
    choose blindly: nothing the workflow decided after its first step survives, signals are re-applied.
    Returns the new run's id."""

    async def reset(client: Client) -> str:
        execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
        try:
            history = await client.workflow_service.get_workflow_execution_history(
                GetWorkflowExecutionHistoryRequest(
                    namespace=client.namespace, execution=execution, maximum_page_size=50
                ),
                timeout=RPC_TIMEOUT,
            )
            point = next(
                (e.event_id for e in history.history.events
                 if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
                None,
            )  # fmt: skip
            if point is None:
                raise NotResettable("the run has no completed workflow task to reset to")
            response = await client.workflow_service.reset_workflow_execution(
                ResetWorkflowExecutionRequest(
                    namespace=client.namespace, workflow_execution=execution, reason=reason,
                    workflow_task_finish_event_id=point, request_id=str(uuid.uuid4()),
                ),
                timeout=RPC_TIMEOUT,
            )  # fmt: skip
        except RPCError as exc:
            _raise_for(exc)
            raise
        return response.run_id

    return await call(reset)


# ---- the snapshot refresh ---------------------------------------------------------------


async def read_changes(
    *,
    closed_query: str,
    max_closed: int,
    running_limit: int,
    describe_limit: int,
    described_at: dict[tuple[str, str], datetime],
    waiting_read_at: dict[tuple[str, str], int] | None = None,
) -> Changes:
    """Everything one refresh needs, in a bounded number of RPCs.

    Closed runs since the watermark (all pages up to ``max_closed``), running
    runs (up to ``running_limit``), describes of the ``describe_limit`` running
    runs least recently described, and the close event of the newest failure
    per workflow type in this batch. A described run that is idle (nothing
    pending) or whose workflow task keeps failing also gets one bounded read of
    the end of its history (``_read_waiting``), unless its history has not grown
    since the last such read (``waiting_read_at``: the length it was read at).
    """
    read_at = waiting_read_at or {}
    handlers: dict[str, dict[str, list[str]] | None] = {}

    async def read(client: Client) -> Changes:
        changes = Changes()
        async for listed in client.list_workflows(closed_query, page_size=1000, rpc_timeout=RPC_TIMEOUT):
            if len(changes.closed) >= max_closed:
                changes.truncated = True
                break
            changes.closed.append(_info(listed))
        running_query = 'ExecutionStatus = "Running"'
        async for listed in client.list_workflows(
            running_query, limit=running_limit, page_size=min(running_limit, 1000), rpc_timeout=RPC_TIMEOUT
        ):
            changes.running.append(_info(listed))
        never = datetime.min.replace(tzinfo=UTC)
        targets = sorted(
            changes.running, key=lambda i: (described_at.get((i.workflow_id, i.run_id), never), i.start_time)
        )[:describe_limit]
        for info in targets:
            try:
                description = await client.get_workflow_handle(info.workflow_id, run_id=info.run_id).describe(
                    rpc_timeout=RPC_TIMEOUT
                )
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    continue  # deleted by retention between list and describe
                raise
            raw = description.raw_description
            described_info = _info(description)
            attempt = raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0
            idle = not raw.pending_activities and not raw.pending_children
            waiting = None
            if (idle or attempt > 1) and read_at.get((info.workflow_id, info.run_id)) != (
                described_info.history_length or 0
            ):
                waiting = await _read_waiting(client, described_info, idle=idle, handlers=handlers)
            changes.described.append(
                Described(
                    info=described_info,
                    pending_activities=[_pending_activity(p) for p in raw.pending_activities],
                    pending_children=[_pending_child(c) for c in raw.pending_children],
                    workflow_task_attempt=attempt,
                    waiting=waiting,
                )
            )
        newest: dict[str, ExecutionInfo] = {}
        for info in changes.closed:
            if info.status in ("failed", "timed_out") and info.close_time is not None:
                seen = newest.get(info.workflow_type)
                if seen is None or (seen.close_time and info.close_time > seen.close_time):
                    newest[info.workflow_type] = info
        for info in list(newest.values())[:50]:
            changes.failures[(info.workflow_id, info.run_id)] = await _last_event_failure(client, info)
        return changes

    return await call(read)


async def read_activity_attempts(
    *, runs: list[tuple[str, str]], max_pages: int = 3
) -> dict[tuple[str, str], dict[str, dict[str, int]]]:
    """How many attempts each activity of these closed runs needed, from their histories.

    A retried activity leaves no event per attempt: its ``ActivityTaskStarted`` event is written
    once, when the last attempt ends, and carries that attempt's number. So one history read per
    run tells, per activity type, how many executions needed 1, 2, 3... attempts:
    ``{("wf", "run"): {"charge": {"1": 4, "3": 1}}}``. Up to ``max_pages`` pages of 1,000 events per
    run (a longer history is counted in its first 3,000 events); a run gone meanwhile (retention)
    comes back empty.
    """

    async def read(client: Client) -> dict[tuple[str, str], dict[str, dict[str, int]]]:
        found: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
        for workflow_id, run_id in runs:
            scheduled: dict[int, str] = {}
            counts: dict[str, dict[str, int]] = {}
            token = b""
            for _ in range(max_pages):
                try:
                    page = await client.workflow_service.get_workflow_execution_history(
                        GetWorkflowExecutionHistoryRequest(
                            namespace=client.namespace,
                            execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                            maximum_page_size=1000,
                            next_page_token=token,
                        ),
                        timeout=RPC_TIMEOUT,
                    )
                except RPCError as exc:
                    if exc.status == RPCStatusCode.NOT_FOUND:
                        break
                    raise
                for event in page.history.events:
                    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                        name = event.activity_task_scheduled_event_attributes.activity_type.name
                        scheduled[event.event_id] = name
                    elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                        started = event.activity_task_started_event_attributes
                        name = scheduled.get(started.scheduled_event_id, "unknown")
                        attempt, of_type = str(max(started.attempt, 1)), counts.setdefault(name, {})
                        of_type[attempt] = of_type.get(attempt, 0) + 1
                token = page.next_page_token
                if not token:
                    break
            found[(workflow_id, run_id)] = counts
        return found

    return await call(read)


WAITING_EVENTS = 1000
METADATA_QUERY = "__temporal_workflow_metadata"
METADATA_TIMEOUT = timedelta(seconds=3)


async def _read_waiting(
    client: Client, info: ExecutionInfo, *, idle: bool, handlers: dict[str, dict[str, list[str]] | None]
) -> dict[str, Any]:
    """What an idle or failing run waits on, from the last ``WAITING_EVENTS`` events of its history.

    DescribeWorkflowExecution lists pending activities, children and the pending workflow task, but
    not timers: a run asleep on a timer (an approval waiting for its deadline) looks exactly like a
    run that will never move again. So one reverse history read (one RPC) finds the timers started
    and not yet fired or cancelled, with when they fire, and the newest workflow task failure or
    timeout not followed by a completed workflow task (the server writes the first failure of a
    series and keeps retrying without new events). ``complete`` says whether the read reached the
    first event: when it did not and found no timer, "no timer" is not known. An idle run without a
    timer can only be woken by a signal or an update: the signals and updates its type declares
    come from the SDK's ``__temporal_workflow_metadata`` query, asked once per type per refresh.
    """
    try:
        response = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=info.workflow_id, run_id=info.run_id),
                maximum_page_size=WAITING_EVENTS,
            ),
            timeout=RPC_TIMEOUT,
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return {"at_length": info.history_length or 0, "timers": [], "complete": False}
        raise
    closed_timers: set[int] = set()
    timers: list[dict[str, Any]] = []
    task_failure, task_timed_out, completed_since = "", False, False
    for event in response.history.events:  # newest first
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_TIMER_FIRED:
            closed_timers.add(event.timer_fired_event_attributes.started_event_id)
        elif kind == EventType.EVENT_TYPE_TIMER_CANCELED:
            closed_timers.add(event.timer_canceled_event_attributes.started_event_id)
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED and event.event_id not in closed_timers:
            attrs = event.timer_started_event_attributes
            fires = event.event_time.ToDatetime(tzinfo=UTC) + attrs.start_to_fire_timeout.ToTimedelta()
            timers.append({"timer_id": attrs.timer_id, "fires_at": fires.isoformat()})
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            completed_since = True
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED and not completed_since and not task_failure:
            task_failure = _typed_failure_text(event.workflow_task_failed_event_attributes.failure)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT and not completed_since and not task_failure:
            task_failure, task_timed_out = "the workflow task timed out", True
    waiting: dict[str, Any] = {
        "at_length": info.history_length or 0,
        "timers": sorted(timers, key=lambda t: t["fires_at"]),
        "complete": not response.next_page_token,
        "workflow_task_failure": task_failure[:2000],
        "workflow_task_timed_out": task_timed_out,
    }
    if idle and not timers:
        if info.workflow_type not in handlers:
            handlers[info.workflow_type] = await _declared_handlers(client, info)
        waiting["handlers"] = handlers[info.workflow_type]
    return waiting


async def _declared_handlers(client: Client, info: ExecutionInfo) -> dict[str, list[str]] | None:
    """The queries, signals and updates a run's type declares, from the SDK's metadata query
    (Python, Go, Java and TypeScript SDKs of 2024 on answer it); None when it cannot be asked (no
    worker polling, an older SDK), answered within a short timeout so a refresh never waits long."""
    from temporalio.api.sdk.v1 import WorkflowMetadata

    handle = client.get_workflow_handle(info.workflow_id, run_id=info.run_id)
    try:
        metadata = await handle.query(METADATA_QUERY, result_type=WorkflowMetadata, rpc_timeout=METADATA_TIMEOUT)
    except Exception:  # any refusal, timeout or decoding problem: "unknown", never a failed refresh
        return None
    definition = metadata.definition

    def names(definitions: Any) -> list[str]:
        return sorted(d.name for d in definitions if d.name and not d.name.startswith("__"))

    return {
        "queries": names(definition.query_definitions),
        "signals": names(definition.signal_definitions),
        "updates": names(definition.update_definitions),
    }


async def declared_handlers(*, workflow_id: str, run_id: str, workflow_type: str) -> dict[str, list[str]] | None:
    """``_declared_handlers`` for the execution page (one query, short timeout)."""

    async def ask(client: Client) -> dict[str, list[str]] | None:
        info = ExecutionInfo(workflow_id, run_id, workflow_type, "", "", datetime.min.replace(tzinfo=UTC), None, 0)
        return await _declared_handlers(client, info)

    return await call(ask)


async def run_query(*, workflow_id: str, run_id: str, name: str, wait: timedelta) -> Any:
    """Run one query (no argument) and return its decoded answer; Temporal's refusals and timeouts
    come back as ``TemporalError`` with the server's or the workflow's words."""
    from temporalio.client import WorkflowQueryFailedError, WorkflowQueryRejectedError

    async def ask(client: Client) -> Any:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
        try:
            return await handle.query(name, rpc_timeout=wait)
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            raise TemporalError(f"the query failed: {exc}") from None
        except RPCError as exc:
            _raise_for(exc)
            # The client's own deadline arrives as DEADLINE_EXCEEDED or CANCELLED, "Timeout expired".
            timed_out = exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)
            if timed_out or "timeout" in exc.message.lower():
                raise TemporalError(
                    f"no answer within {wait.total_seconds():g} s (is a worker polling its task queue?)"
                ) from None
            raise TemporalError(f"the query failed: {exc.message}") from None

    return await call(ask)


async def _last_event_failure(client: Client, info: ExecutionInfo) -> str:
    try:
        response = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=info.workflow_id, run_id=info.run_id),
                maximum_page_size=1,
            ),
            timeout=RPC_TIMEOUT,
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return ""
        raise
    events = list(response.history.events)
    return _close_failure(events[0]) if events else ""


# ---- protobuf to plain data ------------------------------------------------------------


def _pending_activity(p: Any) -> dict[str, Any]:
    def iso(name: str) -> str | None:
        moment = _time(p, name)
        return moment.isoformat() if moment else None

    return {
        "activity_id": p.activity_id,
        "activity_type": p.activity_type.name,
        "state": _enum_name(p.state, "PENDING_ACTIVITY_STATE_"),
        "attempt": p.attempt,
        "maximum_attempts": p.maximum_attempts,
        "last_failure": _failure_text(p.last_failure) if p.HasField("last_failure") else "",
        "next_attempt_at": iso("next_attempt_schedule_time"),
        "last_started_at": iso("last_started_time"),
        "last_heartbeat_at": iso("last_heartbeat_time"),
        "scheduled_at": iso("scheduled_time"),
    }


def _enum_name(value: int, prefix: str) -> str:
    from temporalio.api.enums.v1 import PendingActivityState

    try:
        name = PendingActivityState.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def _failure_text(failure: Any) -> str:
    parts = [failure.message]
    cause = failure.cause if failure.HasField("cause") else None
    while cause is not None and len(parts) < 4:
        parts.append(cause.message)
        cause = cause.cause if cause.HasField("cause") else None
    return ": ".join(p for p in parts if p)


def _typed_failure_text(failure: Any) -> str:
    """A failure as "RuntimeError: message", the way a traceback's last line reads."""
    kind = failure.application_failure_info.type if failure.HasField("application_failure_info") else ""
    text = _failure_text(failure)
    return f"{kind}: {text}" if kind else text


def _pending_child(child: Any) -> dict[str, str]:
    return {"workflow_id": child.workflow_id, "run_id": child.run_id, "workflow_type": child.workflow_type_name}


def _close_failure(event: HistoryEvent) -> str:
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        return _failure_text(event.workflow_execution_failed_event_attributes.failure)
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        return "Workflow execution timed out"
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        return f"Terminated: {event.workflow_execution_terminated_event_attributes.reason}"
    return ""


def event_label(event_type: int) -> str:
    name = EventType.Name(event_type).removeprefix("EVENT_TYPE_")  # type: ignore[arg-type]
    return name.replace("_", " ").capitalize()


def _attributes(event: HistoryEvent) -> Any:
    """The event's own attributes message (a different one for each event type); None if it has none."""
    name = event.WhichOneof("attributes")
    return getattr(event, name) if name else None


def _failure(attributes: Any) -> Any:
    """The attributes' ``failure`` where their message has that field and it is set; else None."""
    has_failure = attributes.DESCRIPTOR.fields_by_name.get("failure") and attributes.HasField("failure")
    return attributes.failure if has_failure else None


def _event(event: HistoryEvent, converter: Any = None) -> dict[str, Any]:
    attributes = _attributes(event)
    detail = ""
    if attributes is not None:
        for name in ("activity_type", "workflow_type"):
            if attributes.DESCRIPTOR.fields_by_name.get(name) and attributes.HasField(name):
                detail = getattr(attributes, name).name
        if attributes.DESCRIPTOR.fields_by_name.get("signal_name"):
            detail = attributes.signal_name
        if attributes.DESCRIPTOR.fields_by_name.get("start_to_fire_timeout"):
            detail = f"{attributes.start_to_fire_timeout.ToTimedelta().total_seconds():g}s"
        if (failure := _failure(attributes)) is not None:
            detail = _failure_text(failure)
        if attributes.DESCRIPTOR.fields_by_name.get("reason") and getattr(attributes, "reason", ""):
            detail = attributes.reason
    plain = _plain(attributes, converter) if attributes is not None and converter is not None else {}
    return {
        "id": event.event_id,
        "time": event.event_time.ToDatetime(tzinfo=UTC),
        "type": event_label(event.event_type),
        "detail": detail,
        "attributes": json.dumps(plain, indent=2, default=str, ensure_ascii=False) if plain else "",
    }


# ---- an event's attributes as plain data, payloads decoded -----------------------------------------

_PAYLOADS = "temporal.api.common.v1.Payloads"
_PAYLOAD = "temporal.api.common.v1.Payload"


def _plain(message: Message, converter: Any) -> dict[str, Any]:
    """A protobuf message as JSON-ready data: payloads decoded by the client's payload converter (a
    value it cannot decode says so), times in ISO 8601, durations in seconds, enums by name, bytes
    by their size, and any text beyond ``FOLD_VALUE_AT`` characters cut with a note."""
    return {fd.name: _plain_field(fd, value, converter) for fd, value in message.ListFields()}


def _plain_field(fd: Any, value: Any, converter: Any) -> Any:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value_fd = fd.message_type.fields_by_name["value"]
        return {key: _plain_single(value_fd, item, converter) for key, item in value.items()}
    if fd.is_repeated:
        return [_plain_single(fd, item, converter) for item in value]
    return _plain_single(fd, value, converter)


def _plain_single(fd: Any, value: Any, converter: Any) -> Any:
    if fd.type == fd.TYPE_MESSAGE:
        name = fd.message_type.full_name
        if name == _PAYLOADS:
            return [_payload_value(converter, p) for p in value.payloads]
        if name == _PAYLOAD:
            return _payload_value(converter, value)
        if name == "google.protobuf.Timestamp":
            return value.ToDatetime(tzinfo=UTC).isoformat()
        if name == "google.protobuf.Duration":
            return f"{value.ToTimedelta().total_seconds():g}s"
        return _plain(value, converter)
    if fd.type == fd.TYPE_ENUM:
        known = fd.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if fd.type == fd.TYPE_BYTES:
        return f"({len(value)} bytes)"
    if isinstance(value, str) and len(value) > FOLD_VALUE_AT:
        return f"{value[:FOLD_VALUE_AT]}… ({len(value) - FOLD_VALUE_AT} more characters)"
    return value


def _payload_value(converter: Any, payload: Any) -> Any:
    try:
        value = converter.from_payloads([payload])[0]
    except Exception:  # an encoding or codec this process cannot read: say which, never fail the page
        encoding = payload.metadata.get("encoding", b"").decode(errors="replace")
        return f"(cannot decode a {encoding or 'payload'} of {len(payload.data)} bytes)"
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > FOLD_VALUE_AT:
        return f"{text[:FOLD_VALUE_AT]}… ({len(text) - FOLD_VALUE_AT} more characters)"
    return value


def _decoded_value(converter: Any, payloads: Payloads | None) -> Any:
    if payloads is None or len(payloads.payloads) != 1:
        return None
    try:
        return converter.from_payloads([payloads.payloads[0]])[0]
    except Exception:
        return None


# ---- the compact view: activities, timers, children, signals ---------------------------------------

_ACTIVITY_ENDS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "failed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "timed out",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "cancelled",
}
_CHILD_ENDS = {
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: "completed",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: "failed",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: "timed out",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: "cancelled",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: "terminated",
}


def event_groups(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    """Each activity (scheduled, started, completed/failed/timed out), timer (started, fired or
    cancelled), child workflow and signal as one entry, in the order they began, with the ids of
    its events so the page can link to them."""
    groups: list[dict[str, Any]] = []
    by_start: dict[tuple[str, int], dict[str, Any]] = {}

    def begin(kind: str, event: HistoryEvent, name: str, **extra: Any) -> None:
        group = {
            "kind": kind, "name": name, "start": event.event_time.ToDatetime(tzinfo=UTC), "end": None,
            "state": "pending", "event_ids": [event.event_id], "failure": "", "attempt": None, **extra,
        }  # fmt: skip
        groups.append(group)
        by_start[(kind, event.event_id)] = group

    def end(kind: str, started_id: int, event: HistoryEvent, state: str, failure: Any = None) -> None:
        group = by_start.get((kind, started_id))
        if group is None:
            return  # began before the events read (a history cut at its cap cannot start mid-way, so: never)
        group.update(end=event.event_time.ToDatetime(tzinfo=UTC), state=state)
        group["event_ids"].append(event.event_id)
        if failure is not None:
            group["failure"] = _typed_failure_text(failure)

    attrs: Any  # each event's own attributes message
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            begin("activity", event, attrs.activity_type.name, activity_id=attrs.activity_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if group := by_start.get(("activity", attrs.scheduled_event_id)):
                group.update(state="started", attempt=attrs.attempt, started=event.event_time.ToDatetime(tzinfo=UTC))
                group["event_ids"].append(event.event_id)
                if attrs.HasField("last_failure"):
                    group["failure"] = _typed_failure_text(attrs.last_failure)
        elif kind in _ACTIVITY_ENDS:
            attrs = _attributes(event)
            end("activity", attrs.scheduled_event_id, event, _ACTIVITY_ENDS[kind], _failure(attrs))
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            attrs = event.timer_started_event_attributes
            seconds = attrs.start_to_fire_timeout.ToTimedelta().total_seconds()
            begin("timer", event, f"timer {attrs.timer_id} ({seconds:g}s)", timer_id=attrs.timer_id)
        elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
            end("timer", event.timer_fired_event_attributes.started_event_id, event, "fired")
        elif kind == EventType.EVENT_TYPE_TIMER_CANCELED:
            end("timer", event.timer_canceled_event_attributes.started_event_id, event, "cancelled")
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            attrs = event.start_child_workflow_execution_initiated_event_attributes
            begin("child", event, attrs.workflow_type.name, workflow_id=attrs.workflow_id, run_id="")
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED:
            attrs = event.start_child_workflow_execution_failed_event_attributes
            end("child", attrs.initiated_event_id, event, "failed to start")
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            attrs = event.child_workflow_execution_started_event_attributes
            if group := by_start.get(("child", attrs.initiated_event_id)):
                group.update(state="started", run_id=attrs.workflow_execution.run_id)
                group["event_ids"].append(event.event_id)
        elif kind in _CHILD_ENDS:
            attrs = _attributes(event)
            end("child", attrs.initiated_event_id, event, _CHILD_ENDS[kind], _failure(attrs))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            begin("signal", event, event.workflow_execution_signaled_event_attributes.signal_name)
            groups[-1]["state"] = "received"
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            begin("workflow task", event, "workflow task failed")
            groups[-1].update(
                state="failed", failure=_typed_failure_text(event.workflow_task_failed_event_attributes.failure)
            )
    return groups


def _children(events: list[HistoryEvent], pending: Iterable[Any]) -> list[dict[str, str]]:
    children: dict[str, dict[str, str]] = {}
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            attrs = event.child_workflow_execution_started_event_attributes
            children[attrs.workflow_execution.workflow_id] = {
                "workflow_id": attrs.workflow_execution.workflow_id,
                "run_id": attrs.workflow_execution.run_id,
                "workflow_type": attrs.workflow_type.name,
            }
    for child in pending:
        children.setdefault(
            child.workflow_id,
            {"workflow_id": child.workflow_id, "run_id": child.run_id, "workflow_type": child.workflow_type_name},
        )
    return list(children.values())


def _input_payloads(events: list[HistoryEvent]) -> Payloads | None:
    if events and events[0].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        return events[0].workflow_execution_started_event_attributes.input
    return None


def _result_payloads(events: list[HistoryEvent]) -> Payloads | None:
    if events and events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        return events[-1].workflow_execution_completed_event_attributes.result
    return None


async def _decode(client: Client, payloads: Payloads | None) -> str | None:
    """Payloads as indented JSON text (or a note when a codec makes them unreadable here)."""
    if payloads is None or not payloads.payloads:
        return None
    try:
        values = await client.data_converter.decode(list(payloads.payloads))
    except Exception as exc:  # any converter or codec problem: say so, don't fail the page
        return f"(cannot decode: {exc})"
    value: Any = values[0] if len(values) == 1 else values
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def since(moment: datetime, *, now: datetime | None = None) -> timedelta:
    return (now or datetime.now(UTC)) - moment


# ---- batch jobs ------------------------------------------------------------------------


class BatchBusy(TemporalError):
    """The namespace already runs as many batch jobs as it may (the dev server: one at a time)."""


BATCH_STATES = {0: "unknown", 1: "running", 2: "completed", 3: "failed"}
BATCH_TYPES = {1: "terminate", 2: "cancel", 3: "signal", 4: "delete", 5: "reset"}


@dataclass(frozen=True)
class BatchJob:
    job_id: str
    operation: str  # terminate, cancel, signal, reset, ... (Temporal's batch operation type)
    state: str  # running, completed, failed, unknown
    start_time: datetime | None
    close_time: datetime | None
    total: int | None = None  # None where only the list was read (it carries no counts)
    complete: int | None = None
    failure: int | None = None
    identity: str = ""
    reason: str = ""
    query: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


async def start_batch(
    *, job_id: str, query: str, reason: str, operation: str, identity: str, signal: str = "", arg: Any = None
) -> None:
    """Start one Temporal batch job over the runs ``query`` matches. The server refuses a second job
    while one runs in the namespace (``BatchBusy``); it accepts a query it cannot run and fails the
    job later, so callers count the query first (that raises ``BadQuery``)."""

    async def start(client: Client) -> None:
        request = StartBatchOperationRequest(
            namespace=client.namespace, visibility_query=query, job_id=job_id, reason=reason
        )
        if operation == "terminate":
            request.termination_operation.CopyFrom(BatchOperationTermination(identity=identity))
        elif operation == "cancel":
            request.cancellation_operation.CopyFrom(BatchOperationCancellation(identity=identity))
        elif operation == "signal":
            payloads = await client.data_converter.encode([] if arg is None else [arg])
            request.signal_operation.CopyFrom(
                BatchOperationSignal(signal=signal, input=Payloads(payloads=payloads), identity=identity)
            )
        elif operation == "reset":
            # The same reset point as the single action: the first workflow task, safe without
            # knowing the workflow.
            options = ResetOptions(first_workflow_task=Empty())
            request.reset_operation.CopyFrom(BatchOperationReset(identity=identity, options=options))
        else:
            raise ValueError(f"unknown batch operation {operation!r}")
        try:
            await client.workflow_service.start_batch_operation(request, timeout=RPC_TIMEOUT)
        except RPCError as exc:
            if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
                raise BatchBusy(exc.message) from None
            _raise_for(exc)
            raise

    await call(start)


async def describe_batch(*, job_id: str) -> BatchJob:
    async def describe(client: Client) -> BatchJob:
        try:
            d = await client.workflow_service.describe_batch_operation(
                DescribeBatchOperationRequest(namespace=client.namespace, job_id=job_id), timeout=RPC_TIMEOUT
            )
        except RPCError as exc:
            _raise_for(exc)
            raise
        return BatchJob(
            job_id=d.job_id, operation=BATCH_TYPES.get(d.operation_type, "unknown"),
            state=BATCH_STATES.get(d.state, "unknown"), start_time=_time(d, "start_time"),
            close_time=_time(d, "close_time"), total=d.total_operation_count, complete=d.complete_operation_count,
            failure=d.failure_operation_count, identity=d.identity, reason=d.reason, query=d.query,
        )  # fmt: skip

    return await call(describe)


async def list_batches(*, page_size: int) -> list[BatchJob]:
    """The namespace's most recent batch jobs, one RPC: ids, types, states and times (no counts)."""

    async def listing(client: Client) -> list[BatchJob]:
        response = await client.workflow_service.list_batch_operations(
            ListBatchOperationsRequest(namespace=client.namespace, page_size=page_size), timeout=RPC_TIMEOUT
        )
        return [
            BatchJob(
                job_id=o.job_id,
                operation=BATCH_TYPES.get(o.operation_type, "unknown"),
                state=BATCH_STATES.get(o.state, "unknown"),
                start_time=_time(o, "start_time"),
                close_time=_time(o, "close_time"),
            )  # fmt: skip
            for o in response.operation_info
        ]

    return await call(listing)


async def custom_search_attributes() -> dict[str, str]:
    """The namespace's custom search attributes and their types ("Keyword", "Datetime", ...)."""

    async def listing(client: Client) -> dict[str, str]:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace), timeout=RPC_TIMEOUT
        )
        return {
            name: IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_").title().replace("_", "")
            for name, kind in response.custom_attributes.items()
        }

    return await call(listing)
