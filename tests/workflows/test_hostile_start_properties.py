"""Hostile ApprovalWorkflow starts against the real Temporal dev server and the real worker
(``build_worker``, with its bounded JSON converter): whatever a Temporal client sends as the input
(any JSON value, none, two, a payload the decoder itself cannot read) ends within seconds in one of
two ways:

- the workflow runs and its task is registered (the input was valid), or
- the workflow FAILED with exactly one non-retryable ``InvalidInput`` application error;

never a workflow left running while its workflow task fails and is retried forever.

Hypothesis draws a bounded number of examples (``derandomize=True``: the same ones on every run);
the explicit ``@example``s are the cases issue 12 names.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import RawValue

from approvals.models import ApprovalTask

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SETTLE_SECONDS = 15.0


class Start:
    """The arguments of one start, as a Temporal client would send them. Not a dataclass: Hypothesis
    prints a dataclass field by field, and recursing into a 500-level payload overflows its printer."""

    def __init__(self, args: tuple[Any, ...], label: str) -> None:
        self.args, self.label = args, label

    def __repr__(self) -> str:
        return f"Start({self.label})"


def one(value: Any, label: str = "") -> Start:
    return Start((value,), label or repr(value)[:80])


def raw_json(data: bytes, label: str) -> Start:
    """A payload sent as bytes: the client never encodes it, so the worker's decoder meets it first."""
    return Start((RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data)),), label)


def nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


VALID = {"request_id": "r-1", "title": "Laptop", "payload": {"amount": 1200}}
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=10
)
FIELDS = st.fixed_dictionaries(
    {"request_id": st.text(max_size=30) | JSON, "title": st.text(max_size=30) | JSON},
    optional={
        "payload": st.dictionaries(st.text(max_size=6), JSON, max_size=3) | JSON,
        "description": st.text(max_size=30),
        "approvers": st.fixed_dictionaries({}, optional={"groups": st.just(["approvers"]), "users": JSON}),
        "policy": st.sampled_from(["", "standard", "no-such-policy"]) | JSON,
        "requested_by": st.sampled_from(["alice", "system"]) | JSON,
    },
)
STARTS = st.builds(one, JSON | FIELDS, st.just(""))


async def _settle(address: str, task_queue: str, start: Start) -> tuple[str, WorkflowExecutionStatus | None, Any]:
    """Start the workflow and wait until it failed, or runs with its task row, or a workflow task
    failed (the wedge this test exists to catch). Returns the id, the status and the failure event."""
    client = await Client.connect(address)
    workflow_id = f"hostile-{uuid.uuid4().hex[:10]}"
    handle = await client.start_workflow(
        "ApprovalWorkflow", args=list(start.args), id=workflow_id, task_queue=task_queue
    )
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        while time.monotonic() < deadline:
            history = await handle.fetch_history()
            for event in history.events:
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    cause = event.workflow_task_failed_event_attributes.failure.message
                    raise AssertionError(f"{start}: a workflow task failed (retried forever): {cause}")
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                    return workflow_id, WorkflowExecutionStatus.FAILED, event
            status = (await handle.describe()).status
            if status != WorkflowExecutionStatus.RUNNING:
                # It may have closed between the history read above and this describe: read again.
                events = (await handle.fetch_history()).events
                failed = next(
                    (e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED), None
                )
                return workflow_id, status, failed
            if await asyncio.to_thread(_registered, workflow_id):
                return workflow_id, status, None
            await asyncio.sleep(0.2)
        description = await handle.describe()
        attempt = description.raw_description.pending_workflow_task.attempt
        raise AssertionError(f"{start}: still undecided after {SETTLE_SECONDS}s (workflow task attempt {attempt})")
    finally:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("hostile-start test is done with it")


def _registered(workflow_id: str) -> bool:
    from django.db import connection

    try:
        return ApprovalTask.objects.filter(workflow_id=workflow_id, status=ApprovalTask.Status.PENDING).exists()
    finally:
        connection.close()  # this thread's own connection: the test database is dropped at the end


