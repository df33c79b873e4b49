"""Contracts: inferred schemas saved beside a table, versioned, checked for drift."""
