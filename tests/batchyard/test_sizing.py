import itertools

import pytest

from batchyard.sizing import SizeRange, auto_sizes, cpu_busy_fraction, size_for_load

SIZES = SizeRange(100, 500, 1_000)


@pytest.mark.parametrize(
    ("busy", "size"),
    [(0.0, 1_000), (0.49, 1_000), (0.5, 500), (0.79, 500), (0.8, 100), (1.0, 100)],
)
def test_size_for_load_follows_the_reference_thresholds(busy, size):
    assert size_for_load(busy, SIZES) == size


def test_auto_sizes_measure_before_every_chunk():
    readings = iter([0.1, 0.9, 0.6, 0.2])
    assert list(itertools.islice(auto_sizes(SIZES, lambda: next(readings)), 4)) == [
        1_000, 100, 500, 1_000]


def test_cpu_busy_fraction_is_a_fraction():
    assert 0.0 <= cpu_busy_fraction(0.01) <= 1.0