def assert_ends_well(address: str, task_queue: str, start: Start) -> str:
    """Runs with its task, or FAILED with exactly one non-retryable InvalidInput. Returns which."""
    workflow_id, status, failed = asyncio.run(_settle(address, task_queue, start))
    if status == WorkflowExecutionStatus.RUNNING:
        task = ApprovalTask.objects.get(workflow_id=workflow_id)
        assert task.title and task.request_id, start
        return "running"
    assert status == WorkflowExecutionStatus.FAILED and failed is not None, f"{start}: ended {status}"
    failure = failed.workflow_execution_failed_event_attributes.failure
    assert failure.HasField("application_failure_info"), f"{start}: {failure}"
    assert failure.application_failure_info.type == "InvalidInput", f"{start}: {failure.message}"
    assert failure.application_failure_info.non_retryable, f"{start}: retryable {failure.message}"
    assert not failure.HasField("cause"), f"{start}: more than one error in the chain: {failure.cause}"
    assert failure.message.startswith("invalid input: "), failure.message
    assert not ApprovalTask.objects.filter(workflow_id=workflow_id, status=ApprovalTask.Status.PENDING).exists()
    return "failed"


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(start=STARTS)
@example(start=Start((), "no argument"))
@example(start=Start((VALID, VALID), "two arguments"))
@example(start=one({**VALID, "payload": nested(500)}, "payload 500 levels deep"))
@example(start=one({**VALID, "payload": nested(40)}, "payload 40 levels deep"))
@example(start=one([], "[]"))
@example(start=one("", '""'))
@example(start=one(0, "0"))
@example(start=one(False, "false"))
@example(start=one(None, "null"))
@example(start=one({**VALID, "payload": []}, "payload []"))
@example(start=one({**VALID, "payload": ""}, 'payload ""'))
@example(start=one({**VALID, "payload": 0}, "payload 0"))
@example(start=one({**VALID, "payload": False}, "payload false"))
@example(start=one({**VALID, "aprovers": {"groups": ["approvers"]}}, "unknown key aprovers"))
@example(start=one({**VALID, "payload": {"n": float("nan")}}, "payload NaN"))
@example(start=one({**VALID, "payload": {"n": 2**64}}, "payload 2**64"))
@example(start=raw_json(b"[" * 5000 + b"]" * 5000, "raw JSON 5,000 levels deep"))
@example(
    start=raw_json(b'{"request_id": "r", "title": "t", "payload": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001, "5k obj")
)
# Python refuses to convert a whole number of more than 4,300 digits (a ValueError, not a JSON error).
@example(start=raw_json(b'{"request_id": "r", "title": "t", "payload": {"n": ' + b"9" * 5000 + b"}}", "5,000 digits"))
@example(start=raw_json(b'{"request_id": "r", "title": ', "raw JSON cut short"))
@example(start=raw_json(b"\xff\xfe not JSON at all", "raw bytes that are not UTF-8"))
@example(start=one(VALID, "a valid request"))
def test_any_start_runs_with_its_task_or_fails_at_once_as_invalid_input(
    start: Start, cast: dict[str, Any], worker: Any, temporal_settings: Any
) -> None:
    assert_ends_well(temporal_settings.TEMPORAL_ADDRESS, temporal_settings.TEMPORAL_TASK_QUEUE, start)


def test_a_valid_start_really_runs_and_a_raw_5000_level_payload_really_fails(
    cast: dict[str, Any], worker: Any, temporal_settings: Any
) -> None:
    """Both outcomes are reached, so the property above checks both branches."""
    address, queue = temporal_settings.TEMPORAL_ADDRESS, temporal_settings.TEMPORAL_TASK_QUEUE
    assert assert_ends_well(address, queue, one({**VALID, "request_id": uuid.uuid4().hex})) == "running"
    assert assert_ends_well(address, queue, raw_json(b"[" * 5000 + b"]" * 5000, "deep")) == "failed"
