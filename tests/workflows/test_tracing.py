"""Optional OpenTelemetry tracing: one trace from a decision's POST to the activity that completes
the task, on the real dev server and a real worker; nothing of it when OTEL_* is unset."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from approvals.models import ApprovalTask
from config import tracing
from tests.support.web import logged_in
from workflows import client as temporal

ROOT = Path(__file__).resolve().parents[2]
OTEL_VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                  "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME")  # fmt: skip


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process (the web's Django and every Temporal client and worker built from
    now on), into memory. Listed before ``worker`` in a test, so its worker is built traced."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.start_tracing(provider, instrument_django=True)
    yield exporter
    tracing.stop_tracing()
    provider.shutdown()


def one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [span for span in found if span.name == name]
    assert len(named) == 1, f"{name}: {len(named)} spans among {sorted(s.name for s in found)}"
    return named[0]


def attribute(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def wait_for_spans(exporter: InMemorySpanExporter, name: str, timeout: float = 20.0) -> list[ReadableSpan]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(exporter.get_finished_spans())
        if any(span.name == name for span in found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {name} span; got {sorted(s.name for s in exporter.get_finished_spans())}")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_decision_is_one_trace_from_its_post_to_the_activity_that_completes_the_task(
    spans: InMemorySpanExporter, cast: dict[str, Any], worker: Any
) -> None:
    """The ``worker`` fixture connects a client of its own, without interceptors: spans from the
    workflow and its activities prove ``build_worker`` adds the tracing interceptor itself."""
    response = logged_in(cast["alice"]).post(reverse("approvals:new"), {"title": "Traced laptop"})
    assert response.status_code == 302
    task = ApprovalTask.objects.get(title="Traced laptop")
    wait_for_spans(spans, "RunActivity:register_task")
    requested = list(spans.get_finished_spans())
    spans.clear()

    url = reverse("approvals:decide", args=[ApprovalTask.objects.get(pk=task.pk, status="pending").pk])
    response = logged_in(cast["bob"]).post(url, {"choice": "approve", "comment": "ok"})
    assert response.status_code == 302
    found = wait_for_spans(spans, "RunActivity:complete_task")
    task.refresh_from_db()
    assert task.status == "approved"

    post = next(s for s in found if s.name.startswith("POST") and str(attribute(s, "http.route")).endswith("decide/"))
    signal = one(found, "SignalWorkflow:decide")
    handled = one(found, "HandleSignal:decide")
    check = one(found, "StartActivity:check_eligibility")
    checked = one(found, "RunActivity:check_eligibility")
    complete = one(found, "StartActivity:complete_task")
    completed = one(found, "RunActivity:complete_task")
    trace_id = post.context.trace_id
    chain = [post, signal, handled, check, checked, complete, completed]
    assert {span.context.trace_id for span in chain} == {trace_id}, [(s.name, s.context.trace_id) for s in chain]
    assert post.parent is None  # the trace starts at the POST
    assert parent_of(signal) == post.context.span_id  # the web's client, inside the request
    assert parent_of(handled) == signal.context.span_id  # the workflow, as the signal's receiver
    assert parent_of(check) == handled.context.span_id  # started by the signal's handler
    assert parent_of(checked) == check.context.span_id  # run by the worker
    assert parent_of(complete) == handled.context.span_id  # started for this decision
    assert parent_of(completed) == complete.context.span_id
    assert attribute(completed, "temporalWorkflowID") == task.workflow_id

    # The workflow's own trace began with the request's POST; the decision's signal links back to it.
    started = one(requested, "StartWorkflow:ApprovalWorkflow")
    assert started.context.trace_id != trace_id
    assert one(requested, "RunActivity:register_task").context.trace_id == started.context.trace_id
    assert [link.context.trace_id for link in handled.links] == [started.context.trace_id]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_without_otel_settings_no_tracing_interceptor_is_installed(monkeypatch: Any, temporal_settings: Any) -> None:
    from workflows.worker import build_worker

    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not tracing.tracing_requested()
    assert not tracing.setup_tracing(default_service="tollgate-worker", instrument_django=True)

    async def interceptors() -> tuple[list[str], list[str]]:
        client = await temporal.connect()
        with ThreadPoolExecutor(max_workers=1) as executor:
            built = build_worker(client, executor)
        return ([type(i).__name__ for i in client.config()["interceptors"]],
                [type(i).__name__ for i in built.client.config()["interceptors"]])  # fmt: skip

    assert run_in_thread(interceptors) == ([], [])
    assert "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware" not in str(
        temporal_settings.MIDDLEWARE
    )


def test_off_by_default_nothing_of_opentelemetry_is_imported_and_a_bad_exporter_names_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k not in OTEL_VARIABLES and not k.startswith("PYTEST")}
    env["DJANGO_SECRET_KEY"] = "tracing-test"
    probe = (
        "import sys, config.asgi, workflows.worker, workflows.client\n"
        "from django.conf import settings\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('opentelemetry')}),"
        " any('opentelemetry' in m for m in settings.MIDDLEWARE))"
    )
    off = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert off.stdout.strip() == "[] False", off.stderr
    on = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env={**env, "OTEL_TRACES_EXPORTER": "console"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert on.stdout.strip() == "['opentelemetry'] True", on.stderr
    bad = subprocess.run(
        [sys.executable, "manage.py", "run_worker"], cwd=ROOT, env={**env, "OTEL_TRACES_EXPORTER": "jaeger"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "tollgate: configuration error: OTEL_TRACES_EXPORTER must be otlp, console or none, got 'jaeger'"
    ]


def run_in_thread(coro_fn: Any) -> Any:
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(value=asyncio.run(coro_fn())))
    thread.start()
    thread.join()
    return outcome["value"]
