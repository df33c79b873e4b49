"""Evolving a contract by its additive changes: the new columns become optional fields at the
end of the model's class, under a comment saying when and from which file, and the rest of the
module (a reviewer's edits included) stays as it was."""

from __future__ import annotations

import ast

from batchyard.contracts.drift import Change
from batchyard.errors import ConfigurationError
from batchyard.schemas.infer import FieldSpec, constraints_of, field_name
from batchyard.schemas.render import field_line


def new_fields(changes: list[Change], existing: list[str]) -> list[FieldSpec]:
    """Optional fields for the new columns, named so as not to clash with `existing`."""
    taken = set(existing)
    fields = []
    for change in changes:
        name = field_name(change.column, taken)
        fields.append(FieldSpec(name, None if name == change.column else change.column,
                                change.facts, optional=True,
                                constraints=constraints_of(change.facts)))
    return fields


def add_fields(text: str, class_name: str, fields: list[FieldSpec], note: str) -> str:
    """The module with `fields` appended to class `class_name`, under `# note`.

    Raises ConfigurationError when the module has no such class."""
    tree = ast.parse(text)
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    if not found:
        raise ConfigurationError(f"the contract's module has no class {class_name}")
    lines = text.splitlines()
    end = found[0].end_lineno
    added = ["", f"    # {note}", *(field_line(f) for f in fields)]
    return "\n".join(lines[:end] + added + lines[end:]) + "\n"
