"""Parquet framing and footer metadata for the dataset scanner.

A Parquet file starts and ends with ``PAR1``; the 4 bytes before the closing
magic give the length of the footer, a Thrift compact-encoded FileMetaData.
The reader keeps only the last 8 bytes while the file streams past, then
decodes the footer through ``read_at`` far enough to read the schema, the row
count and the row group count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attestgate.scanners.dataset_base import (
    MAX_LISTED,
    MAX_METADATA_BYTES,
    DatasetReader,
    DecodeError,
    Problem,
    TooComplex,
    shorten,
)
from attestgate.scanners.interface import ReadAt

# Values the Thrift decoder reads before it gives up on a footer, which keeps
# a hostile footer of tiny values from running for minutes.
_MAX_THRIFT_VALUES = 1_000_000
_MAX_THRIFT_DEPTH = 64


@dataclass
class ParquetReader(DatasetReader):
    """Keeps the last 8 bytes: the footer length and the closing magic."""

    tail: bytes = b""

    def feed(self, chunk: memoryview) -> None:
        self.total += len(chunk)
        self.tail = (self.tail + bytes(chunk[-8:]))[-8:]

    def finish(self, read_at: ReadAt | None) -> list[Problem]:
        if self.total < 12:
            return [Problem(f"the file has {self.total} bytes, too few for a Parquet file")]
        magic = self.tail[4:]
        if magic not in (b"PAR1", b"PARE"):
            return [
                Problem(
                    f"the file ends with {magic!r} instead of the Parquet magic PAR1, "
                    "so it is truncated or not a Parquet file",
                    offset=self.total - 4,
                )
            ]
        footer_length = int.from_bytes(self.tail[:4], "little")
        footer_start = self.total - 8 - footer_length
        if footer_start < 4:
            return [
                Problem(
                    f"the footer length field declares {footer_length} bytes, but only "
                    f"{self.total - 12} bytes lie between the leading and closing magic",
                    offset=self.total - 8,
                )
            ]

        self.facts["footer_bytes"] = footer_length
        if magic == b"PARE":
            # An encrypted footer: its metadata cannot be read without the key.
            self.facts["encrypted_footer"] = True
            return []
        if read_at is None or footer_length > MAX_METADATA_BYTES:
            return []
        try:
            self.facts.update(_parquet_metadata(read_at(footer_start, footer_length)))
        except TooComplex as exc:
            self.facts["metadata"] = f"not decoded: {exc}"
        except DecodeError as exc:
            return [Problem(f"the footer metadata cannot be decoded: {exc}", offset=footer_start)]
        return []


# Thrift compact protocol type ids (Apache Thrift, compact protocol spec).
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = 1, 2, 3, 4, 5, 6, 7, 8
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12


class _Compact:
    """A bounded reader of the Thrift compact protocol."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.values = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError("it ends in the middle of a value")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        result = 0
        for shift in range(0, 70, 7):
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
        raise DecodeError("a variable-length integer is longer than 10 bytes")

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def binary(self) -> bytes:
        length = self.varint()
        if length > len(self.data) - self.pos:
            raise DecodeError(f"a {length}-byte string runs past the end of the footer")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value

    def field_header(self, last_id: int) -> tuple[int, int] | None:
        """Return the next field's (type, id), or None at the end of the struct."""
        self._count()
        byte = self.byte()
        if byte == 0:
            return None
        delta, kind = byte >> 4, byte & 0x0F
        field_id = last_id + delta if delta else self.zigzag()
        return kind, field_id

    def list_header(self) -> tuple[int, int]:
        byte = self.byte()
        size, kind = byte >> 4, byte & 0x0F
        if size == 15:
            size = self.varint()
        # Every element takes at least one byte, which bounds a hostile size.
        if size > len(self.data) - self.pos:
            raise DecodeError(f"a list of {size} elements runs past the end of the footer")
        return kind, size

    def skip(self, kind: int, depth: int, in_collection: bool = False) -> None:
        self._count()
        if depth > _MAX_THRIFT_DEPTH:
            raise DecodeError(f"it nests more than {_MAX_THRIFT_DEPTH} levels deep")
        if kind in (_BOOL_TRUE, _BOOL_FALSE):
            # A field header's type carries the value, but in a list each bool is a byte.
            if in_collection:
                self.byte()
        elif kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
            if self.pos > len(self.data):
                raise DecodeError("it ends in the middle of a double")
        elif kind == _BINARY:
            self.binary()
        elif kind in (_LIST, _SET):
            element, size = self.list_header()
            for _ in range(size):
                self.skip(element, depth + 1, in_collection=True)
        elif kind == _MAP:
            self._skip_map(depth)
        elif kind == _STRUCT:
            last = 0
            while (header := self.field_header(last)) is not None:
                self.skip(header[0], depth + 1)
                last = header[1]
        else:
            raise DecodeError(f"type id {kind} is not a Thrift compact type")

    def _skip_map(self, depth: int) -> None:
        size = self.varint()
        if size == 0:
            return
        if size > len(self.data) - self.pos:
            raise DecodeError(f"a map of {size} entries runs past the end of the footer")
        kinds = self.byte()
        for _ in range(size):
            self.skip(kinds >> 4, depth + 1, in_collection=True)
            self.skip(kinds & 0x0F, depth + 1, in_collection=True)

    def _count(self) -> None:
        self.values += 1
        if self.values > _MAX_THRIFT_VALUES:
            raise TooComplex(f"it contains more than {_MAX_THRIFT_VALUES} values")


