"""Reference ``DeploymentPipelineWorkflow``: retries, a final failure, a human gate and a
resumable long activity, for the monitoring app to show. Deterministic workflow code only.

Input (one JSON object, parsed by hand so a wrong field is named):
``{"deployment_id", "service", "version", "requested_by", "flaky_failures" (default 2),
"fail_with" ("" or "InvalidArtifact"), "rollout_seconds" (default 5), "policy"}``.

build (fails ``flaky_failures`` times, retried with exponential backoff) -> verify (fails
for good with ``InvalidArtifact``) -> approval (a child ``ApprovalWorkflow``; a rejection,
expiry or cancellation stops the pipeline) -> rollout (heartbeats every second; a retry
resumes from the last heartbeat) -> a ``DeploymentResult``. Query ``progress``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, FailureError

from workflows.types import (
    ApprovalResult,
    BuildInput,
    DeploymentInput,
    DeploymentResult,
    InputError,
    PipelineStep,
    RolloutInput,
    RolloutResult,
    StepResult,
    VerifyInput,
)

STEP_TIMEOUT = timedelta(seconds=30)
# A flaky build heals by itself: retry with exponential backoff (1s, 2s, 4s, 8s, then
# every 10s), but not forever, so a build that never passes fails the pipeline.
BUILD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=10,
)
# A broken artifact stays broken however often it is checked: retrying could only delay
# the failure. The activity raises a plain ``InvalidArtifact`` exception and this policy,
# which knows what the step means, declares that type final.
VERIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["InvalidArtifact"],
)
ROLLOUT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
# Heartbeats come every second; three missed ones mean the worker is gone, and the retry
# resumes from the last recorded progress.
ROLLOUT_HEARTBEAT = timedelta(seconds=3)
STEPS = ("build", "verify", "approval", "rollout")


@workflow.defn(name="DeploymentPipelineWorkflow")
class DeploymentPipelineWorkflow:
    def __init__(self) -> None:
        self._input: DeploymentInput | None = None
        self._steps = {name: PipelineStep(name) for name in STEPS}
        self._outcome = ""

    @workflow.run
    async def run(self, raw: Any) -> DeploymentResult:
        try:
            data = self._input = DeploymentInput.parse(raw)
        except InputError as exc:
            raise ApplicationError(f"invalid input: {exc}", exc.field, type="InvalidInput", non_retryable=True)

        build = await self._step(
            "build",
            "build_artifact",
            BuildInput(data.deployment_id, data.service, data.version, data.flaky_failures),
            StepResult,
            BUILD_RETRY,
        )
        artifact = build.detail
        await self._step(
            "verify",
            "verify_artifact",
            VerifyInput(data.deployment_id, artifact, data.fail_with),
            StepResult,
            VERIFY_RETRY,
        )

        self._set("approval", status="running", attempts=1)
        approval = await self._ask_approval(data, artifact, build.attempt)
        self._set("approval", status="done" if approval.outcome == "approved" else "failed", detail=approval.outcome)
        if approval.outcome != "approved":
            self._set("rollout", status="skipped", detail=f"approval {approval.outcome}")
            return self._finish(data, approval.outcome, approval)

        rollout = await self._step(
            "rollout",
            "roll_out",
            RolloutInput(data.deployment_id, artifact, data.rollout_seconds),
            RolloutResult,
            ROLLOUT_RETRY,
            # Each attempt may have to do the whole rollout, plus room for a slow worker.
            start_to_close=timedelta(seconds=data.rollout_seconds * 2 + 30),
            heartbeat=ROLLOUT_HEARTBEAT,
        )
        self._set("rollout", detail=f"resumed from {rollout.resumed_from:g}s of {rollout.seconds:g}s")
        return self._finish(data, "deployed", approval)

    async def _step(
        self,
        name: str,
        activity: str,
        argument: Any,
        result_type: type[Any],
        retry: RetryPolicy,
        *,
        start_to_close: timedelta = STEP_TIMEOUT,
        heartbeat: timedelta | None = None,
    ) -> Any:
        self._set(name, status="running")
        try:
            result = await workflow.execute_activity(
                activity,
                argument,
                result_type=result_type,
                start_to_close_timeout=start_to_close,
                heartbeat_timeout=heartbeat,
                retry_policy=retry,
            )
        except ActivityError as exc:
            # Fail the pipeline with the step's own error type (InvalidArtifact, FlakyBuild
            # after the last attempt...), so the monitoring app shows what went wrong.
            cause = _root(exc)
            error_type = cause.type if isinstance(cause, ApplicationError) and cause.type else type(cause).__name__
            self._set(name, status="failed", detail=str(cause))
            for later in STEPS[STEPS.index(name) + 1 :]:
                self._set(later, status="skipped", detail=f"{name} failed")
            raise ApplicationError(f"{name} failed: {cause}", name, type=error_type, non_retryable=True) from exc
        self._set(name, status="done", attempts=result.attempt, detail=getattr(result, "detail", ""))
        return result

    async def _ask_approval(self, data: DeploymentInput, artifact: str, build_attempts: int) -> ApprovalResult:
        request: dict[str, Any] = {
            "request_id": f"deploy-{data.deployment_id}",
            "title": f"Deploy {data.service} {data.version}",
            "description": f"Roll out {artifact} ({data.rollout_seconds:g}s rollout).",
            "requested_by": data.requested_by,
            "payload": {
                "deployment_id": data.deployment_id,
                "service": data.service,
                "version": data.version,
                "artifact": artifact,
                "build_attempts": build_attempts,
                "rollout_seconds": data.rollout_seconds,
            },
        }
        if data.policy:
            request["policy"] = data.policy
        try:
            return await workflow.execute_child_workflow(
                "ApprovalWorkflow",
                request,
                id=f"approval-deploy-{data.deployment_id}",
                task_queue=workflow.info().task_queue,
                result_type=ApprovalResult,
                # If the pipeline ends first (its execution timeout, a termination), the gate is
                # cancelled rather than terminated: it closes its task, so no inbox keeps it.
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
            )
        except ChildWorkflowError as exc:
            cause = _root(exc)
            self._set("approval", status="failed", detail=str(cause))
            self._set("rollout", status="skipped", detail="approval failed")
            if isinstance(cause, ApplicationError) and cause.type == "InvalidInput":
                # An unknown or retired policy is the pipeline's bad input: name the field.
                raise ApplicationError(
                    f"invalid input: {cause.message}", *cause.details, type="InvalidInput", non_retryable=True
                ) from exc
            raise

    def _set(self, name: str, **changes: Any) -> None:
        self._steps[name] = replace(self._steps[name], **changes)

    def _finish(self, data: DeploymentInput, outcome: str, approval: ApprovalResult) -> DeploymentResult:
        self._outcome = outcome
        return DeploymentResult(
            deployment_id=data.deployment_id,
            service=data.service,
            version=data.version,
            outcome=outcome,
            steps=list(self._steps.values()),
            approved_by=approval.decided_by if approval.outcome == "approved" else None,
            approval=approval,
        )

    @workflow.query(name="progress")
    def progress(self) -> dict[str, Any]:
        data = self._input
        running = [step.name for step in self._steps.values() if step.status == "running"]
        return {
            "deployment_id": data.deployment_id if data else "",
            "service": data.service if data else "",
            "version": data.version if data else "",
            "current": running[0] if running else "",
            "outcome": self._outcome,
            "steps": [asdict(step) for step in self._steps.values()],
        }


def _root(exc: BaseException) -> BaseException:
    """The innermost cause: the activity's or the child's own error."""
    while isinstance(exc, FailureError) and exc.cause is not None:
        exc = exc.cause
    return exc
