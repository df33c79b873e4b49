import pytest

from batchyard.stream.window import Window, due_at, first_window, is_due, next_window, to_ms, window_after

MIN = 60_000


@pytest.mark.parametrize("scheduled, size, lateness, expected", [
    (10 * MIN, MIN, 0, Window(9 * MIN, 10 * MIN)),             # on a boundary: the window just ended
    (10 * MIN + 59_999, MIN, 0, Window(9 * MIN, 10 * MIN)),    # a late start owes the same window
    (10 * MIN + 5_000, MIN, 10_000, Window(8 * MIN, 9 * MIN)),  # lateness not yet over for 9..10
    (10 * MIN + 10_000, MIN, 10_000, Window(9 * MIN, 10 * MIN)),
    (3600_000 * 5 + 1, 3600_000, 0, Window(3600_000 * 4, 3600_000 * 5)),
])
def test_first_window_comes_from_the_scheduled_start(scheduled, size, lateness, expected):
    window = first_window(scheduled, size, lateness)
    assert window == expected
    assert is_due(window, scheduled, lateness)


@pytest.mark.parametrize("watermark, expected", [
    (0, Window(0, MIN)), (9 * MIN, Window(9 * MIN, 10 * MIN)), (123 * MIN, Window(123 * MIN, 124 * MIN)),
])
def test_window_after_the_watermark_ignores_the_scheduled_time(watermark, expected):
    assert window_after(watermark, MIN) == expected
    assert next_window(watermark, 999 * MIN, MIN) == expected
    assert expected.next() == Window(expected.end, expected.end + MIN)


@pytest.mark.parametrize("now, due", [(10 * MIN + 4_999, False), (10 * MIN + 5_000, True)])
def test_a_window_is_due_after_its_lateness(now, due):
    window = Window(9 * MIN, 10 * MIN)
    assert due_at(window, 5_000) == 10 * MIN + 5_000
    assert is_due(window, now, 5_000) is due


def test_to_ms_and_label():
    from datetime import UTC, datetime

    assert to_ms(datetime(2026, 1, 1, tzinfo=UTC)) == 1767225600000
    assert Window(1767225600000, 1767225660000).label() == "2026-01-01T00:00:00Z/2026-01-01T00:01:00Z"


@pytest.mark.parametrize("call, message", [
    (lambda: window_after(MIN + 1, MIN), "not on a 60000 ms window boundary"),
    (lambda: first_window(MIN, 0), "window size must be positive"),
    (lambda: first_window(MIN, MIN, -1), "lateness cannot be negative"),
])
def test_bad_window_arithmetic_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
