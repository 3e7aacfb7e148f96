"""Start a reference workflow: ``manage.py start_workflow <order|budget|campaign|deployment> [options]``.

Options build the input; ``--input '{...}'`` gives it as JSON (options given too
override its fields). Prints the workflow id and the Temporal UI link.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from workflows import client as temporal
from workflows.parsing import InputError, json_from_text
from workflows.reference.registry import start_reference_workflow
from workflows.reference.saga import items_from_text

# kind -> (option, input field, type, help); repeatable options are lists.
OPTIONS: dict[str, list[tuple[str, str, Any, str]]] = {
    "order": [
        ("--order-id", "order_id", str, "the order's id (default: a new one)"),
        ("--amount", "amount", float, "order total"),
        ("--item", "items", "item", "SKU or SKU:QUANTITY, repeatable"),
        ("--customer", "customer", str, "who orders (default: --requested-by)"),
        ("--approval-threshold", "approval_threshold", float, "orders from this amount need an approval (1000)"),
        ("--fail-payment", "fail_payment", bool, "decline the charge, to see the compensations"),
    ],
    "budget": [
        ("--team", "team", str, "the team (the workflow id is budget-<team>)"),
        ("--balance", "balance", float, "starting balance"),
        ("--limit", "limit", float, "spends above this need an approval"),
        ("--max-events", "max_events", int, "spends per run before it continues as new (500)"),
    ],
    "campaign": [
        ("--campaign-id", "campaign_id", str, "the campaign's id (default: a new one)"),
        ("--title", "title", str, "what the approvers are asked"),
        ("--description", "description", str, ""),
        ("--approver", "approvers", "list", "a username, repeatable (or comma-separated)"),
        ("--policy", "policy", str, "escalation policy slug (default policy when absent)"),
        ("--fan-out-limit", "fan_out_limit", int, "children per workflow, 2..1000 (500)"),
        ("--payload", "payload", "json", "details shown to approvers, a JSON object"),
    ],
    "deployment": [
        ("--deployment-id", "deployment_id", str, "the deployment's id (default: a new one)"),
        ("--service", "service", str, ""),
        ("--version", "version", str, ""),
        ("--flaky-failures", "flaky_failures", int, "times the flaky step fails before it succeeds (2)"),
        ("--fail-with", "fail_with", str, "'' or InvalidArtifact (a non-retryable failure)"),
        ("--rollout-seconds", "rollout_seconds", float, "(5)"),
        ("--policy", "policy", str, "escalation policy slug for the human gate"),
    ],
}


class Command(BaseCommand):
    help = "Start a reference workflow (order saga, team budget, approval campaign, deployment pipeline)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        kinds = parser.add_subparsers(dest="kind", required=True, metavar="{order,budget,campaign,deployment}")
        for kind, options in OPTIONS.items():
            sub = kinds.add_parser(kind)
            sub.add_argument("--input", help="the whole input as a JSON object")
            sub.add_argument("--requested-by", default="cli", help="requester's username (default: cli)")
            for option, field, kind_of, text in options:
                if kind_of is bool:
                    sub.add_argument(option, dest=field, action="store_true", default=None, help=text)
                elif kind_of in ("item", "list"):
                    sub.add_argument(option, dest=field, action="append", help=text)
                else:
                    sub.add_argument(option, dest=field, type=str if kind_of == "json" else kind_of, help=text)

    def handle(self, *args: Any, **options: Any) -> None:
        kind = options["kind"]
        try:
            data = json_from_text(options["input"] or "", "--input")
            for _, field, kind_of, _ in OPTIONS[kind]:
                value = options.get(field)
                if value is None:
                    continue
                if kind_of == "item":
                    value = items_from_text(value)
                elif kind_of == "list":
                    value = [name for text in value for name in text.replace(",", " ").split()]
                elif kind_of == "json":
                    value = json_from_text(value, "--payload")
                data[field] = value
            started = start_reference_workflow(kind=kind, data=data, requested_by=options["requested_by"])
        except InputError as exc:
            raise CommandError(f"invalid input: {exc}") from None
        except temporal.TemporalError as exc:  # unreachable, an existing id, or refused
            raise CommandError(str(exc)) from None
        self.stdout.write(f"started {started.start.workflow_type} {started.start.workflow_id} (run {started.run_id})")
        self.stdout.write(f"workflow id: {started.start.workflow_id}")
        if started.temporal_url:
            self.stdout.write(f"Temporal UI: {started.temporal_url}")
