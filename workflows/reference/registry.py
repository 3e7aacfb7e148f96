"""The reference workflows the worker runs and how each is started, in one place.

``WORKFLOWS`` and ``ACTIVITIES`` are what ``workflows.worker`` registers; ``KINDS``
is what the start page (``workflows.reference.views``) and ``manage.py
start_workflow`` offer. A start is checked by the workflow's own parser, so both
refuse exactly what the workflow would refuse, with its message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflows import client as temporal
from workflows.parsing import InputError
from workflows.reference import budget, campaign, pipeline, saga

log = logging.getLogger(__name__)

WORKFLOWS: list[type] = [
    saga.OrderSagaWorkflow,
    budget.TeamBudgetWorkflow,
    campaign.ApprovalCampaignWorkflow,
    pipeline.DeploymentPipelineWorkflow,
]
ACTIVITIES: list[Callable[..., Any]] = [*saga.ACTIVITIES, *pipeline.ACTIVITIES]


@dataclass(frozen=True)
class Kind:
    workflow_type: str
    key: str  # the input field that names the business object; the workflow id is prefix + key
    prefix: str
    requester_field: str  # where the requester's username goes ("" when the workflow has none)
    parse: Callable[[Any], object]  # the workflow's own parser: raises InputError naming the field


KINDS = {
    "order": Kind("OrderSagaWorkflow", "order_id", "order-", "customer", saga.OrderInput.parse),
    "budget": Kind("TeamBudgetWorkflow", "team", "budget-", "", budget.BudgetInput.parse),
    "campaign": Kind(
        "ApprovalCampaignWorkflow", "campaign_id", "campaign-", "requested_by", campaign.CampaignInput.parse
    ),
    "deployment": Kind(
        "DeploymentPipelineWorkflow", "deployment_id", "deployment-", "requested_by", pipeline.DeploymentInput.parse
    ),
}


@dataclass(frozen=True)
class Start:
    kind: str
    workflow_type: str
    workflow_id: str
    input: dict[str, Any]


def build_start(kind: str, data: dict[str, Any], *, requested_by: str = "") -> Start:
    """The start for ``kind``: a generated key when none is given, the requester filled in
    where the workflow has one (unless ``data`` names it), checked by the workflow's parser.
    Raises ``InputError`` naming the field."""
    if kind not in KINDS:
        raise InputError("kind", f"must be one of {', '.join(KINDS)}")
    if not isinstance(data, dict):
        raise InputError("input", "must be a JSON object")
    spec = KINDS[kind]
    data = {name: value for name, value in data.items() if value is not None and value != ""}
    if spec.key not in data:
        data[spec.key] = uuid.uuid4().hex[:8]
    if spec.requester_field and requested_by:
        data.setdefault(spec.requester_field, requested_by)
    spec.parse(data)
    return Start(kind, spec.workflow_type, f"{spec.prefix}{str(data[spec.key]).strip()}", data)


@dataclass(frozen=True)
class StartedWorkflow:
    start: Start
    run_id: str

    @property
    def temporal_url(self) -> str:
        return temporal.temporal_ui_url(self.start.workflow_id, self.run_id)


def start_reference_workflow(*, kind: str, data: dict[str, Any], requested_by: str) -> StartedWorkflow:
    """Check the input (``InputError`` names the field), then start the workflow by type name.
    Raises ``temporal.TemporalUnavailable``, ``temporal.WorkflowExists`` or ``temporal.TemporalError``."""
    start = build_start(kind, data, requested_by=requested_by)
    run_id = temporal.run(
        temporal.start_workflow, workflow_type=start.workflow_type, workflow_id=start.workflow_id, input=start.input
    )
    log.info("started %s %s (run %s) for %s", start.workflow_type, start.workflow_id, run_id, requested_by)
    return StartedWorkflow(start, run_id)
