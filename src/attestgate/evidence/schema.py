"""JSON Schema validation against the schemas published in ``attestgate.schemas``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from attestgate._jsonschema import jsonschema

MAX_ERRORS = 10


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    text = resources.files("attestgate.schemas").joinpath(name).read_text("utf-8")
    schema = json.loads(text)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def schema_document(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = _validator(name).schema
    return schema


def schema_errors(name: str, document: Any) -> list[str]:
    """Return up to ``MAX_ERRORS`` messages, each led by the field path, for ``document``."""
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors[:MAX_ERRORS]:
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        out.append(f"{path}: {error.message}")
    return out
