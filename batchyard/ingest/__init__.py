"""The batch import, free of Prefect: a file of records into a database table, with a ledger.

A record's path, one module per step: `spool` reads the source through `batchyard.readers`
into chunk files → `chunk` takes one chunk: `prepare` validates (`validate`) and transforms
(`transform`) it, `load` upserts it into the target → `ledger` records the chunk's counts and its
failed records in the same transaction. `lifecycle` opens, plans and closes a batch, `lease`
keeps a running batch's ownership, `rejects` writes the failed records as CSV, `retry` loads
them again, and `summary` answers what users ask of the ledger.
"""
