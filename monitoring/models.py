"""The monitoring snapshot: one row per workflow run seen in Temporal visibility.

Visibility is rate-limited and its counts are exact ``COUNT(*)`` queries, so
pages never fan out into Temporal calls; they aggregate these rows instead. A
Temporal schedule (``MonitoringSnapshotWorkflow``) keeps them current, reading
only what closed since the watermark plus a bounded set of running runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class Execution(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Cancelled"
        TERMINATED = "terminated", "Terminated"
        CONTINUED_AS_NEW = "continued_as_new", "Continued as new"
        TIMED_OUT = "timed_out", "Timed out"

    workflow_id = models.CharField(max_length=1000)
    run_id = models.CharField(max_length=64)
    workflow_type = models.CharField(max_length=1000, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, db_index=True)
    task_queue = models.CharField(max_length=1000, blank=True)
    start_time = models.DateTimeField()
    close_time = models.DateTimeField(null=True, blank=True, db_index=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds from start to close.")
    history_length = models.PositiveIntegerField(default=0)
    failure_message = models.TextField(blank=True)
    # From bounded describes of running runs: pending activities and when the
    # history last grew, for the retries and stuck views.
    pending_activities = models.JSONField(default=list, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    workflow_task_attempt = models.PositiveIntegerField(
        default=0, help_text="Attempt of the pending workflow task: above 1, workflow tasks keep failing."
    )
    described_at = models.DateTimeField(null=True, blank=True)
    # What the last describe found the run waiting on, for the stuck and pending pages: pending
    # children, and for an idle or failing run its unfired timers, its workflow task's last failure
    # and the signals and updates its type declares (visibility._read_waiting); {} until described.
    waiting = models.JSONField(default=dict, blank=True)
    # Closed runs only, read from their histories a few per refresh: per activity type, how many
    # activity executions needed how many attempts ({"charge": {"1": 4, "3": 1}}); null until read.
    activity_attempts = models.JSONField(null=True, blank=True)
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow_id", "run_id"], name="unique_execution_run")]
        indexes = [models.Index(fields=["workflow_type", "close_time"], name="execution_type_close")]
        permissions = [
            ("view_monitoring", "Can see the monitoring pages"),
            ("act_on_workflows", "Can cancel, terminate and signal workflows"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_type} {self.workflow_id}/{self.run_id}"


class SnapshotState(models.Model):
    """A single row: how far the snapshot has read, and how the last refresh went."""

    close_watermark = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_closed_read = models.PositiveIntegerField(default=0)
    last_running_read = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False, help_text="The last refresh hit its row limit.")

    def __str__(self) -> str:
        return f"snapshot up to {self.close_watermark}"

    @classmethod
    def current(cls) -> SnapshotState:
        state, _ = cls.objects.get_or_create(pk=1)
        return state

    def age(self, now: datetime | None = None) -> timedelta | None:
        if self.refreshed_at is None:
            return None
        return (now or timezone.now()) - self.refreshed_at


class WindowHealth(models.Model):
    """The overview's per-type rows for one preset window (1h, 24h, 7d), as the refresh computed them.

    Percentiles over a window sort every completed run in it, so they cost more with more runs: the
    refresh (a Temporal activity, every 30 s) pays that once, and a page view reads one row.
    """

    window = models.CharField(max_length=10, unique=True)
    snapshot_at = models.DateTimeField(help_text="The refresh that computed them.")
    rows = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"{self.window} at {self.snapshot_at}"


class ActionLog(models.Model):
    """Who did what to which workflow, and what Temporal answered."""

    class Action(models.TextChoices):
        CANCEL = "cancel", "Cancel"
        TERMINATE = "terminate", "Terminate"
        SIGNAL = "signal", "Signal"
        RESET = "reset", "Reset"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=20, choices=Action.choices)
    workflow_id = models.CharField(max_length=1000)
    run_id = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ok = models.BooleanField(default=False)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.username} {self.action} {self.workflow_id}"
