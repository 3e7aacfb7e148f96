from typing import Any

from django.contrib import admin
from django.contrib.auth.models import User
from django.http import HttpRequest

from approvals.models import ApprovalTask, AuditEntry, Decision, Policy, PolicyLevel
from approvals.policies import save_policy_version


class PolicyLevelInline(admin.TabularInline):
    model = PolicyLevel
    extra = 1
    filter_horizontal = ["groups", "users"]


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "final_action", "is_default"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [PolicyLevelInline]

    readonly_fields = ["revision", "retired_at"]

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        if change:  # an editor form opened before this save must not overwrite it
            obj.revision += 1
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Saves here are versions too, like the editor's (/approvals/policies/).
        super().save_related(request, form, formsets, change)
        # The admin site lets staff users in only: never anonymous.
        assert isinstance(request.user, User)
        save_policy_version(policy=form.instance, user=request.user)


class DecisionInline(admin.TabularInline):
    model = Decision
    extra = 0
    can_delete = False
    readonly_fields = [
        "decision_id",
        "user",
        "choice",
        "comment",
        "created_at",
        "delivered_at",
        "result",
        "result_reason",
    ]


class AuditInline(admin.TabularInline):
    model = AuditEntry
    extra = 0
    can_delete = False
    readonly_fields = ["at", "kind", "actor", "level", "message"]
    exclude = ["event_key"]


@admin.register(ApprovalTask)
class ApprovalTaskAdmin(admin.ModelAdmin):
    """Read-only: the workflow owns a task's state; change it through Temporal."""

    list_display = ["title", "status", "level", "due_at", "requested_by", "created_at"]
    list_filter = ["status", "policy"]
    search_fields = ["title", "request_id", "workflow_id"]
    inlines = [DecisionInline, AuditInline]

    def has_change_permission(self, request: HttpRequest, obj: ApprovalTask | None = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
