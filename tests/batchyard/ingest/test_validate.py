import datetime as dt
from typing import Annotated

import pyarrow as pa
import pytest
from pydantic import BaseModel, Field, field_validator

from batchyard.chunks import ROW
from batchyard.ingest.transform import normalise
from batchyard.ingest.validate import validate_table
from batchyard.schemas import load_schema
from batchyard.schemas.base import compile_plan

GOOD = {"id": "1", "email": "Ann@Example.com", "name": " Ann   Lee ", "age": "42",
        "country": "de", "signup_date": "2020-01-31", "balance": "10.5"}


def run(rows: list[dict], schema: str = "users", row_numbers: list[int] | None = None):
    plan = load_schema(schema)
    columns = {name: [r.get(name) for r in rows] for name in plan.field_names}
    raw = pa.table({**{k: pa.array(v, pa.string()) for k, v in columns.items()},
                    ROW: pa.array(row_numbers or range(1, len(rows) + 1), pa.int64())})
    return validate_table(normalise(raw, plan), raw, plan)


def test_good_record_is_normalised_and_typed():
    result = run([GOOD])
    assert result.rejects == []
    assert result.valid.to_pylist() == [{
        "id": 1, "email": "ann@example.com", "name": "Ann Lee", "age": 42, "country": "DE",
        "signup_date": dt.date(2020, 1, 31), "balance": 10.5, ROW: 1,
    }]


def test_optional_fields_take_defaults():
    result = run([{**GOOD, "age": None, "balance": None}])
    assert result.valid.to_pylist()[0]["age"] is None
    assert result.valid.to_pylist()[0]["balance"] == 0.0


def test_an_empty_string_is_a_value_not_a_missing_one():
    """A quoted "" in a CSV (or "" in JSON): pydantic judges it as the value it is."""
    result = run([{**GOOD, "age": "", "balance": ""}])
    assert [(r.row_number, r.error) for r in result.rejects] == [(1, (
        "age: Input should be a valid integer, unable to parse string as an integer (got ''); "
        "balance: Input should be a valid number, unable to parse string as a number (got '')"))]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", "x1", "id: Input should be a valid integer, unable to parse string as an integer (got 'x1')"),
        ("id", "0", "id: Input should be greater than or equal to 1 (got '0')"),
        ("id", None, "id: Field required"),
        ("id", "", "id: Input should be a valid integer, unable to parse string as an integer (got '')"),
        ("email", "no-at-sign", "email: String should match pattern"),
        ("name", None, "name: Field required"),
        ("name", "", "name: String should have at least 1 character (got '')"),
        ("age", "151", "age: Input should be less than or equal to 150 (got '151')"),
        ("age", "4.5", "age: Input should be a valid integer, unable to parse string as an integer (got '4.5')"),
        ("country", "Germany", "country: String should match pattern '^[A-Z]{2}$' (got 'Germany')"),  # as in the file (issue 14)
        ("signup_date", "2021-02-30", "signup_date: Input should be a valid date or datetime, day value is outside expected range (got '2021-02-30')"),
        ("signup_date", "31/01/2020", "signup_date: Input should be a valid date or datetime, invalid character in year (got '31/01/2020')"),
        ("signup_date", "1960-01-01", "signup_date: Input should be greater than or equal to 1970-01-01"),
        ("balance", "inf", "balance: Input should be a finite number (got 'inf')"),
        ("balance", "1e13", "balance: Input should be less than or equal to 1000000000000 (got '1e13')"),
        # Arrow's cast would take these; only plainly written cells take the cast-only path
        ("id", "0x10", "id: Input should be a valid integer, unable to parse string as an integer (got '0x10')"),
        ("balance", "Infinity", "balance: Input should be a finite number (got 'Infinity')"),
        ("signup_date", "-2021-01-0", "signup_date: Input should be a valid date or datetime"),
    ],
)
def test_bad_field_is_rejected_with_pydantic_message(field, value, message):
    result = run([GOOD, {**GOOD, "id": "2", field: value}])
    assert [r[ROW] for r in result.valid.to_pylist()] == [1]
    assert len(result.rejects) == 1
    reject = result.rejects[0]
    assert reject.row_number == 2
    assert reject.error.startswith(message), reject.error
    assert reject.payload[field] == value
    assert "(got" not in reject.reason


