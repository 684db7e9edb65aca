"""Arrow IPC framing for the dataset scanner: the file and the stream format.

The stream format is a sequence of messages, each a continuation marker
(0xFFFFFFFF, absent before Arrow 0.15), a header length, a FlatBuffers
Message header and a body. The reader walks the messages as they stream past,
keeping one header at a time. A file in the file format contains ``ARROW1``,
the stream, a FlatBuffers footer that lists the record batches, the footer
length and ``ARROW1`` again. The reader checks both magic numbers and the
footer length, then decodes the footer through ``read_at``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from attestgate.scanners.dataset_base import (
    MAX_LISTED,
    MAX_METADATA_BYTES,
    DatasetReader,
    DecodeError,
    Problem,
    shorten,
)
from attestgate.scanners.interface import ReadAt

# Record batches whose headers are read from an Arrow file for the row count.
_MAX_ARROW_BATCHES = 10_000
_ARROW_MAGIC = b"ARROW1"
_CONTINUATION = 0xFFFFFFFF
# MessageHeader union members (Arrow format, Message.fbs).
_HEADER_SCHEMA = 1
_HEADER_RECORD_BATCH = 3


@dataclass
class ArrowReader(DatasetReader):
    """Walks stream-format messages while streaming; reads a file's footer at the end."""

    file_format: bool | None = None
    head: bytearray = field(default_factory=bytearray)
    tail: bytes = b""
    # Stream format: the bytes of the current frame part and what is still due.
    pending: bytearray = field(default_factory=bytearray)
    state: str = "prefix"
    metadata_length: int = 0
    body_left: int = 0
    message_start: int = 0
    messages: int = 0
    batches: int = 0
    rows: int = 0
    problem: Problem | None = None

    def feed(self, chunk: memoryview) -> None:
        start = self.total
        self.total += len(chunk)
        self.tail = (self.tail + bytes(chunk[-10:]))[-10:]
        if self.file_format is None:
            taken = chunk[: 6 - len(self.head)]
            self.head += taken
            if len(self.head) < 6:
                return
            self._decide()
            chunk = chunk[len(taken) :]
            start += len(taken)
        if not self.file_format:
            self._walk(chunk, start)

    def _decide(self) -> None:
        """Tell the file format from the stream format by the first 6 bytes."""
        self.file_format = bytes(self.head) == _ARROW_MAGIC
        if not self.file_format:
            self._walk(memoryview(bytes(self.head)), 0)

    def _walk(self, chunk: memoryview, start: int) -> None:
        position = 0
        while position < len(chunk) and self.problem is None and self.state != "end":
            if self.state == "body":
                step = min(self.body_left, len(chunk) - position)
                self.body_left -= step
                position += step
                if not self.body_left:
                    self.state = "prefix"
                continue
            wanted = self.metadata_length if self.state == "metadata" else 4
            piece = chunk[position : position + wanted - len(self.pending)]
            self.pending += piece
            position += len(piece)
            if len(self.pending) == wanted:
                self._advance(start + position)
        if self.state == "end" and position < len(chunk) and self.problem is None:
            self.problem = Problem(
                "bytes follow the end-of-stream marker, where readers never look",
                offset=start + position,
            )

    def _advance(self, offset: int) -> None:
        """Act on a complete frame part that ends at ``offset``."""
        data = bytes(self.pending)
        self.pending.clear()
        if self.state == "prefix":
            (value,) = struct.unpack("<I", data)
            if value == _CONTINUATION:
                self.state = "length"
                self.message_start = offset - 4
            else:
                # Streams written before Arrow 0.15 have no continuation marker.
                self._start_metadata(value, offset)
        elif self.state == "length":
            self._start_metadata(struct.unpack("<I", data)[0], offset)
        else:
            self._read_message(data, offset)

    def _start_metadata(self, length: int, offset: int) -> None:
        if length == 0:
            self.state = "end"
        elif length > MAX_METADATA_BYTES:
            self.problem = Problem(
                f"message {self.messages + 1} declares a {length}-byte header, over "
                f"the {MAX_METADATA_BYTES} bytes the gate reads",
                offset=offset - 4,
            )
        else:
            self.metadata_length = length
            self.state = "metadata"

    def _read_message(self, metadata: bytes, offset: int) -> None:
        try:
            message = _arrow_message(metadata)
        except DecodeError as exc:
            self.problem = Problem(
                f"the header of message {self.messages + 1} cannot be decoded: {exc}",
                offset=offset - len(metadata),
            )
            return
        self.messages += 1
        self._count(message)
        self.body_left = message.body_length
        self.state = "body" if message.body_length else "prefix"

    def _count(self, message: _Message) -> None:
        if message.header_type == _HEADER_RECORD_BATCH:
            self.batches += 1
            self.rows += message.rows
        elif message.header_type == _HEADER_SCHEMA and "columns" not in self.facts:
            self.facts["columns"] = len(message.columns)
            self.facts["column_names"] = message.columns[:MAX_LISTED]

    def finish(self, read_at: ReadAt | None) -> list[Problem]:
        if self.file_format is None:
            self._decide()
        if self.file_format:
            return self._finish_file(read_at)
        if self.problem is not None:
            return [self.problem]
        if self.state not in ("prefix", "end") or self.pending:
            return [
                Problem(
                    f"the stream ends inside message {self.messages + 1}, so it is truncated",
                    offset=self.message_start,
                )
            ]
        self.facts.update(ipc="stream", record_batches=self.batches, rows=self.rows)
        return []

    def _finish_file(self, read_at: ReadAt | None) -> list[Problem]:
        self.facts["ipc"] = "file"
        if self.total < 18 or self.tail[4:] != _ARROW_MAGIC:
            return [
                Problem(
                    "the file starts with the Arrow magic ARROW1 but does not end "
                    "with it, so it is truncated or not an Arrow file",
                    offset=max(self.total - 6, 0),
                )
            ]
        footer_length = int.from_bytes(self.tail[:4], "little", signed=True)
        footer_start = self.total - 10 - footer_length
        if footer_length <= 0 or footer_start < 8:
            return [
                Problem(
                    f"the footer length field declares {footer_length} bytes, which "
                    f"does not fit between the magic numbers of a {self.total}-byte file",
                    offset=self.total - 10,
                )
            ]
        if read_at is None or footer_length > MAX_METADATA_BYTES:
            return []
        try:
            self.facts.update(_arrow_footer(read_at, footer_start, footer_length))
        except DecodeError as exc:
            return [Problem(f"the footer cannot be decoded: {exc}", offset=footer_start)]
        return []


