import pytest

from batchyard.stream.aggregate import Event, aggregate, apply_function, load_function
from batchyard.stream.window import Window


def ev(i, key, value, ts=0):
    return Event((i, 0), key, value, ts)


@pytest.mark.parametrize("events, expected", [
    ([], []),
    ([ev(1, "a", 2.0)], [{"key": "a", "count": 1, "sum": 2.0, "min": 2.0, "max": 2.0}]),
    ([ev(1, "b", 1.0), ev(2, "a", -3.0), ev(3, "b", 5.5), ev(4, "b", 0.5)],
     [{"key": "a", "count": 1, "sum": -3.0, "min": -3.0, "max": -3.0},
      {"key": "b", "count": 3, "sum": 7.0, "min": 0.5, "max": 5.5}]),
])
def test_aggregate_counts_sums_min_max_per_key(events, expected):
    assert aggregate(events) == expected
    assert aggregate(reversed(events)) == expected


def test_aggregate_refuses_non_finite_values():
    with pytest.raises(ValueError, match="key 'a' has value nan"):
        aggregate([ev(1, "a", float("nan"))])


def double_sums(window, rows):
    return [{**r, "double": r["sum"] * 2, "width": window.size} for r in rows if r["count"] > 1]


def bad_function(window, rows):
    return [{"count": 1}]


@pytest.mark.parametrize("spec, expected", [
    (None, [{"key": "a", "count": 1, "sum": 1.0, "min": 1.0, "max": 1.0},
            {"key": "b", "count": 2, "sum": 3.0, "min": 1.0, "max": 2.0}]),
    (f"{__name__}:double_sums", [{"key": "b", "count": 2, "sum": 3.0, "min": 1.0, "max": 2.0,
                                  "double": 6.0, "width": 60}]),
])
def test_user_function_rewrites_rows(spec, expected):
    rows = aggregate([ev(1, "a", 1.0), ev(2, "b", 1.0), ev(3, "b", 2.0)])
    function = load_function(spec) if spec else None
    assert apply_function(function, Window(0, 60), rows) == expected


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "must be module:function"),
    (f"{__name__}:missing", "is not a function"),
])
def test_bad_function_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        load_function(spec)


def test_user_function_must_keep_keys():
    with pytest.raises(ValueError, match="each with a 'key'"):
        apply_function(bad_function, Window(0, 60), [{"key": "a", "count": 1}])
