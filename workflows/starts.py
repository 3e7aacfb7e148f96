"""What starting a reference workflow sends: shared by the web's start page and ``manage.py start_workflow``.

Inputs are checked with the workflows' own parsers (``types.py``), so a bad field
is refused before anything reaches Temporal, with the same message the workflow
would give. ``DeploymentPipelineWorkflow`` lives elsewhere and is started by
its type name only; ``parse_deployment`` checks the input contract it publishes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from workflows.types import BudgetInput, CampaignInput, InputError, OrderInput, _string

DEPLOYMENT_FAILURES = ("", "InvalidArtifact")


@dataclass(frozen=True)
class Kind:
    workflow_type: str
    key: str  # the input field that names the business object; the workflow id is prefix + key
    prefix: str
    requester_field: str  # where the requester's username goes ("" when the workflow has none)


KINDS = {
    "order": Kind("OrderSagaWorkflow", "order_id", "order-", "customer"),
    "budget": Kind("TeamBudgetWorkflow", "team", "budget-", ""),
    "campaign": Kind("ApprovalCampaignWorkflow", "campaign_id", "campaign-", "requested_by"),
    "deployment": Kind("DeploymentPipelineWorkflow", "deployment_id", "deployment-", "requested_by"),
}


@dataclass(frozen=True)
class Start:
    kind: str
    workflow_type: str
    workflow_id: str
    input: dict[str, Any]


def parse_deployment(raw: dict[str, Any]) -> None:
    """The published input contract of ``DeploymentPipelineWorkflow`` (the workflow has the last word)."""
    for name in ("deployment_id", "service", "version"):
        _string(raw, name, required=True, max_length=200)
    _string(raw, "requested_by", required=False, max_length=150)
    _string(raw, "policy", required=False, max_length=100)
    flaky = raw.get("flaky_failures", 2)
    if isinstance(flaky, bool) or not isinstance(flaky, int) or flaky < 0:
        raise InputError("flaky_failures", "must be a whole number, zero or more")
    if raw.get("fail_with", "") not in DEPLOYMENT_FAILURES:
        raise InputError("fail_with", "must be empty or 'InvalidArtifact'")
    rollout = raw.get("rollout_seconds", 5)
    if isinstance(rollout, bool) or not isinstance(rollout, int | float) or rollout != rollout or rollout < 0:
        raise InputError("rollout_seconds", "must be a number, zero or more")


PARSERS = {
    "order": OrderInput.parse,
    "budget": BudgetInput.parse,
    "campaign": CampaignInput.parse,
    "deployment": parse_deployment,
}


def build_start(kind: str, data: dict[str, Any], *, requested_by: str = "") -> Start:
    """The start for ``kind``: a generated key when none is given, the requester filled in
    where the workflow has one (unless ``data`` names it), checked by the workflow's parser.
    Raises ``InputError`` naming the field."""
    if kind not in KINDS:
        raise InputError("kind", f"must be one of {', '.join(KINDS)}")
    if not isinstance(data, dict):
        raise InputError("input", f"must be a JSON object, got {type(data).__name__}")
    spec = KINDS[kind]
    data = {name: value for name, value in data.items() if value is not None and value != ""}
    if spec.key not in data:
        data[spec.key] = uuid.uuid4().hex[:8]
    if spec.requester_field and requested_by:
        data.setdefault(spec.requester_field, requested_by)
    PARSERS[kind](data)
    key = data[spec.key]
    return Start(kind, spec.workflow_type, f"{spec.prefix}{str(key).strip()}", data)