class _Flat:
    """Bounded reads of FlatBuffers tables (little-endian, as Arrow writes them)."""

    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer

    def unpack(self, fmt: str, position: int) -> Any:
        size = struct.calcsize(fmt)
        if position < 0 or position + size > len(self.buffer):
            raise DecodeError(f"an offset points outside the {len(self.buffer)}-byte header")
        return struct.unpack_from(fmt, self.buffer, position)[0]

    def root(self) -> _Table:
        return _Table(self, self.unpack("<I", 0))


class _Table:
    def __init__(self, flat: _Flat, position: int) -> None:
        self.flat = flat
        self.position = position
        self.vtable = position - flat.unpack("<i", position)
        self.vtable_size = flat.unpack("<H", self.vtable)

    def _offset(self, index: int) -> int:
        entry = 4 + 2 * index
        if entry + 2 > self.vtable_size:
            return 0
        value: int = self.flat.unpack("<H", self.vtable + entry)
        return value

    def scalar(self, index: int, fmt: str, default: int) -> int:
        offset = self._offset(index)
        if not offset:
            return default
        value: int = self.flat.unpack(fmt, self.position + offset)
        return value

    def table(self, index: int) -> _Table | None:
        offset = self._offset(index)
        if not offset:
            return None
        at = self.position + offset
        return _Table(self.flat, at + self.flat.unpack("<I", at))

    def vector(self, index: int) -> tuple[int, int]:
        """Return the start and length of a vector field, or (0, 0) when it is absent."""
        offset = self._offset(index)
        if not offset:
            return 0, 0
        at = self.position + offset
        start = at + self.flat.unpack("<I", at)
        return start + 4, self.flat.unpack("<I", start)

    def string(self, index: int) -> str:
        start, length = self.vector(index)
        if start + length > len(self.flat.buffer):
            raise DecodeError("a string runs past the end of the header")
        return self.flat.buffer[start : start + length].decode("utf-8", "replace")


