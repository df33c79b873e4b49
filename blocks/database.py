"""Target databases as Prefect blocks.

batchyard reuses prefect-sqlalchemy's `SqlAlchemyConnector` (its password is a `SecretStr`)
rather than defining its own. Save one once, then pass `--db block:NAME` (or `db="block:NAME"`
as a flow or deployment parameter) so no password travels in a parameter or a command line:

    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    SqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=SyncDriver.POSTGRESQL_PSYCOPG, username="loader", password="...",
            host="db.internal", port=5432, database="warehouse",
        )
    ).save("warehouse")

    SqlAlchemyConnector.load("warehouse")  # what `block:warehouse` resolves to

For MariaDB or MySQL use `driver=SyncDriver.MYSQL_PYMYSQL` (port 3306).
"""

from __future__ import annotations

BLOCK_PREFIX = "block:"


def database_url(db: str) -> str:
    """The SQLAlchemy URL behind `db`: a `block:NAME` reference or a URL as it is."""
    if not db.startswith(BLOCK_PREFIX):
        return db
    from prefect_sqlalchemy import SqlAlchemyConnector

    connector = SqlAlchemyConnector.load(db.removeprefix(BLOCK_PREFIX))
    info = connector.connection_info
    url = info.create_url() if hasattr(info, "create_url") else info
    return url.render_as_string(hide_password=False) if hasattr(url, "render_as_string") else str(url)
