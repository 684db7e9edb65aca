"""CycloneDX JSON schema validation through cyclonedx-python-lib, in linear time.

cyclonedx-python-lib (11.x) validates with jsonschema's Draft 7 validator,
whose ``uniqueItems`` compares every pair of items in an array, so the cost
of checking a BOM grows with the square of its number of components. This
module takes the library's own validator (its schema, the schemas it
references and its format checker) and replaces only ``uniqueItems`` with a
check of the same rule that hashes each item once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import cache
from typing import Any

from attestgate._jsonschema import jsonschema

logger = logging.getLogger(__name__)

# JSON values (objects, arrays and scalars) in one BOM. Validation time grows
# with this count; a BOM that lists 20,000 files stays below it.
MAX_NODES = 250_000
MAX_ERRORS = 5


def count_nodes(value: Any, limit: int) -> int:
    """Count the JSON values in ``value``, stopping once the count passes ``limit``."""
    count = 0
    stack = [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _canonical(value: Any) -> Any:
    # jsonschema's equality: 1 equals 1.0, but true does not equal 1.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _unique_items(
    validator: Any, unique: bool, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_canonical(item), sort_keys=True)
        if key in seen:
            yield jsonschema.ValidationError(
                f"{item!r} appears more than once, but items must be unique"
            )
            return
        seen.add(key)


@cache
def _validator(spec_version: str) -> Any:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonValidator

    # The library builds its Draft 7 validator on first use of _validator.
    library = JsonValidator(SchemaVersion.from_version(spec_version))._validator
    linear = jsonschema.validators.extend(type(library), {"uniqueItems": _unique_items})
    return linear(library.schema, registry=library._registry, format_checker=library.format_checker)


def schema_errors(document: dict[str, Any], spec_version: str) -> list[str]:
    """Return up to ``MAX_ERRORS`` messages, each led by the field path."""
    errors = []
    for error in _validator(spec_version).iter_errors(document):
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        errors.append(f"{path}: {error.message}")
        if len(errors) >= MAX_ERRORS:
            break
    return errors
