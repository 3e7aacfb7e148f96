"""The SDK's tracing interceptor, arranged so a decision is one trace. Imported only when tracing
is on (``config/tracing.py``): it imports OpenTelemetry.

The stock ``TracingInterceptor`` records a signal inside the trace of whoever started the workflow
(``HandleSignal`` merely links to the sender), and the activity that completes an approval runs
from the workflow's main coroutine, also in that trace. Tollgate wants the decision's own story in
one trace: POST /approvals/<id>/decide (Django) -> ``SignalWorkflow:decide`` (the web's client) ->
``HandleSignal:decide`` (the workflow) -> ``StartActivity:check_eligibility`` / ``complete_task``
-> ``RunActivity:...`` (the worker). So:

- ``_SignalTracing``: a signal that carries a trace context is handled as a child of its sender
  (with a link back to the workflow's own trace), and what its handler starts is a child of the
  ``HandleSignal`` span;
- ``DecisionTracing`` (a second, worker-only interceptor, after the tracing one so its outbound
  calls run first): remembers the context each ``decide`` signal was handled in, by
  ``decision_id``, and starts ``complete_task`` for that decision in it.

Spans are never part of a workflow's history, so none of this touches determinism; on replay the
tracing interceptor creates no spans, and the remembered contexts are rebuilt by the replayed
signals. The subclass uses the tracing interceptor's documented customisation points (subclass
both classes, keep ``header_key``, ``text_map_propagator`` and ``payload_converter``) and its
``_completed_span``/``_load_workflow_context_carrier`` helpers, pinned with temporalio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import opentelemetry.context
import opentelemetry.trace
import temporalio.api.common.v1
import temporalio.worker
from opentelemetry.context import Context
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.contrib.opentelemetry._context import attached_context


class _SpanHeaders:
    """Where ``_completed_span`` writes the new span's context (as it does on an outbound input)."""

    def __init__(self) -> None:
        self.headers: Mapping[str, temporalio.api.common.v1.Payload] = {}


class _SignalTracing(TracingWorkflowInboundInterceptor):
    async def handle_signal(self, input: temporalio.worker.HandleSignalInput) -> None:
        header = input.headers.get(self.header_key)
        if not header:  # a sender without tracing (the CLI, another SDK): the stock behaviour
            return await super().handle_signal(input)
        sender = self._set_on_context(
            self.text_map_propagator.extract(self.payload_converter.from_payloads([header])[0])
        )
        span = _SpanHeaders()
        with attached_context(sender):
            self._completed_span(
                f"HandleSignal:{input.signal}",
                link_context_carrier=self._load_workflow_context_carrier(),
                add_to_outbound=span,
                kind=opentelemetry.trace.SpanKind.SERVER,
            )
        handled = span.headers.get(self.header_key)  # absent on replay: no span was made
        if handled:
            sender = self._set_on_context(
                self.text_map_propagator.extract(self.payload_converter.from_payloads([handled])[0])
            )
        with attached_context(sender):
            # Past the stock handle_signal (it would add a second, linked span) to the next interceptor.
            await temporalio.worker.WorkflowInboundInterceptor.handle_signal(self, input)


class TollgateTracingInterceptor(TracingInterceptor):
    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)  # registers the span-making extern function
        return _SignalTracing


class _DecisionContexts(temporalio.worker.WorkflowInboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self.decisions: dict[str, Context] = {}

    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        super().init(_CompleteInDecisionContext(outbound, self))

    async def handle_signal(self, input: temporalio.worker.HandleSignalInput) -> None:
        raw = input.args[0] if input.signal == "decide" and len(input.args) == 1 else None
        decision_id = raw.get("decision_id") if isinstance(raw, dict) else None
        if isinstance(decision_id, str) and decision_id:
            self.decisions.setdefault(decision_id, opentelemetry.context.get_current())
        await super().handle_signal(input)


class _CompleteInDecisionContext(temporalio.worker.WorkflowOutboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowOutboundInterceptor, root: _DecisionContexts) -> None:
        super().__init__(next)
        self.root = root

    def start_activity(self, input: temporalio.worker.StartActivityInput) -> Any:
        decision_id = getattr(input.args[0], "decision_id", None) if input.args else None
        context = self.root.decisions.get(decision_id) if input.activity == "complete_task" and decision_id else None
        with attached_context(context):  # None attaches nothing: the workflow's own trace
            return super().start_activity(input)


class DecisionTracing(temporalio.worker.Interceptor):
    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[temporalio.worker.WorkflowInboundInterceptor]:
        return _DecisionContexts


def temporal_interceptors(tracer: opentelemetry.trace.Tracer) -> tuple[TollgateTracingInterceptor, DecisionTracing]:
    """The client's interceptor (the worker takes it from its client) and the worker's own."""
    return TollgateTracingInterceptor(tracer), DecisionTracing()
