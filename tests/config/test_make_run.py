"""`make run` as a newcomer runs it: up, ready, demo tasks, Ctrl-C, and up again with tasks intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.support.stack import Stack, get

pytestmark = pytest.mark.integration
ROOT = Path(settings.BASE_DIR)


PENDING = "from approvals.models import ApprovalTask as T; print(T.objects.filter(status='pending').count())"


def test_two_stacks_run_side_by_side_stop_on_ctrl_c_and_resume(tmp_path: Path) -> None:
    first, second = Stack(tmp_path / "one"), Stack(tmp_path / "two")
    try:
        first.start()
        second.start()
        for stack in (first, second):
            status, body = get(f"http://127.0.0.1:{stack.port}/readyz")
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            log = stack.output()
            assert f"Tollgate is up: http://127.0.0.1:{stack.port}/" in log
            assert "alice" in log and "tollgate-demo" in log
            assert f"Temporal UI:     http://127.0.0.1:{int(stack.temporal.rsplit(':', 1)[1]) + 1000}" in log
            login = get(f"http://127.0.0.1:{stack.port}/accounts/login/")
            assert login[0] == 200 and "Log in" in login[1]
        deadline = time.monotonic() + 30
        while int(first.manage("shell", "--no-imports", "-c", PENDING)) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert int(first.manage("shell", "--no-imports", "-c", PENDING)) == 4

        # make itself dies of the SIGINT, as after any Ctrl-C, once its recipe has stopped
        assert first.ctrl_c() in (0, -signal.SIGINT)
        log = first.output()
        assert "stopping web, worker, then Redis and Temporal" in log and "worker stopped" in log
        with pytest.raises(OSError):
            get(f"http://127.0.0.1:{first.port}/healthz")
        assert get(f"http://127.0.0.1:{second.port}/healthz")[0] == 200  # the other stack is untouched

        first.start()  # resumes: same files, no second batch of demo requests
        assert int(first.manage("shell", "--no-imports", "-c", PENDING)) == 4
        assert first.output().count("started 4 demo requests") == 1
    finally:
        for stack in (first, second):
            if stack.proc and stack.proc.poll() is None:
                stack.ctrl_c()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DJANGO_DEBUG", "maybe"),
        ("TEMPORAL_ADDRESS", "no-port"),
        ("PORT", "eighty"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_CONN_MAX_AGE", "forever"),
        ("TOLLGATE_WORKFLOW_CACHE_SIZE", "-1"),
        ("MONITORING_ATTEMPTS_PER_REFRESH", "many"),
    ],  # fmt: skip
)
def test_a_wrong_setting_fails_at_start_with_one_line_naming_it(variable: str, value: str) -> None:
    env = {**os.environ, "DJANGO_SECRET_KEY": "test-only-key", variable: value}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tollgate: configuration error: ") and variable in lines[0]


def test_wrong_settings_fail_the_asgi_app_too(tmp_path: Any) -> None:
    env = {**os.environ, "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": ""}
    result = subprocess.run(
        [sys.executable, "-c", "import config.asgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr
