"""Users, as the Temporal batch import this follows imports them: one row per user, keyed by `id`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from batchyard.schemas.base import CollapseSpaces, Lower, RecordSchema, Upper

EMAIL_PATTERN = r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$"


class User(RecordSchema):
    """A user account. Emails are stored lower-case, countries as ISO 3166 alpha-2 codes."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    __batchyard_key__ = ("id",)
    __batchyard_table__ = "users"

    id: Annotated[int, Field(ge=1, description="Stable user id, the key.")]
    email: Annotated[str, Lower, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)]
    name: Annotated[str, CollapseSpaces, StringConstraints(min_length=1, max_length=200)]
    age: Annotated[int, Field(ge=0, le=150)] | None = None
    country: Annotated[str, Upper, StringConstraints(pattern=r"^[A-Z]{2}$")]
    signup_date: Annotated[dt.date, Field(ge=dt.date(1970, 1, 1), le=dt.date(2100, 1, 1))]
    balance: Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)] = 0.0
