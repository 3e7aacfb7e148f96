from django.contrib import admin
from django.http import HttpRequest

from monitoring.models import ActionLog


@admin.register(ActionLog)
class ActionLogAdmin(admin.ModelAdmin):
    """The audit log is read-only, here as everywhere."""

    list_display = ["created_at", "username", "action", "workflow_id", "ok", "message"]
    list_filter = ["action", "ok"]
    search_fields = ["workflow_id", "username", "reason"]
    readonly_fields = [f.name for f in ActionLog._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
