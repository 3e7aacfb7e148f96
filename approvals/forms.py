from __future__ import annotations

from typing import Any

from django import forms

from approvals.models import Decision, Policy

PAYLOAD_ROWS = 5


class DecisionForm(forms.Form):
    choice = forms.ChoiceField(choices=Decision.Choice.choices)
    comment = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("choice") == Decision.Choice.REJECT and not (data.get("comment") or "").strip():
            self.add_error("comment", "Rejecting needs a reason.")
        return data


class RequestForm(forms.Form):
    title = forms.CharField(max_length=300)
    description = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 4}))
    policy = forms.ModelChoiceField(
        queryset=Policy.objects.all(),
        required=False,
        empty_label="Default policy",
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
