"""Histories recorded from earlier releases replay on the current workflow code.

Recorded with ``RECORD_HISTORIES=1 pytest tests/workflows/test_approval_workflow.py``
(the first set on the release before escalation rules became editable) and
``tests/workflows/test_reference_workflows.py`` (the saga, the budget, the campaign) and
``tests/workflows/test_pipeline_workflow.py`` (the ``pipeline-*`` files). A change that breaks
replay breaks every workflow still running in production:
put new logic behind ``workflow.patched()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.support.temporal import HISTORIES as HISTORY_DIR
from workflows.worker import WORKFLOWS

HISTORIES = sorted(HISTORY_DIR.glob("*.json"))


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 20
    assert len([path for path in HISTORIES if path.name.startswith("pipeline-")]) >= 5


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=list(WORKFLOWS)).replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
