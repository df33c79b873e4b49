"""batchyard: reliable bulk record imports as Prefect 3 flows."""

__version__ = "0.1.0"
