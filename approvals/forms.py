from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.models import Group, User
from django.db import connection, models

from approvals.durations import format_duration, parse_duration
from approvals.models import DEFAULT_CLAIM_FOR, Decision, Delegation, Policy, RoutingRule, level_timing_errors
from approvals.policies import LevelData, eligible_count, shadowed_rules
from approvals.services import delegate_refusal
from workflows.parsing import InputError, json_from_text

PAYLOAD_ROWS = 5


class DecisionForm(forms.Form):
    choice = forms.ChoiceField(choices=Decision.Choice.choices)
    comment = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("choice") == Decision.Choice.REJECT and not (data.get("comment") or "").strip():
            self.add_error("comment", "Rejecting needs a reason.")
        return data


class BulkDecisionForm(DecisionForm):
    """A decision for many tasks: ticked ids (``task``, repeated) or every task matching the inbox's
    ``query`` (``all``); ``run`` is the id the page polls for progress."""

    run = forms.UUIDField(required=False)
    all = forms.BooleanField(required=False)
    query = forms.CharField(required=False, max_length=2000)

    def task_ids(self) -> list[int]:
        """The ticked ids that can be ids at all (anything else cannot name a task: dropped)."""
        values = self.data.getlist("task") if hasattr(self.data, "getlist") else []
        return list(dict.fromkeys(int(v) for v in values if v.isascii() and v.isdigit() and len(v) <= 12))