@dataclass
class _SchemaElement:
    name: str = ""
    children: int = 0


def _parquet_metadata(footer: bytes) -> dict[str, Any]:
    """Decode FileMetaData up to the row group count (parquet.thrift fields 1 to 4)."""
    reader = _Compact(footer)
    version: int | None = None
    schema: list[_SchemaElement] | None = None
    rows: int | None = None
    row_groups: int | None = None
    last = 0
    while (header := reader.field_header(last)) is not None:
        kind, field_id = header
        last = field_id
        if field_id == 1 and kind == _I32:
            version = reader.zigzag()
        elif field_id == 2 and kind == _LIST:
            schema = _schema_elements(reader)
        elif field_id == 3 and kind == _I64:
            rows = reader.zigzag()
        elif field_id == 4 and kind == _LIST:
            row_groups = reader.list_header()[1]
            # The remaining fields (row group details, key-value metadata,
            # creator) are not needed for the facts, so decoding stops here.
            break
        else:
            reader.skip(kind, 1)

    if schema is None or rows is None or row_groups is None:
        raise DecodeError("the required schema, num_rows or row_groups field is missing")
    if not schema or rows < 0:
        raise DecodeError("the schema is empty or num_rows is negative")
    facts: dict[str, Any] = {"rows": rows, "row_groups": row_groups}
    if version is not None:
        facts["format_version"] = version
    names = _top_level_names(schema)
    facts["columns"] = len(names)
    facts["column_names"] = [shorten(name) for name in names[:MAX_LISTED]]
    facts["leaf_columns"] = sum(1 for element in schema[1:] if element.children == 0)
    return facts


def _schema_elements(reader: _Compact) -> list[_SchemaElement]:
    kind, size = reader.list_header()
    if kind != _STRUCT:
        raise DecodeError("the schema is not a list of structs")
    elements: list[_SchemaElement] = []
    for _ in range(size):
        element = _SchemaElement()
        last = 0
        while (header := reader.field_header(last)) is not None:
            field_kind, field_id = header
            last = field_id
            if field_id == 4 and field_kind == _BINARY:
                element.name = reader.binary().decode("utf-8", "replace")
            elif field_id == 5 and field_kind == _I32:
                element.children = reader.zigzag()
            else:
                reader.skip(field_kind, 2)
        if element.children < 0:
            raise DecodeError(f"column {element.name!r} has a negative child count")
        elements.append(element)
    return elements


def _top_level_names(schema: list[_SchemaElement]) -> list[str]:
    """Return the root's children from the depth-first schema list."""
    names: list[str] = []
    index = 1
    while index < len(schema) and len(names) < schema[0].children:
        names.append(schema[index].name)
        # Skip the subtree: each element consumes one slot and opens its children.
        pending = 1
        while pending and index < len(schema):
            pending += schema[index].children - 1
            index += 1
    return names
