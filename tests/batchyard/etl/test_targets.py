"""The target registry: every target type of the spec has an implementation of the whole interface."""

from __future__ import annotations

import typing

import pytest

from batchyard.errors import ConfigurationError
from batchyard.etl.spec import DatabaseTarget, FileTarget, Target, WarehouseTarget
from batchyard.etl.targets import TARGETS, EtlTarget, target_for

SPECS = [DatabaseTarget(url="postgresql://loader:s3cret@db.internal/w", table="t"),
         WarehouseTarget(table="t"), FileTarget(path="out")]
OPERATIONS = ["describe", "destination", "prepare", "load", "finish", "ensure_state", "read_cursor",
              "save_cursor", "record_failures", "failed_batches"]


def test_every_spec_type_is_registered():
    union = typing.get_args(typing.get_args(Target)[0])
    assert sorted(model.model_fields["type"].default for model in union) == sorted(TARGETS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type)
def test_each_target_implements_the_interface(spec):
    target = target_for(spec)
    assert all(callable(getattr(target, name, None)) for name in OPERATIONS)
    assert set(OPERATIONS) <= set(dir(EtlTarget))
    assert all(hasattr(spec, name) for name in target.block_fields)
    assert "s3cret" not in target.describe()


@pytest.mark.parametrize("spec, append, replace", [
    (SPECS[0], "t", "t__new_0123456789ab"),
    (SPECS[1], "t", "t__new_0123456789ab"),
    (SPECS[2], "out", "out.staging-0123456789abcdef"),
], ids=["database", "warehouse", "file"])
def test_destination_is_a_staging_one_under_replace(spec, append, replace):
    target = target_for(spec)
    assert (target.destination("0123456789abcdef", "append"), target.destination("0123456789abcdef", "replace")) \
        == (append, replace)


def test_an_unknown_type_is_a_configuration_error():
    class Other:
        type = "nowhere"

    with pytest.raises(ConfigurationError, match="no ETL target implements type 'nowhere'"):
        target_for(Other())
