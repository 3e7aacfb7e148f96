"""Reference ``DeploymentPipelineWorkflow``: retries, a final failure, a human gate and a
resumable long activity, for the monitoring app to show. Deterministic workflow code only.

Input (one JSON object, parsed by hand so a wrong field is named):
``{"deployment_id", "service", "version", "requested_by", "flaky_failures" (default 2),
"fail_with" ("" or "InvalidArtifact"), "rollout_seconds" (default 5), "policy"}``.

build (fails ``flaky_failures`` times, retried with exponential backoff) -> verify (fails
for good with ``InvalidArtifact``) -> approval (a child ``ApprovalWorkflow``; a rejection,
expiry or cancellation stops the pipeline) -> rollout (heartbeats every second; a retry
resumes from the last heartbeat) -> a ``DeploymentResult``. Query ``progress``.

Its activities (below the workflow) touch no database and no outside system:
each failure they show the monitoring app is chosen by the pipeline's input,
and is deterministic (``activity.info().attempt`` and the heartbeat details
decide, not a clock or a random number), so tests and simulations get the same
retries every time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)

from workflows.parsing import (
    InputError,
    json_object,
    known_keys,
    number,
    string_field,
    whole_number,
)
from workflows.reference.common import parse_input, root_cause
from workflows.types import ApprovalResult

FAIL_WITH = ("", "InvalidArtifact")
MAX_ROLLOUT_SECONDS = 86_400
MAX_FLAKY_FAILURES = 20  # 10 or more fail the build for good (BUILD_RETRY gives up after 10 attempts)
DEPLOYMENT_FIELDS = (
    "deployment_id",
    "service",
    "version",
    "requested_by",
    "flaky_failures",
    "fail_with",
    "rollout_seconds",
    "policy",
)


@dataclass(frozen=True)
class DeploymentInput:
    deployment_id: str
    service: str
    version: str
    requested_by: str = ""
    flaky_failures: int = 2  # the build fails this many times before it succeeds
    fail_with: str = ""  # "InvalidArtifact": verification fails for good
    rollout_seconds: float = 5
    policy: str = ""  # escalation policy of the human gate; the default policy when empty

    @classmethod
    def parse(cls, raw: Any) -> DeploymentInput:
        raw = json_object(raw)
        known_keys(raw, DEPLOYMENT_FIELDS)
        flaky = whole_number(raw, "flaky_failures", default=2, minimum=0, maximum=MAX_FLAKY_FAILURES)
        fail_with = raw.get("fail_with", "")
        if fail_with is None:
            fail_with = ""
        if fail_with not in FAIL_WITH:
            raise InputError("fail_with", "must be empty or 'InvalidArtifact'")
        rollout = number(raw, "rollout_seconds", default=5, minimum=0, maximum=MAX_ROLLOUT_SECONDS)
        return cls(
            deployment_id=string_field(raw, "deployment_id", required=True, max_length=100),
            service=string_field(raw, "service", required=True, max_length=100),
            version=string_field(raw, "version", required=True, max_length=100),
            requested_by=string_field(raw, "requested_by", required=False, max_length=150),
            flaky_failures=flaky,
            fail_with=fail_with,
            rollout_seconds=rollout,
            policy=string_field(raw, "policy", required=False, max_length=100),
        )


@dataclass(frozen=True)
class BuildInput:
    deployment_id: str
    service: str
    version: str
    flaky_failures: int = 0


@dataclass(frozen=True)
class VerifyInput:
    deployment_id: str
    artifact: str
    fail_with: str = ""


@dataclass(frozen=True)
class StepResult:
    """What a build or verify attempt reports: the attempt that succeeded."""

    attempt: int
    detail: str = ""


@dataclass(frozen=True)
class RolloutInput:
    deployment_id: str
    artifact: str
    seconds: float


@dataclass(frozen=True)
class RolloutResult:
    attempt: int
    resumed_from: float  # seconds of rollout already done (from heartbeat details) when this attempt began
    seconds: float


@dataclass(frozen=True)
class PipelineStep:
    name: str  # build | verify | approval | rollout
    status: str = "pending"  # pending | running | done | failed | skipped
    attempts: int = 0
    detail: str = ""


@dataclass(frozen=True)
class DeploymentResult:
    deployment_id: str
    service: str
    version: str
    outcome: str  # deployed | rejected | expired | cancelled (the gate's outcome when it stopped the pipeline)
    steps: list[PipelineStep]
    approved_by: str | None = None
    approval: ApprovalResult | None = None


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
        data = self._input = parse_input(DeploymentInput.parse, raw)

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
            cause = root_cause(exc)
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
            cause = root_cause(exc)
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


# ---- activities ----

ROLLOUT_TICK_SECONDS = 1.0


class FlakyBuild(Exception):
    """A transient build failure (a runner lost, a registry timeout): the next attempt may pass."""


class InvalidArtifact(Exception):
    """The artifact is broken. Raised as a plain exception: Temporal names the failure after
    the class, and the pipeline's retry policy lists ``InvalidArtifact`` as non-retryable."""


@activity.defn(name="build_artifact")
def build_artifact(data: BuildInput) -> StepResult:
    attempt = activity.info().attempt
    if attempt <= data.flaky_failures:
        raise FlakyBuild(
            f"build of {data.service} {data.version} failed on attempt {attempt} "
            f"(flaky: fails {data.flaky_failures} time(s) before it succeeds)"
        )
    return StepResult(attempt=attempt, detail=f"{data.service}:{data.version}")


@activity.defn(name="verify_artifact")
def verify_artifact(data: VerifyInput) -> StepResult:
    attempt = activity.info().attempt
    if data.fail_with == "InvalidArtifact":
        raise InvalidArtifact(f"artifact {data.artifact} failed verification on attempt {attempt}: checksum mismatch")
    return StepResult(attempt=attempt, detail="checksum and signature verified")


def resumed_progress(details: Sequence[Any]) -> float:
    """Seconds of rollout done according to the last heartbeat; 0 without one."""
    if not details or not isinstance(details[-1], dict):
        return 0.0
    done = details[-1].get("done_seconds")
    if isinstance(done, bool) or not isinstance(done, int | float) or done < 0:
        return 0.0
    return float(done)


@activity.defn(name="roll_out")
def roll_out(data: RolloutInput) -> RolloutResult:
    """Roll out for ``seconds``, heartbeating the progress every tick. A retry (after a
    failure, a heartbeat timeout or a worker that went away) starts from the progress
    of the last heartbeat the server recorded, not from zero."""
    info = activity.info()
    done = resumed_from = min(resumed_progress(info.heartbeat_details), data.seconds)
    while done < data.seconds:
        if activity.is_cancelled():
            raise CancelledError(f"rollout of {data.artifact} cancelled at {done:g}s")
        if activity.is_worker_shutdown():
            # Fail this attempt now, so the next worker resumes from the last heartbeat
            # instead of waiting for the heartbeat timeout.
            raise ApplicationError(f"worker shutting down at {done:g}s of the rollout", type="WorkerShutdown")
        time.sleep(min(ROLLOUT_TICK_SECONDS, data.seconds - done))
        done = round(min(done + ROLLOUT_TICK_SECONDS, data.seconds), 3)
        activity.heartbeat({"done_seconds": done, "percent": round(100 * done / data.seconds)})
    return RolloutResult(attempt=info.attempt, resumed_from=resumed_from, seconds=data.seconds)


ACTIVITIES: list[Callable[..., Any]] = [build_artifact, verify_artifact, roll_out]
