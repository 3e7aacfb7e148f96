"""Histories recorded from earlier releases replay on the current ApprovalWorkflow.

Recorded with ``RECORD_HISTORIES=1 pytest tests/workflows/test_approval_workflow.py``
(the first set on the release before escalation rules became editable). A
change that breaks replay breaks every approval still running in production:
put new logic behind ``workflow.patched()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.workflows import ApprovalWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 20


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=[ApprovalWorkflow]).replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