def test_several_bad_fields_are_all_named():
    result = run([{**GOOD, "age": "-1", "email": "x"}])
    assert result.rejects[0].error.count(";") == 1
    assert result.rejects[0].error.startswith("email: ")
    assert "age: Input should be greater than or equal to 0" in result.rejects[0].error


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(" 42 ", 42), ("+7", 7), ("007", 7), ("9" * 18, int("9" * 18)), ("1_000", 1000),
     ("0x10", None), ("1e3", None), ("1" * 19, int("1" * 19))],
)
def test_vectorised_ints_agree_with_pydantic(value, accepted):
    """The fast path never accepts what pydantic would reject, and never changes a value."""
    result = run([{**GOOD, "id": value}])
    got = [r["id"] for r in result.valid.to_pylist()]
    clean = {**GOOD, "email": "ann@example.com", "country": "DE", "id": value.strip()}
    try:
        pydantic_value = load_schema("users").model.model_validate(clean).id
    except ValueError:
        pydantic_value = None
    assert got == ([accepted] if accepted is not None else [])
    assert pydantic_value == accepted


class Shouty(BaseModel):
    id: int
    word: str

    @field_validator("word")
    @classmethod
    def must_shout(cls, value: str) -> str:
        if value != value.upper():
            raise ValueError("must be upper case")
        return value


def test_schema_with_custom_validator_takes_row_wise_path():
    plan = compile_plan(Shouty)
    assert plan.vectorised is False
    raw = pa.table({"id": ["1", "2", "z"], "word": ["HEY", "hey", "HO"],
                    ROW: pa.array([1, 2, 3], pa.int64())})
    result = validate_table(normalise(raw, plan), raw, plan)
    assert result.valid.to_pylist() == [{"id": 1, "word": "HEY", ROW: 1}]
    assert [(r.row_number, r.error) for r in result.rejects] == [
        (2, "word: Value error, must be upper case (got 'hey')"),
        (3, "id: Input should be a valid integer, unable to parse string as an integer (got 'z')"),
    ]


def test_orders_derive_region_and_category():
    from batchyard.ingest.transform import derive

    plan = load_schema("orders")
    raw = pa.table({
        "order_id": ["o-1", "o-2"], "customer_id": ["5", "6"], "sku": ["el-1001", "zz-999"],
        "quantity": ["3", "1"], "unit_price": ["2.50", "10"], "country": ["de", "xx"],
        "order_date": ["2024-05-01", "2024-05-02"], ROW: pa.array([1, 2], pa.int64()),
    })
    result = validate_table(normalise(raw, plan), raw, plan)
    out = derive(result.valid, plan).to_pylist()
    assert [(o["order_id"], o["total_amount"], o["region"], o["product_category"]) for o in out] == [
        ("O-1", 7.5, "EMEA", "electronics"), ("O-2", 10.0, "OTHER", "other"),
    ]


def test_integer_beyond_64_bits_is_rejected_not_crashed():
    result = run([{**GOOD, "id": "9" * 20}])
    assert result.valid.num_rows == 0
    assert result.rejects[0].error == (
        "record: a value does not fit its column type (64-bit integer or float)"
    )


@pytest.mark.parametrize(
    ("ages", "typed"),
    [
        (["1", "20", "003"], [1, 20, 3]),  # plainly written: one cast
        (["+7", "8"], [7, 8]),  # '+' is not plain for integers: the pattern path strips it
    ],
)
def test_plain_and_signed_integers_give_the_same_values(ages, typed):
    result = run([{**GOOD, "id": str(i + 1), "age": age} for i, age in enumerate(ages)])
    assert [r["age"] for r in result.valid.to_pylist()] == typed


class FiniteScore(BaseModel):
    id: int
    score: Annotated[float, Field(allow_inf_nan=False)]


class AnyScore(BaseModel):
    id: int
    score: float


@pytest.mark.parametrize("scores", [
    ["1e400", "2.5", "1e1000"],  # plainly written: the cast-only path
    ["1e400", "2.5", "+1e1000"],  # a '+' sends the column down the pattern path
])
@pytest.mark.parametrize(("model", "valid", "rejected_rows"), [
    (FiniteScore, [(2, 2.5)], [1, 3]),
    (AnyScore, [(1, float("inf")), (2, 2.5), (3, float("inf"))], []),
])
def test_overflowing_floats_are_judged_by_the_schema(scores, model, valid, rejected_rows):
    """Both paths parse these as inf; whether a schema allows it is pydantic's decision."""
    plan = compile_plan(model)
    raw = pa.table({"id": ["1", "2", "3"], "score": scores, ROW: pa.array([1, 2, 3], pa.int64())})
    result = validate_table(normalise(raw, plan), raw, plan)
    assert sorted((r["id"], r["score"]) for r in result.valid.to_pylist()) == valid
    assert [(r.row_number, r.error) for r in result.rejects] == [
        (row, f"score: Input should be a finite number (got '{scores[row - 1]}')")
        for row in rejected_rows]


