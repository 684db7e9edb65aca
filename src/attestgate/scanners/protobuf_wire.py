"""Walk protocol buffer wire format without a schema compiler or generated code.

Scanners that read protobuf files (TensorFlow SavedModel, Keras metadata) know
the few field numbers they care about and skip everything else. This module
splits a message into its fields and checks every length against the buffer,
so hostile bytes end in :class:`WireError` rather than a crash or a hang.

Encoding rules follow the "Encoding" page of the protobuf documentation. A
field is a varint key ``(number << 3) | wire_type``. The key is followed by a
varint (type 0), 8 bytes (type 1), a varint length and that many bytes
(type 2), fields up to a matching end-group key (types 3 and 4), or 4 bytes
(type 5).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

VARINT = 0
I64 = 1
LEN = 2
START_GROUP = 3
END_GROUP = 4
I32 = 5

# A varint carries at most 64 bits, which take 10 bytes of 7 bits.
_MAX_VARINT_BYTES = 10
# protobuf reserves field number 0 and caps numbers at 2**29 - 1.
_MAX_FIELD_NUMBER = (1 << 29) - 1
# How many fields to decode between two looks at the clock.
_CLOCK_INTERVAL = 4096


class WireError(ValueError):
    """The bytes are not valid protobuf wire format."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


class WireLimitError(WireError):
    """The walk stopped at a bound (fields, nesting or time), not at bad bytes."""


@dataclass(frozen=True)
class Field:
    """One decoded field.

    ``value`` is the integer of a varint, I64 or I32 field and the payload
    length of a LEN field. ``start`` and ``end`` delimit the payload in the
    buffer: the LEN bytes, the fixed-width bytes, or a group's inner fields.
    """

    number: int
    wire_type: int
    value: int
    start: int
    end: int


@dataclass
class WireLimits:
    """Bounds for one walk over one buffer."""

    # Fields decoded in the whole walk, across all messages.
    max_fields: int = 50_000_000
    # Nesting of messages and groups below the top-level message.
    max_depth: int = 64
    # ``time.monotonic()`` value after which the walk stops; 0 means no limit.
    deadline: float = 0.0


class Walker:
    """Decodes fields from one buffer while counting work against ``limits``."""

    def __init__(self, buf: bytes | bytearray | memoryview, limits: WireLimits | None = None):
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
        self.limits = limits or WireLimits()
        self.fields_read = 0

    def fields(self, start: int = 0, end: int | None = None, depth: int = 0) -> Iterator[Field]:
        """Yield the fields of the message stored in ``buf[start:end]``.

        ``depth`` is the nesting level of that message, which the caller
        raises by one for each embedded message it descends into.
        """
        stop = len(self.buf) if end is None else end
        if not 0 <= start <= stop <= len(self.buf):
            raise WireError(f"message range {start}..{stop} is outside the buffer", start)
        if depth > self.limits.max_depth:
            raise WireLimitError(f"messages nest more than {self.limits.max_depth} levels", start)
        pos = start
        while pos < stop:
            field, pos = self._field(pos, stop, depth)
            if field.wire_type == END_GROUP:
                raise WireError(f"end-group key for field {field.number} without a start", pos)
            yield field

    def read_varint(self, pos: int, stop: int) -> tuple[int, int]:
        """Decode the varint at ``pos`` and return it with the next position."""
        result = 0
        for index in range(_MAX_VARINT_BYTES):
            if pos + index >= stop:
                raise WireError("varint runs past the end of its message", pos)
            byte = self.buf[pos + index]
            result |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                if result >= 1 << 64:
                    raise WireError("varint is wider than 64 bits", pos)
                return result, pos + index + 1
        raise WireError(f"varint is longer than {_MAX_VARINT_BYTES} bytes", pos)

    def string(self, field: Field, max_chars: int = 0) -> str:
        """Decode a LEN field as UTF-8, replacing invalid bytes.

        ``max_chars`` greater than zero bounds how many bytes are decoded, so
        that a long string costs no more than its prefix.
        """
        end = field.end if max_chars <= 0 else min(field.end, field.start + max_chars)
        return bytes(self.buf[field.start : end]).decode("utf-8", errors="replace")

    def payload(self, field: Field) -> bytes:
        """Return a copy of the payload bytes of ``field``."""
        return bytes(self.buf[field.start : field.end])

    def _field(self, pos: int, stop: int, depth: int) -> tuple[Field, int]:
        self._count(pos)
        key_pos = pos
        key, pos = self.read_varint(pos, stop)
        number, wire_type = key >> 3, key & 0x7
        if not 1 <= number <= _MAX_FIELD_NUMBER:
            raise WireError(f"field number {number} is out of range", key_pos)

        if wire_type == VARINT:
            value, end = self.read_varint(pos, stop)
            return Field(number, wire_type, value, pos, end), end
        if wire_type in (I64, I32):
            width = 8 if wire_type == I64 else 4
            if pos + width > stop:
                raise WireError(f"{width}-byte field {number} runs past its message", pos)
            value = int.from_bytes(self.buf[pos : pos + width], "little")
            return Field(number, wire_type, value, pos, pos + width), pos + width
        if wire_type == LEN:
            length, begin = self.read_varint(pos, stop)
            if length > stop - begin:
                raise WireError(
                    f"field {number} declares {length} bytes but its message has "
                    f"{stop - begin} left",
                    pos,
                )
            return Field(number, wire_type, length, begin, begin + length), begin + length
        if wire_type == START_GROUP:
            inner_end, after = self._skip_group(number, pos, stop, depth + 1)
            return Field(number, wire_type, 0, pos, inner_end), after
        if wire_type == END_GROUP:
            return Field(number, wire_type, 0, pos, pos), pos
        raise WireError(f"wire type {wire_type} of field {number} does not exist", key_pos)

    def _skip_group(self, number: int, pos: int, stop: int, depth: int) -> tuple[int, int]:
        """Skip a group's fields; return where they end and where the group ends."""
        if depth > self.limits.max_depth:
            raise WireLimitError(f"groups nest more than {self.limits.max_depth} levels", pos)
        while pos < stop:
            field, after = self._field(pos, stop, depth)
            if field.wire_type == END_GROUP:
                if field.number != number:
                    raise WireError(
                        f"group {number} is closed by an end-group key for {field.number}", pos
                    )
                return pos, after
            pos = after
        raise WireError(f"group {number} has no end-group key", pos)

    def _count(self, pos: int) -> None:
        self.fields_read += 1
        if self.fields_read > self.limits.max_fields:
            raise WireLimitError(f"more than {self.limits.max_fields} fields were decoded", pos)
        deadline = self.limits.deadline
        if deadline and self.fields_read % _CLOCK_INTERVAL == 0 and time.monotonic() > deadline:
            raise WireLimitError("the time budget for this file ran out", pos)
