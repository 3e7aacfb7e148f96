"""Optional OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

Off unless ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``; ``none`` keeps it off) or an OTLP
endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and
``OTEL_SDK_DISABLED`` is not ``true``. Off, nothing of OpenTelemetry is imported: every import
below happens inside the functions that switch it on.

On, the web (``config/asgi.py``) traces each request through Django's instrumentation, and every
Temporal client and worker (``workflows/client.py``, ``workflows/worker.py``) carries the SDK's
tracing interceptor, so one trace runs from a decision's POST through its signal to the activity
that completes the task (see ``workflows/tracing.py``). The service name is ``OTEL_SERVICE_NAME``,
else ``tollgate-web`` or ``tollgate-worker``; the exporter reads its own ``OTEL_EXPORTER_OTLP_*``
settings (OTLP over HTTP/protobuf) and the sampler ``OTEL_TRACES_SAMPLER``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

EXPORTERS = {"otlp", "console"}
# What every Temporal client and worker of this process adds; empty while tracing is off.
_client_interceptors: list[Any] = []
_worker_interceptors: list[Any] = []
_instrumented_django = False


def tracing_requested() -> bool:
    environ = os.environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return any(
        environ.get(name, "").strip() for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup_tracing(*, default_service: str, instrument_django: bool) -> bool:
    """Switch tracing on for this process when the environment asks for it; whether it did.
    A wrong value fails at start, naming the variable."""
    if not tracing_requested():
        return False
    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if name.strip()]
    unknown = sorted(set(names) - EXPORTERS)
    if unknown:
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER must be otlp, console or none, got {', '.join(unknown)!r}")
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if "otlp" in names and protocol and protocol.strip() != "http/protobuf":
        raise ImproperlyConfigured(f"OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf (installed), got {protocol!r}")

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or default_service
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    start_tracing(provider, instrument_django=instrument_django)
    return True


def start_tracing(provider: TracerProvider, *, instrument_django: bool) -> None:
    """Trace through ``provider``: Django's requests (before its middleware is loaded) and every
    Temporal client and worker created from now on. Tests call it with an in-memory exporter."""
    global _instrumented_django
    from workflows.tracing import temporal_interceptors

    client, worker = temporal_interceptors(provider.get_tracer("tollgate"))
    _client_interceptors[:], _worker_interceptors[:] = [client], [worker]
    if instrument_django and not _instrumented_django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(tracer_provider=provider)
        _instrumented_django = True


def stop_tracing() -> None:
    global _instrumented_django
    _client_interceptors.clear()
    _worker_interceptors.clear()
    if _instrumented_django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().uninstrument()
        _instrumented_django = False


def client_interceptors() -> list[Any]:
    """For ``Client.connect(interceptors=...)``: the worker takes them from its client too."""
    return list(_client_interceptors)


def worker_interceptors() -> list[Any]:
    """Worker-only interceptors, placed after the client's (see ``workflows/tracing.py``)."""
    return list(_worker_interceptors)
