"""The running test, so helpers that start something slow can check it carries the marker that
keeps it out of ``make test-fast`` (the conftest hooks set and clear it)."""

from __future__ import annotations

import pytest

# Fixtures that start the Temporal dev server (or need one) and those that drive Chromium.
INTEGRATION_FIXTURES = frozenset(
    {"dev_server", "own_server", "temporal_settings", "own_settings", "worker", "sample_worker"}
)
BROWSER_FIXTURES = frozenset({"browser", "page", "tokyo_page"})
# The time-skipping test server (tests/workflows/conftest.py): a test using it is marked
# "timeskipping" by the collection hook, so tests on other branches need not know the marker.
TIMESKIPPING_FIXTURES = frozenset({"env"})

_running: list[pytest.Item] = []


def set_running(item: pytest.Item | None) -> None:
    _running[:] = [item] if item is not None else []


def fixtures_of(item: pytest.Item) -> set[str]:
    """The fixtures a test uses; a parametrize argument that happens to share a fixture's name
    (``page`` as in "which page") is not one."""
    callspec = getattr(item, "callspec", None)
    return set(getattr(item, "fixturenames", ())) - set(callspec.params if callspec else ())


def uses_time_skipping(item: pytest.Item) -> bool:
    return bool(fixtures_of(item) & TIMESKIPPING_FIXTURES)


def missing_markers(item: pytest.Item) -> tuple[list[str], list[str]]:
    """What a test lacks, judged by the fixtures it uses ('integration' and/or 'browser'), and
    the fixtures that say so."""
    names = fixtures_of(item)
    missing, because = [], set()
    if names & INTEGRATION_FIXTURES and not item.get_closest_marker("integration"):
        missing.append("integration")
        because |= names & INTEGRATION_FIXTURES
    if names & BROWSER_FIXTURES and not item.get_closest_marker("browser"):
        missing.append("browser")
        because |= names & BROWSER_FIXTURES
    return missing, sorted(because)


def require_marker(name: str, starting: str) -> None:
    """Fail the running test if it starts ``starting`` without the ``name`` marker, so the fast loop
    (``-m "not integration and not browser"``) never quietly starts one."""
    if _running and not _running[0].get_closest_marker(name):
        pytest.fail(f"{_running[0].nodeid} starts {starting}: mark it @pytest.mark.{name}", pytrace=False)
