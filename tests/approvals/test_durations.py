from datetime import timedelta

import pytest

from approvals.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", timedelta(minutes=30)), ("4h", timedelta(hours=4)), ("2d", timedelta(days=2)),
     ("1d 12h", timedelta(days=1, hours=12)), ("1D12H", timedelta(days=1, hours=12)), ("1w", timedelta(days=7)),
     (" 90s ", timedelta(seconds=90))],
)  # fmt: skip
def test_durations_are_read_the_way_people_write_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "4", "1.5h", "-3h", "0m", "3 hours"])
def test_anything_else_is_refused_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [(timedelta(days=1, hours=12), "1d 12h"), (timedelta(minutes=30), "30m"), (timedelta(days=14), "2w"),
     (timedelta(days=10), "10d"), (90, "1m 30s"), (None, "")],
)  # fmt: skip
def test_durations_are_shown_the_same_way(value: object, text: str) -> None:
    assert format_duration(value) == text  # type: ignore[arg-type]
    if text:
        assert format_duration(parse_duration(text)) == text
