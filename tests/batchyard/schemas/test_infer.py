"""Schema inference: the module `batchyard schema infer` writes, from files we write here."""

from __future__ import annotations

import datetime as dt
import typing
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import AwareDatetime

from batchyard.errors import ConfigurationError
from batchyard.readers import SourceOptions
from batchyard.schemas import load_schema
from batchyard.schemas.infer import field_name, infer_model, round_outward
from batchyard.schemas.render import render_module
from batchyard.schemas.sample import sample_source


def _infer(tmp_path: Path, text: str, **kwargs):
    path = tmp_path / "things.csv"
    path.write_text(text)
    spec = infer_model(sample_source(path, SourceOptions()), **kwargs)
    module = tmp_path / "things_model.py"
    module.write_text(render_module(spec))
    return spec, load_schema(f"{module}:{spec.class_name}")


def _column(header: str, values: list[str]) -> str:
    return header + "\n" + "\n".join(values) + "\n"


@pytest.mark.parametrize(("values", "annotation", "constraints"), [
    (["true", "False", "TRUE"] * 4, bool, {}),
    (["1", "-20", "517"] * 4, int, {"ge": -20, "le": 520}),
    (["12.50", "3.05", "100.00"] * 4, Decimal, {"ge": Decimal("3.0"), "le": Decimal("100"),
                                                "max_digits": 6, "decimal_places": 2}),
    (["1.5", "2", "39.25"] * 4, float, {"ge": 1.5, "le": 40.0}),
    (["2024-01-31", "2023-12-01"] * 6, dt.date, {}),
    (["2024-01-31 10:00:00", "2024-02-01T11:30"] * 6, dt.datetime, {}),
    (["2024-01-31T10:00:00Z", "2024-02-01T11:30:00+01:00"] * 6, AwareDatetime, {}),
    (["00123", "04567", "99999"] * 4, str, {"max_length": 5, "pattern": "^[0-9]{5}$"}),
    (["ann@example.com", "bob@example.org", "c.d@mail.example.net"] * 4, str,
     {"max_length": 32, "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"}),
    ([f"word {i}" for i in range(12)], str, {"max_length": 7}),
])
def test_each_type_and_its_constraints(tmp_path, values, annotation, constraints):
    spec, plan = _infer(tmp_path, _column("v", values), key="none")
    assert plan.model.model_fields["v"].annotation is annotation
    assert spec.fields[0].constraints == constraints
    assert (spec.fields[0].optional, plan.keyless) == (False, True)


def test_missing_values_make_a_field_optional_and_few_words_a_literal(tmp_path):
    values = ["red", "green", ""] * 10
    spec, plan = _infer(tmp_path, _column("id,colour", [f"{i},{v}" for i, v in enumerate(values)]))
    field = plan.model.model_fields["colour"]
    assert field.annotation == typing.Optional[typing.Literal["green", "red"]]  # noqa: UP045
    assert (field.is_required(), spec.fields[1].facts.nulls, spec.fields[1].facts.distinct) == (False, 10, 2)
    assert (plan.key, spec.key_reason) == (("id",), "id is unique and never missing in the sample")


def test_headers_that_are_not_identifiers_get_an_alias(tmp_path):
    spec, plan = _infer(tmp_path, "Order ID,class,2nd value,_x\n1,a,2,3\n2,b,3,4\n", key="Order ID")
    assert [(c.name, c.alias) for c in plan.columns] == [
        ("order_id", "Order ID"), ("class_", "class"), ("c_2nd_value", "2nd value"), ("x", "_x")]
    assert plan.key == ("order_id",)
    assert 'order_id: int = Field(alias="Order ID")' in render_module(spec)


def test_the_docstring_says_what_was_seen(tmp_path):
    spec, _ = _infer(tmp_path, _column("n,s", [f"{i},{'x' if i % 2 else ''}" for i in range(1, 7)]))
    text = render_module(spec)
    assert "Sampled: all 6 records." in text
    assert "Key: n (n is unique and never missing in the sample)." in text
    assert "n       int                 0         6  1 .. 6" in text
    assert "s       str                 3         1  'x'" in text


def test_an_unknown_key_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        _infer(tmp_path, "a,b\n1,2\n", key="c")
    assert str(caught.value) == "--key 'c': no column 'c' in things.csv (columns: a, b)"


def test_the_sample_is_the_first_records_and_a_spread_of_the_rest(tmp_path):
    path = tmp_path / "many.csv"
    path.write_text("n\n" + "\n".join(str(i) for i in range(1, 10_001)) + "\n")
    sample = sample_source(path, SourceOptions(), first=1_000, spread=100)
    rows = sample.table["_row_number"].to_pylist()
    assert rows[:1_000] == list(range(1, 1_001))
    assert rows[1_000:] == list(range(1_024, 10_001, 128))
    assert (sample.total, sample.rows, sample.describe()) == (
        10_000, 1_071, "1,071 of 10,000 records (the first 1,000 and 71 spread over the rest)")


@pytest.mark.parametrize(("value", "up", "expected"), [
    (517, False, 510), (2359, True, 2400), (-43, False, -43), (-43.2, False, -44.0),
    (59.6, True, 60.0), (0, True, 0), (Decimal("3.05"), False, Decimal("3.0"))])
def test_bounds_are_rounded_outward_to_two_significant_digits(value, up, expected):
    assert round_outward(value, up) == expected
    assert type(round_outward(value, up)) is type(expected)


def test_field_names_are_identifiers_and_unique():
    taken: set[str] = set()
    assert [field_name(h, taken) for h in ("Order ID", "order_id", "json", "model_x", "")] == [
        "order_id", "order_id_2", "json_", "model_x_", "column"]
