"""Contracts in every engine's ledger: saved, used, evolved (the table gains the column), and
refused drift, without Prefect."""

from __future__ import annotations

import pytest

from batchyard.contracts.resolve import ContractDrift, resolve_contract
from batchyard.contracts.store import read_contracts
from batchyard.engines import session
from batchyard.readers import SourceOptions
from tests.helpers import import_without_prefect, rows

HEADER = "Order ID,amount,status"


def _orders(tmp_path, name: str, lines: list[str], header: str = HEADER):
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def test_a_contract_is_saved_used_and_evolved_in_the_ledger(tmp_path, db_url):
    first = _orders(tmp_path, "orders.csv", [f"{i},{i}.50,{'paid' if i % 3 else 'new'}" for i in range(1, 41)])
    created = resolve_contract(first, SourceOptions(), db_url)
    assert (created.action, created.table, created.version) == ("inferred", "orders", 1)
    summary = import_without_prefect(first, db_url, chunk_size=15, schema=created.schema_ref)
    assert summary["success"] == 40
    assert rows(db_url, "select count(*), min(order_id), max(order_id), sum(amount) from orders") == [
        (40, 1, 40, sum(i + 0.5 for i in range(1, 41)))]

    same = _orders(tmp_path, "more.csv", [f"{i},{i - 30}.50,paid" for i in range(41, 61)])
    used = resolve_contract(same, SourceOptions(), db_url, "orders")
    assert (used.action, used.version, used.schema_ref) == ("used", 1, created.schema_ref)

    wider = _orders(tmp_path, "wider.csv", [f"{i},{i - 59}.25,new,G{i % 4}" for i in range(61, 81)],
                    header=HEADER + ",Gate No")
    with pytest.raises(ContractDrift) as caught:
        resolve_contract(wider, SourceOptions(), db_url, "orders")
    assert [c.describe() for c in caught.value.report.changes] == [
        "new column: Gate No: not in the contract; looks like str (20 of 20 sampled records); "
        "e.g. 'G1', 'G2', 'G3'"]
    evolved = resolve_contract(wider, SourceOptions(), db_url, "orders", evolve=True)
    assert (evolved.action, evolved.version, evolved.added) == ("evolved", 2, ["gate_no"])
    with session(db_url) as connection:
        assert "gate_no" in connection.describe("orders")[0]
    summary = import_without_prefect(wider, db_url, chunk_size=15, schema=evolved.schema_ref)
    assert summary["success"] == 20
    assert sorted(rows(db_url, "select gate_no, count(*) from orders group by gate_no"), key=str) == [
        ("G0", 5), ("G1", 5), ("G2", 5), ("G3", 5), (None, 40)]
    versions = read_contracts(db_url, "orders")
    assert [(v["version"], v["class_name"]) for v in versions] == [(1, "Orders"), (2, "Orders")]
    assert versions[1]["module_text"].endswith(
        '    gate_no: str | None = Field(None, alias="Gate No", max_length=2, pattern="^[A-Z0-9]{2}$")\n')
