"""The reader interface that the dataset scanner drives, and what readers share.

Each dataset format has a reader (``dataset_parquet``, ``dataset_arrow`` and
the JSON Lines reader in ``dataset_scanner``) that takes the stream in
``feed``, returns its problems from ``finish`` and fills ``facts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attestgate.scanners.interface import MiB, ReadAt

# Footers and message headers larger than this are not decoded, but their
# framing is still checked.
MAX_METADATA_BYTES = 64 * MiB
# Column names listed in the facts.
MAX_LISTED = 64
_MAX_TEXT = 120


class DecodeError(ValueError):
    """Metadata bytes that do not decode as the format requires."""


class TooComplex(ValueError):
    """Metadata that would take more than the gate's bounds to decode."""


@dataclass
class Problem:
    """A framing problem, reported as a ``dataset.malformed`` finding."""

    message: str
    offset: int | None = None


@dataclass
class DatasetReader:
    """Reads one dataset stream; ``facts`` collects rows, columns and the like."""

    facts: dict[str, Any] = field(default_factory=dict)
    total: int = 0

    def feed(self, chunk: memoryview) -> None:
        raise NotImplementedError

    def finish(self, read_at: ReadAt | None) -> list[Problem]:
        """End the stream and return the problems found."""
        raise NotImplementedError


def shorten(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"... ({len(text)} characters)"