BAD_CELLS = [("id", "x1"), ("id", "0"), ("id", None), ("id", ""), ("id", "1_000"), ("id", "0x10"),
             ("email", "no-at-sign"), ("name", None), ("name", ""), ("age", "151"), ("age", "4.5"),
             ("age", " 007 "), ("country", "Germany"), ("country", " germany "),
             ("signup_date", "2021-02-30"), ("signup_date", "31/01/2020"),
             ("signup_date", "1960-01-01"), ("balance", "inf"), ("balance", "1e13"),
             ("balance", "Infinity"), ("balance", "1e400"), ("age", "9" * 30)]


def _suspects() -> list[dict]:
    """Every bad cell above alone, in pairs and in threes (repeated values, several failing
    fields, a value pydantic accepts beside one it refuses), between good records."""
    rows = []
    for i, (field, value) in enumerate(BAD_CELLS):
        rows.append({**GOOD, "id": str(1000 + i), field: value})
        other_field, other_value = BAD_CELLS[(i * 7 + 3) % len(BAD_CELLS)]
        rows.append({**GOOD, "id": str(2000 + i), field: value, other_field: other_value})
        third_field, third_value = BAD_CELLS[(i * 5 + 1) % len(BAD_CELLS)]
        rows.append({**GOOD, "id": str(3000 + i), field: value, other_field: other_value,
                     third_field: third_value})
        rows.append({**GOOD, "id": str(4000 + i)})
    return rows


@pytest.mark.parametrize("descending", [False, True])  # a corrected rejects file: any order
def test_rejects_by_value_are_what_pydantic_says_record_by_record(monkeypatch, descending):
    """The many-suspects path (pydantic asked once per failing value) gives the same rejects,
    messages, payloads, order and accepted rows as asking it about every record."""
    import batchyard.ingest.validate as validate

    rows = _suspects()
    numbers = list(range(len(rows), 0, -1)) if descending else None
    monkeypatch.setattr(validate, "BY_VALUE_FROM", 10**9)
    one_by_one = run(rows, row_numbers=numbers)
    monkeypatch.setattr(validate, "BY_VALUE_FROM", 1)
    by_value = run(rows, row_numbers=numbers)
    assert len(one_by_one.rejects) == 64
    assert [vars(r) for r in by_value.rejects] == [vars(r) for r in one_by_one.rejects]
    assert by_value.valid.sort_by(ROW).equals(one_by_one.valid.sort_by(ROW))
    accepted = {r[ROW] for r in one_by_one.valid.to_pylist()}
    alone = {(numbers or list(range(1, len(rows) + 1)))[4 * BAD_CELLS.index(cell)]
             for cell in (("id", "1_000"), ("age", " 007 "))}
    assert alone <= accepted  # Arrow's checks refused them, pydantic accepts them


def test_rejects_by_value_ask_pydantic_once_per_distinct_value(monkeypatch):
    import batchyard.ingest.validate as validate

    asked = []
    verdict = validate._field_verdict
    monkeypatch.setattr(validate, "_field_verdict",
                        lambda *args: asked.append(args[2:4]) or verdict(*args))
    rows = [GOOD] + [{**GOOD, "id": str(i + 2), "country": ["Germany", "N/A"][i % 2]}
                     for i in range(200)]
    result = run(rows)
    assert len(result.rejects) == 200
    assert sorted(asked) == [("country", "GERMANY"), ("country", "N/A")]
    assert result.rejects[1].error == "country: String should match pattern '^[A-Z]{2}$' (got 'N/A')"


def test_with_no_valid_record_every_suspect_is_asked_about_on_its_own(monkeypatch):
    rows = [{**GOOD, "id": str(i + 1), "age": "-1"} for i in range(100)]
    result = run(rows)
    assert result.valid.num_rows == 0
    assert [r.row_number for r in result.rejects] == list(range(1, 101))
    assert {r.error for r in result.rejects} == {"age: Input should be greater than or equal to 0 (got '-1')"}
