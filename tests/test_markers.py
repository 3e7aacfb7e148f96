"""The fast loop stays fast: a test that starts the Temporal dev server or Chromium without its
marker fails at once, before anything starts (tests/conftest.py's setup hook and
tests.support.markers.require_marker), so ``make test-fast`` never quietly runs one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

CONFTEST = "from tests.browser.conftest import *  # noqa: F403\nfrom tests.conftest import *  # noqa: F403\n"
UNMARKED = """
import pytest


def test_uses_the_session_dev_server(dev_server):
    pass


def test_uses_a_worker(worker):
    pass


def test_starts_a_dev_server_itself(tmp_path):
    from tests.support.temporal import DevServer

    DevServer(tmp_path).start()


def test_starts_make_run_itself(tmp_path):
    from tests.support.stack import Stack

    Stack(tmp_path / "var").start()


def test_drives_a_page(page):
    pass


@pytest.mark.integration
def test_marked_but_a_browser_too(page):
    pass


@pytest.mark.parametrize("page", ["inbox"])
def test_a_parameter_named_page_is_no_browser(page):
    pass


def test_a_unit_test_runs():
    pass
"""


def test_unmarked_server_and_browser_tests_fail_before_starting_anything(tmp_path: Path) -> None:
    # A test folder of its own (a file under tests/ would be collected by every run), with the
    # suite's fixtures and hooks through a conftest that imports them.
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_unmarked.py").write_text(UNMARKED)
    root = Path(__file__).resolve().parents[1]
    began = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(root / "pyproject.toml"), "--rootdir", str(tmp_path),
         str(tmp_path / "test_unmarked.py")],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = run.stdout
    # Fixtures are refused at setup (errors), helpers when called (failures); the unit tests run.
    assert "2 failed, 2 passed, 4 errors" in out, out
    for name, message in [
        ("test_uses_the_session_dev_server", "uses dev_server: mark it @pytest.mark.integration"),
        ("test_uses_a_worker", "uses dev_server, temporal_settings, worker: mark it @pytest.mark.integration"),
        ("test_starts_a_dev_server_itself", "starts the Temporal dev server: mark it @pytest.mark.integration"),
        ("test_starts_make_run_itself", "starts make run: mark it @pytest.mark.integration"),
        ("test_drives_a_page", "uses browser, page: mark it @pytest.mark.browser"),
        ("test_marked_but_a_browser_too", "uses browser, page: mark it @pytest.mark.browser"),
    ]:
        assert f"test_unmarked.py::{name} {message}" in out, (name, out)
    # Nothing was started: a dev server alone takes seconds, make run a minute.
    assert time.monotonic() - began < 60