class RequestForm(forms.Form):
    title = forms.CharField(max_length=300)
    description = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 4}))
    request_type = forms.CharField(
        max_length=100, required=False, help_text="Optional, e.g. purchase: routing rules may pick the policy from it."
    )
    policy = forms.ModelChoiceField(
        queryset=Policy.objects.filter(retired_at=None),
        required=False,
        empty_label="Chosen by the routing rules (or the default)",
        help_text="Who approves, how long each level waits, what happens when nobody decides.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for row in range(1, PAYLOAD_ROWS + 1):
            self.fields[f"key_{row}"] = forms.CharField(
                required=False,
                max_length=100,
                label="Field",
                widget=forms.TextInput(attrs={"placeholder": "Field, e.g. amount"}),
            )
            self.fields[f"value_{row}"] = forms.CharField(
                required=False, max_length=2000, label="Value", widget=forms.TextInput(attrs={"placeholder": "Value"})
            )

    def payload_rows(self) -> list[tuple[forms.BoundField, forms.BoundField]]:
        return [(self[f"key_{row}"], self[f"value_{row}"]) for row in range(1, PAYLOAD_ROWS + 1)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        payload: dict[str, str] = {}
        for row in range(1, PAYLOAD_ROWS + 1):
            key = (data.get(f"key_{row}") or "").strip()
            value = (data.get(f"value_{row}") or "").strip()
            if value and not key:
                self.add_error(f"key_{row}", "Give this value a name.")
            elif key in payload:
                self.add_error(f"key_{row}", f"“{key}” is used twice.")
            elif key:
                payload[key] = value
        data["payload"] = payload
        return data


def storable_id(value: Any, model: type[models.Model]) -> bool:
    """Whether ``value`` is a whole number the model's primary key column can hold. An ``IN`` query
    with one beyond it raises OverflowError on SQLite (and fails on PostgreSQL) instead of finding
    nothing; Django guards only the ``exact`` lookup."""
    text = str(value).strip()
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 20:
        return False
    low, high = connection.ops.integer_field_range(model._meta.pk.get_internal_type())
    return (low is None or int(text) >= low) and (high is None or int(text) <= high)


class IdsChoiceField(forms.ModelMultipleChoiceField):
    """A multiple choice by id that refuses ids no row can have before asking the database."""

    def clean(self, value: Any) -> Any:
        if self.queryset is not None and isinstance(value, list | tuple):
            for pk in value:
                if not storable_id(pk, self.queryset.model):
                    raise forms.ValidationError(
                        self.error_messages["invalid_choice"], code="invalid_choice", params={"value": pk}
                    )
        return super().clean(value)


class DurationField(forms.CharField):
    """Typed the way people write durations: 30m, 4h, 2d, 1d 12h; at most ten years."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.TextInput(attrs={"placeholder": "e.g. 1d 12h", "size": 10}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return format_duration(value) if isinstance(value, timedelta) else value

    def to_python(self, value: Any) -> timedelta | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class PolicyForm(forms.ModelForm):
    revision = forms.IntegerField(
        widget=forms.HiddenInput,
        required=False,
        min_value=0,
        max_value=2**31 - 1,  # the column's range: beyond it the lookup would overflow
        error_messages={
            "invalid": "This form's revision is not a number: reload the page.",
            "min_value": "This form's revision is out of range: reload the page.",
            "max_value": "This form's revision is out of range: reload the page.",
        },
    )

    class Meta:
        model = Policy
        fields = [
            "name", "slug", "description", "final_action", "rejection_is_veto", "is_default", "inbox_fields",
            "no_bulk_decisions", "claim_for",
        ]  # fmt: skip
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        labels = {
            "rejection_is_veto": "Any rejection ends the request",
            "is_default": "Default policy",
            "inbox_fields": "Inbox columns",
            "no_bulk_decisions": "No bulk decisions",
            "claim_for": "“I'm on it” holds for",
        }
        field_classes = {"claim_for": DurationField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["claim_for"].required = False  # empty: the default hour

    def clean_claim_for(self) -> timedelta:
        value = self.cleaned_data.get("claim_for") or DEFAULT_CLAIM_FOR
        if not timedelta(minutes=1) <= value <= timedelta(days=30):
            raise forms.ValidationError("A claim holds between one minute and 30 days.")
        return value


class LevelForm(forms.Form):
    groups = IdsChoiceField(
        queryset=Group.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple
    )
    users = IdsChoiceField(
        queryset=User.objects.filter(is_active=True).order_by("username"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 4}),
    )
    timeout = DurationField(label="Escalate after")
    reminder = DurationField(label="Remind every", required=False)
    required_approvals = forms.IntegerField(min_value=1, max_value=50, initial=1, label="Approvals needed")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.cleaned_data.get("DELETE"):
            return data
        groups, users = list(data.get("groups") or []), list(data.get("users") or [])
        if not groups and not users and (data.get("timeout") or self.has_changed()):
            raise forms.ValidationError("Choose at least one group or user for this level.")
        for name, message in level_timing_errors(data.get("timeout"), data.get("reminder")).items():
            self.add_error(name, message)
        required = data.get("required_approvals") or 1
        if required > 1 and (groups or users):
            available = eligible_count(groups, users)
            if required > available:
                self.add_error(
                    "required_approvals", f"Needs {required} approvals but only {available} people can approve."
                )
        return data


class BaseLevelFormSet(forms.BaseFormSet):
    def clean(self) -> None:
        if any(self.errors):
            return
        if not self.levels():
            raise forms.ValidationError("A policy needs at least one level.")

    def levels(self) -> list[LevelData]:
        result = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", {})
            if not data or data.get("DELETE") or not (data.get("groups") or data.get("users")):
                continue
            result.append(
                LevelData(
                    groups=list(data["groups"]),
                    users=list(data["users"]),
                    timeout=data["timeout"],
                    reminder=data.get("reminder"),
                    required_approvals=data.get("required_approvals") or 1,
                )
            )
        return result


LevelFormSet: type[BaseLevelFormSet] = forms.formset_factory(  # type: ignore[assignment]
    LevelForm, formset=BaseLevelFormSet, extra=0, can_delete=True, max_num=10
)


def level_initial(policy: Policy) -> list[dict[str, Any]]:
    return [
        {
            "groups": list(level.groups.all()),
            "users": list(level.users.all()),
            "timeout": level.timeout,
            "reminder": level.reminder_interval,
            "required_approvals": level.required_approvals,
        }
        for level in policy.levels.prefetch_related("groups", "users")
    ]


class RoutingRuleForm(forms.ModelForm):
    class Meta:
        model = RoutingRule
        fields = ["order", "request_type", "field", "operator", "value", "policy"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["policy"].queryset = Policy.objects.filter(retired_at=None)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("field") and data.get("value", "") == "" and data.get("operator") != "==":
            self.add_error("value", "Give a value to compare with.")
        if self.errors:
            return data
        proposed = RoutingRule(**{k: v for k, v in data.items() if k in self.Meta.fields}, enabled=True)
        others = list(RoutingRule.objects.filter(enabled=True).exclude(pk=self.instance.pk or 0))
        rules = sorted([*others, proposed], key=lambda rule: (rule.order, rule.pk or 10**9))
        for rule, earlier in shadowed_rules(rules):
            if rule is proposed:
                raise forms.ValidationError(f"This rule can never match: “{earlier.describe()}” always comes first.")
            if earlier is proposed:
                raise forms.ValidationError(f"This rule would make “{rule.describe()}” unreachable; change its order.")
        return data


class RoutingPreviewForm(forms.Form):
    request_type = forms.CharField(required=False, max_length=100)
    payload = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text='JSON, e.g. {"amount": 12000}'
    )

    def clean_payload(self) -> dict[str, Any]:
        try:
            return json_from_text(self.cleaned_data.get("payload") or "", "payload")
        except InputError as exc:
            raise forms.ValidationError(str(exc)) from None


class DelegationForm(forms.ModelForm):
    class Meta:
        model = Delegation
        fields = ["user", "delegate", "starts_on", "ends_on", "reason"]
        widgets = {
            "starts_on": forms.DateInput(attrs={"type": "date"}),
            "ends_on": forms.DateInput(attrs={"type": "date"}),
        }

    def __init__(self, *args: Any, for_user: User, may_choose_user: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.may_choose_user = may_choose_user
        active = User.objects.filter(is_active=True).order_by("username")
        self.fields["delegate"].queryset = active.exclude(pk=for_user.pk) if not may_choose_user else active  # type: ignore[attr-defined]
        self.fields["user"].queryset = active  # type: ignore[attr-defined]
        if not may_choose_user:
            self.fields["user"].initial = for_user
            self.fields["user"].disabled = True
            self.fields["delegate"].help_text = "Someone who shares one of your approver groups."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("starts_on") and data.get("ends_on") and data["ends_on"] < data["starts_on"]:
            self.add_error("ends_on", "The last day comes after the first.")
        if data.get("user") and data.get("user") == data.get("delegate"):
            self.add_error("delegate", "Choose someone else as the delegate.")
        elif data.get("user") and data.get("delegate") and not self.may_choose_user:
            refusal = delegate_refusal(user=data["user"], delegate=data["delegate"])
            if refusal:
                self.add_error("delegate", refusal)
        return data
