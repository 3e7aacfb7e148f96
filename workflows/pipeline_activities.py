"""Activities of the reference deployment pipeline (workflows/pipeline.py).

They touch no database and no outside system: each failure they show the
monitoring app is chosen by the pipeline's input, and is deterministic
(``activity.info().attempt`` and the heartbeat details decide, not a clock or a
random number), so tests and simulations get the same retries every time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from workflows.types import BuildInput, RolloutInput, RolloutResult, StepResult, VerifyInput

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


ALL: list[Callable[..., Any]] = [build_artifact, verify_artifact, roll_out]
