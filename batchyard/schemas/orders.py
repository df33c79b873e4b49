"""An order with enrichment: sales region from the country, product category from the SKU."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field, StringConstraints

from batchyard.schemas.base import RecordSchema, Upper

REGIONS: dict[str, str] = {
    **dict.fromkeys(
        "AT BE BG CH CY CZ DE DK EE ES FI FR GB GR HR HU IE IS IT LT LU LV MT NL NO PL PT RO SE "
        "SI SK".split(),
        "EMEA",
    ),
    **dict.fromkeys("AE SA IL TR EG ZA NG KE MA".split(), "EMEA"),
    **dict.fromkeys("US CA".split(), "NA"),
    **dict.fromkeys("MX BR AR CL CO PE UY".split(), "LATAM"),
    **dict.fromkeys("CN JP KR IN SG AU NZ ID TH VN MY PH TW HK".split(), "APAC"),
}

CATEGORIES: dict[str, str] = {
    "EL": "electronics",
    "BK": "books",
    "HM": "home",
    "CL": "clothing",
    "TY": "toys",
    "GR": "grocery",
    "SP": "sports",
}


def lookup(values: pa.ChunkedArray | pa.Array, mapping: dict[str, str], default: str) -> pa.Array:
    """Map each value through `mapping` at C speed; unknown values get `default`."""
    keys = pa.array(list(mapping))
    labels = pa.array(list(mapping.values()))
    positions = pc.index_in(values, value_set=keys)
    return pc.fill_null(pc.take(labels, positions), default)


class Order(RecordSchema):
    """One order line. `total_amount`, `region` and `product_category` are derived on load."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    __batchyard_key__ = ("order_id",)
    __batchyard_table__ = "orders"

    derived_columns: ClassVar[dict[str, pa.DataType]] = {
        "total_amount": pa.float64(),
        "region": pa.string(),
        "product_category": pa.string(),
    }

    order_id: Annotated[str, Upper, StringConstraints(pattern=r"^[A-Z0-9-]{1,40}$")]
    customer_id: Annotated[int, Field(ge=1)]
    sku: Annotated[str, Upper, StringConstraints(pattern=r"^[A-Z]{2}-[0-9]{3,8}$")]
    quantity: Annotated[int, Field(ge=1, le=100_000)]
    unit_price: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
    country: Annotated[str, Upper, StringConstraints(pattern=r"^[A-Z]{2}$")]
    order_date: dt.date

    @classmethod
    def derive(cls, table: pa.Table) -> pa.Table:
        amount = pc.round(pc.multiply(pc.cast(table["quantity"], pa.float64()),
                                      table["unit_price"]), 2)
        prefix = pc.utf8_slice_codeunits(table["sku"], 0, 2)
        return (
            table.append_column("total_amount", amount)
            .append_column("region", lookup(table["country"], REGIONS, "OTHER"))
            .append_column("product_category", lookup(prefix, CATEGORIES, "other"))
        )
