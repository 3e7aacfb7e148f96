"""One small start form per reference workflow (the page at ``/approvals/start/``).

The forms only turn typed text into JSON values: every limit is the workflow's own parser's
(``registry.KINDS[kind].parse``), so the page refuses exactly what the workflow and
``manage.py start_workflow`` refuse, with the same message, on the field it names. Field
names are the workflow's input fields; ``cleaned_data["input"]`` is what is sent.
"""

from __future__ import annotations

from typing import Any

from django import forms

from approvals.models import Policy
from workflows.parsing import InputError, json_from_text
from workflows.reference.saga import items_from_text


class StartForm(forms.Form):
    kind = ""
    heading = ""
    help = ""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["input"] = {name: data[name] for name in self.fields if _given(data.get(name))}
        return data


def _given(value: Any) -> bool:
    """Blanks and unticked boxes are left out, so the workflow's defaults apply; 0 is a value."""
    return value is not None and value is not False and value != ""


def _policy_choice() -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        queryset=Policy.objects.filter(retired_at=None), to_field_name="slug", required=False, empty_label="Default"
    )


def _slug(policy: Policy | None) -> str:
    return policy.slug if policy else ""


def _input_error(exc: InputError) -> forms.ValidationError:
    return forms.ValidationError(str(exc).split(": ", 1)[-1])


class OrderStartForm(StartForm):
    kind, heading = "order", "Order (saga)"
    help = "Reserves each item, asks for approval from the threshold on, charges and confirms; undoes on rejection."
    order_id = forms.CharField(required=False, help_text="Left empty: a new id.")
    amount = forms.FloatField()
    items = forms.CharField(help_text="SKU:quantity, comma-separated, e.g. desk:2, lamp")
    approval_threshold = forms.FloatField(required=False, help_text="Orders from this amount need an approval (1000).")
    fail_payment = forms.BooleanField(required=False, label="Decline the payment (see the compensations run)")

    def clean_items(self) -> list[dict[str, Any]]:
        try:
            items = items_from_text((self.cleaned_data.get("items") or "").split(","))
        except InputError as exc:
            raise _input_error(exc) from None
        if not items:
            raise forms.ValidationError("Name at least one item.")
        return items


class BudgetStartForm(StartForm):
    kind, heading = "budget", "Team budget (entity)"
    help = "A long-lived budget: spends above the limit ask for approval. Signal “spend” to use it."
    team = forms.CharField()
    balance = forms.FloatField()
    limit = forms.FloatField(help_text="Spends above this need an approval.")
    max_events = forms.IntegerField(required=False, help_text="Spends per run (500).")


class CampaignStartForm(StartForm):
    kind, heading = "campaign", "Approval campaign (fan-out)"
    help = "Asks every approver at once, one approval each, and counts the answers."
    campaign_id = forms.CharField(required=False, help_text="Left empty: a new id.")
    title = forms.CharField()
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    approvers = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), help_text="Usernames, separated by commas or spaces."
    )
    policy = _policy_choice()
    fan_out_limit = forms.IntegerField(required=False, help_text="Children per workflow (500).")
    payload = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Details", help_text='JSON, e.g. {"doc": "v2"}'
    )

    def clean_approvers(self) -> list[str]:
        names = (self.cleaned_data.get("approvers") or "").replace(",", " ").split()
        if not names:
            raise forms.ValidationError("Name at least one approver.")
        return names

    def clean_policy(self) -> str:
        return _slug(self.cleaned_data.get("policy"))

    def clean_payload(self) -> dict[str, Any]:
        try:
            return json_from_text(self.cleaned_data.get("payload") or "", "payload")
        except InputError as exc:
            raise _input_error(exc) from None


class DeploymentStartForm(StartForm):
    kind, heading = "deployment", "Deployment pipeline"
    help = "Builds, retries a flaky step, waits for a person's go-ahead, rolls out."
    deployment_id = forms.CharField(required=False, help_text="Left empty: a new id.")
    service = forms.CharField()
    version = forms.CharField()
    flaky_failures = forms.IntegerField(required=False, help_text="Times the flaky step fails before it succeeds (2).")
    fail_with = forms.ChoiceField(
        choices=[("", "Nothing"), ("InvalidArtifact", "InvalidArtifact (a non-retryable failure)")], required=False
    )
    rollout_seconds = forms.FloatField(required=False, help_text="Seconds (5).")
    policy = _policy_choice()

    def clean_policy(self) -> str:
        return _slug(self.cleaned_data.get("policy"))


START_FORMS: dict[str, type[StartForm]] = {
    form.kind: form for form in (OrderStartForm, BudgetStartForm, CampaignStartForm, DeploymentStartForm)
}