@dataclass
class _Message:
    header_type: int
    body_length: int
    rows: int = 0
    columns: list[str] = field(default_factory=list)


def _arrow_message(metadata: bytes) -> _Message:
    """Decode a Message table: its header type, body length, and rows or columns."""
    try:
        return _decode_message(_Flat(metadata))
    except RecursionError:
        raise DecodeError("the tables nest too deeply") from None


def _decode_message(flat: _Flat) -> _Message:
    root = flat.root()
    header_type = root.scalar(1, "<B", 0)
    body_length = root.scalar(3, "<q", 0)
    if body_length < 0:
        raise DecodeError(f"the body length {body_length} is negative")
    message = _Message(header_type, body_length)
    header = root.table(2)
    if header is None:
        return message
    if header_type == _HEADER_RECORD_BATCH:
        message.rows = header.scalar(0, "<q", 0)
        if message.rows < 0:
            raise DecodeError(f"the record batch length {message.rows} is negative")
    elif header_type == _HEADER_SCHEMA:
        message.columns = _field_names(header)
    return message


def _field_names(schema: _Table) -> list[str]:
    start, count = schema.vector(1)
    if count > len(schema.flat.buffer) // 4:
        raise DecodeError(f"the schema lists {count} fields, more than its header can hold")
    names = []
    for index in range(count):
        at = start + 4 * index
        field_table = _Table(schema.flat, at + schema.flat.unpack("<I", at))
        names.append(shorten(field_table.string(0)))
    return names


def _arrow_footer(read_at: ReadAt, footer_start: int, footer_length: int) -> dict[str, Any]:
    """Decode the file footer: the schema and the record batch blocks."""
    flat = _Flat(read_at(footer_start, footer_length))
    root = flat.root()
    facts: dict[str, Any] = {}
    schema = root.table(1)
    if schema is not None:
        names = _field_names(schema)
        facts["columns"] = len(names)
        facts["column_names"] = names[:MAX_LISTED]

    start, count = root.vector(3)
    # A Block struct is an int64 offset, an int32 metadata length with 4
    # bytes of padding, and an int64 body length.
    if count * 24 > footer_length:
        raise DecodeError(f"the footer lists {count} record batches, more than it can hold")
    facts["record_batches"] = count
    rows = 0
    for index in range(count):
        at = start + 24 * index
        offset = flat.unpack("<q", at)
        metadata_length = flat.unpack("<i", at + 8)
        body_length = flat.unpack("<q", at + 16)
        end = offset + metadata_length + body_length
        if offset < 8 or metadata_length < 8 or body_length < 0 or end > footer_start:
            raise DecodeError(
                f"record batch {index + 1} spans bytes {offset} to {end}, outside the "
                f"data section that ends at {footer_start}"
            )
        if index < _MAX_ARROW_BATCHES:
            rows += _batch_rows(read_at(offset, metadata_length))
    if count <= _MAX_ARROW_BATCHES:
        facts["rows"] = rows
    return facts


def _batch_rows(framed: bytes) -> int:
    """Return the row count from a framed record batch header."""
    skip = 8 if framed[:4] == b"\xff\xff\xff\xff" else 4
    message = _arrow_message(framed[skip:])
    if message.header_type != _HEADER_RECORD_BATCH:
        raise DecodeError("a block listed as a record batch contains another message type")
    return message.rows
