"""Validate a GGUF file's header, metadata and tensor layout while it streams past.

A GGUF file (versions 2 and 3) starts with the magic ``GGUF``, a uint32
version, a uint64 tensor count and a uint64 key/value count. The metadata
key/value pairs follow, then one info record per tensor (name, dimensions,
ggml type, offset). The tensor data starts at the next multiple of
``general.alignment`` (32 by default). Integers are little-endian; version 3
also allows big-endian files, which llama.cpp reads only on big-endian hosts.

The parser is incremental: it keeps only the bytes of the item it is reading
and skips token arrays and tensor data without holding them. Chat templates
found in ``tokenizer.chat_template`` and ``tokenizer.chat_template.<name>``
are analysed as Jinja2 templates.
"""

from __future__ import annotations

import functools
import importlib
import logging
import struct
from array import array
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners.chat_template import analyze_chat_template
from attestgate.scanners.interface import MiB, ReadAt, ScanContext, Scanner, ScanResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GgufLimits:
    """Bounds that keep the GGUF parser finite on hostile headers.

    Real models stay far below each one: a few thousand tensors, under a
    hundred keys, vocabularies of up to about 260,000 tokens and chat
    templates under 64 KiB.
    """

    max_tensors: int = 1_000_000
    max_kv: int = 100_000
    # Keys and tensor names; the GGUF specification caps tensor names at 64 bytes.
    max_key_bytes: int = 64 * 1024
    # Any other string value, including each element of a string array.
    max_string_bytes: int = 1 * MiB
    # Chat templates and tokenizer.huggingface.json, which embeds a whole
    # tokenizer.json.
    max_large_string_bytes: int = 16 * MiB
    max_array_length: int = 16 * 1024 * 1024
    max_array_depth: int = 8
    # Strings and arrays parsed one at a time over the whole header, which
    # bounds the parse time. Fixed-size arrays are skipped in one step.
    max_elements: int = 16 * 1024 * 1024
    # Chat templates analysed per file; models ship a handful of named ones.
    max_chat_templates: int = 64
    # Tensor names, kept keys and chat templates held in memory at once.
    max_held_bytes: int = 64 * MiB


DEFAULT_LIMITS = GgufLimits()

# Metadata value types from the GGUF specification: id -> (name, struct code).
_STRING, _ARRAY = 8, 9
_SCALAR_TYPES: dict[int, tuple[str, str]] = {
    0: ("uint8", "B"),
    1: ("int8", "b"),
    2: ("uint16", "H"),
    3: ("int16", "h"),
    4: ("uint32", "I"),
    5: ("int32", "i"),
    6: ("float32", "f"),
    7: ("bool", "?"),
    10: ("uint64", "Q"),
    11: ("int64", "q"),
    12: ("float64", "d"),
}
_UINT32 = 4

# ggml tensor types: id -> (name, elements per block, bytes per block), as
# GGML_QUANT_SIZES of the gguf package 0.19.0 lists them. Ids 4, 5, 31-33 and
# 36-38 belonged to types that ggml has removed.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 8
# The GGUF specification limits tensor names to 64 bytes.
_MAX_TENSOR_NAME = 64
_MAX_INT64 = 2**63 - 1
# Smallest encodings, used to tell a count the file cannot hold: a key/value
# pair with an empty key and a one-byte value, and a tensor info with an
# empty name and no dimensions.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
# Bytes copied into the parse buffer per step, so that at most this much of
# the tensor data that follows the header is ever copied.
_FEED_STEP = 1 * MiB
# Estimated Python overhead per tensor held (list slot, str object, set slot).
_TENSOR_OVERHEAD = 128
_CHECK_TIME_EVERY = 65_536
_MAX_FINDINGS_PER_RULE = 20
_MAX_TEXT = 120

_CHAT_TEMPLATE = "tokenizer.chat_template"
_LARGE_STRING_KEYS = frozenset({_CHAT_TEMPLATE, "tokenizer.huggingface.json"})
# Keys whose values the facts report.
_KEPT_KEYS = frozenset(
    {
        "general.architecture",
        "general.alignment",
        "general.name",
        "general.file_type",
        "general.quantization_version",
        "tokenizer.ggml.model",
    }
)

_RECONVERT = (
    "Do not load this file. Convert the model again from a trusted source with "
    "llama.cpp's convert_hf_to_gguf.py, which writes a valid header and layout, "
    "and admit the new file."
)
_REDOWNLOAD = (
    "The file is incomplete or damaged. Copy it again from its source, compare "
    "its digest with the published one, and admit the complete file."
)
_OVER_LIMIT = (
    "Have a reviewer inspect the file. Real GGUF files stay far below this limit, "
    "so a header this large is unusual; the rest of the header was not checked."
)


class _Stop(Exception):
    """Parsing cannot continue, and the finding that explains why is already recorded."""


class _Truncated(Exception):
    """The stream ended while the parser still needed bytes."""


@dataclass
class _Reading:
    """The item that the parser is reading, named in messages about truncation."""

    item: str = "the file header"


class GgufScanner(Scanner):
    """Checks a GGUF header, its metadata bounds, tensor layout and chat templates."""

    check = "gguf"

    def __init__(self, ctx: ScanContext, fmt: Format, limits: GgufLimits = DEFAULT_LIMITS) -> None:
        super().__init__(ctx, fmt)
        self.limits = limits
        self._buffer = bytearray()
        self._pos = 0  # parse position within the buffer
        self._base = 0  # file offset of the buffer's first byte
        self._skip_remaining = 0
        self._total = 0
        self._eof = False
        self._reading = _Reading()
        self._parser: Generator[None, None, None] | None = self._parse()
        self._complete = False
        # The end of the file that a declared count or length needs, when
        # parsing stopped at a limit before reaching it.
        self._declared_end: tuple[int, str] | None = None

        self._order = "<"
        self._u32 = struct.Struct("<I")
        self._u64 = struct.Struct("<Q")
        self._scalars: dict[int, struct.Struct] = {}
        self._elements = 0
        self._held_bytes = 0

        self._findings: list[Finding] = []
        self._counts: dict[str, int] = {}
        self._facts: dict[str, Any] = {}
        self._keys: set[str] = set()
        self._kept: dict[str, Any] = {}
        self._templates: list[str] = []
        self._skipped_templates = 0
        self._alignment = _DEFAULT_ALIGNMENT
        self._data_start = 0
        self._names: list[str] = []
        self._name_set: set[str] = set()
        self._offsets: array[int] = array("Q")
        self._sizes: array[int] = array("q")  # -1 when the type is unknown
        self._type_counts: dict[str, int] = {}
        self._parameters = 0

    # --- Streaming ----------------------------------------------------------

    def feed(self, chunk: memoryview) -> None:
        self._total += len(chunk)
        view = chunk
        while view and self._parser is not None:
            if self._skip_remaining:
                step = min(self._skip_remaining, len(view))
                self._skip_remaining -= step
                self._base += step
                view = view[step:]
                if self._skip_remaining:
                    return
            if self._pos:
                del self._buffer[: self._pos]
                self._base += self._pos
                self._pos = 0
            self._buffer += view[:_FEED_STEP]
            view = view[_FEED_STEP:]
            self._resume()

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Finish parsing and check the layout.

        1. The header is complete: magic, a supported version and byte order,
           counts within the limits and within what the file can hold.
        2. Every key/value pair has a known type and lengths within the limits,
           and no key appears twice; general.alignment is a power of two.
        3. Every tensor info has at most 8 dimensions, a name of at most 64
           bytes that no other tensor has, and a known ggml type whose block
           size divides the first dimension.
        4. Every tensor's offset is aligned, its bytes lie inside the file, and
           no two tensors share bytes.
        5. Every chat template passes the chat-template analysis.
        """
        self._eof = True
        if self._parser is not None:
            self._resume()
        self._check_declared_end()
        if self._complete:
            self._check_layout()
        if self._skipped_templates:
            self._add(
                "chat-template.limit-exceeded",
                Severity.MEDIUM,
                f"{self._skipped_templates} chat templates were not analysed, because the "
                f"file has more than {self.limits.max_chat_templates}",
                "Have a reviewer read the remaining templates; models ship only a few "
                "named chat templates, so this many deserves a close look.",
                skipped=self._skipped_templates,
            )
        self._facts.update(self._summary())
        return ScanResult(
            findings=self._findings + self._overflow_findings(),
            format=Format.GGUF,
            facts=self._facts,
        )

    def _resume(self) -> None:
        assert self._parser is not None
        try:
            next(self._parser)
            return
        except StopIteration:
            self._complete = True
        except _Stop:
            pass
        except _Truncated:
            self._add(
                "gguf.truncated",
                Severity.HIGH,
                f"the file ends at byte {self._total}, inside the GGUF header while "
                f"reading {self._reading.item}",
                _REDOWNLOAD,
                offset=self._offset(),
                file_size=self._total,
            )
        self._parser = None
        self._buffer = bytearray()
        self._pos = 0

    def _offset(self) -> int:
        return self._base + self._pos

    # --- Primitive reads (generators that wait for bytes) -------------------

    def _wait(self, size: int) -> Generator[None, None, None]:
        while len(self._buffer) - self._pos < size:
            if self._eof:
                raise _Truncated
            yield

    def _read_u32(self) -> Generator[None, None, int]:
        if len(self._buffer) - self._pos < 4:
            yield from self._wait(4)
        (value,) = self._u32.unpack_from(self._buffer, self._pos)
        self._pos += 4
        return int(value)

    def _read_u64(self) -> Generator[None, None, int]:
        if len(self._buffer) - self._pos < 8:
            yield from self._wait(8)
        (value,) = self._u64.unpack_from(self._buffer, self._pos)
        self._pos += 8
        return int(value)

    def _read_bytes(self, size: int) -> Generator[None, None, bytes]:
        if len(self._buffer) - self._pos < size:
            yield from self._wait(size)
        data = bytes(self._buffer[self._pos : self._pos + size])
        self._pos += size
        return data

    def _skip(self, size: int) -> Generator[None, None, None]:
        available = len(self._buffer) - self._pos
        if size <= available:
            self._pos += size
            return
        self._pos = len(self._buffer)
        self._skip_remaining = size - available
        while self._skip_remaining:
            if self._eof:
                raise _Truncated
            yield

    def _read_string(self, limit: int, keep: bool, item: str) -> Generator[None, None, str | None]:
        """Read a GGUF string of at most ``limit`` bytes; skip it unless ``keep``."""
        start = self._offset()
        length = yield from self._read_u64()
        if length > limit:
            self._declare_end(start + 8 + length, item)
            self._stop_at_limit(
                f"{item} declares a string of {_number(length)} bytes, over the limit "
                f"of {limit} bytes",
                start,
            )
        if not keep:
            yield from self._skip(length)
            return None
        self._hold(length)
        data = yield from self._read_bytes(length)
        return data.decode("utf-8", "replace")

    # --- Header -------------------------------------------------------------

    def _parse(self) -> Generator[None, None, None]:
        yield from self._parse_header()
        tensor_count = yield from self._read_count("tensor", self.limits.max_tensors)
        kv_count = yield from self._read_count("key/value", self.limits.max_kv)
        self._facts["tensor_count"] = tensor_count
        self._facts["kv_count"] = kv_count
        for index in range(kv_count):
            yield from self._parse_kv(index, kv_count)
        self._apply_alignment()
        for index in range(tensor_count):
            yield from self._parse_tensor_info(index, tensor_count)
        end = self._offset()
        self._data_start = end + (-end % self._alignment)
        self._facts["data_offset"] = self._data_start

    def _parse_header(self) -> Generator[None, None, None]:
        magic = yield from self._read_bytes(4)
        if magic != _MAGIC:
            self._add(
                "gguf.malformed",
                Severity.HIGH,
                f"the file starts with {magic!r}, not the GGUF magic b'GGUF'",
                _RECONVERT,
                offset=0,
            )
            raise _Stop
        raw = yield from self._read_bytes(4)
        little, big = struct.unpack("<I", raw)[0], struct.unpack(">I", raw)[0]
        if little in _SUPPORTED_VERSIONS:
            version = little
        elif big in _SUPPORTED_VERSIONS:
            version = big
            self._use_big_endian()
        else:
            self._unsupported_version(little, big)
            raise _Stop
        self._facts["gguf_version"] = version
        self._facts["byte_order"] = "big" if self._order == ">" else "little"

    def _use_big_endian(self) -> None:
        self._order = ">"
        self._u32 = struct.Struct(">I")
        self._u64 = struct.Struct(">Q")
        self._add(
            "gguf.big-endian",
            Severity.LOW,
            "the file is a big-endian GGUF file; llama.cpp loads it only on big-endian "
            "hosts, and little-endian hosts reject it",
            "Use a little-endian conversion of the model unless it is meant for a big-endian host.",
            offset=4,
        )

    def _unsupported_version(self, little: int, big: int) -> None:
        version = min(little, big)
        hint = (
            "version 1 stores 32-bit counts and lengths, and current loaders reject it"
            if version == 1
            else "the gate reads GGUF versions 2 and 3"
        )
        self._add(
            "gguf.unsupported-version",
            Severity.MEDIUM,
            f"the file declares GGUF version {little} (read little-endian) or {big} "
            f"(read big-endian), so its header was not checked; {hint}",
            "Convert the model again with a current llama.cpp, which writes GGUF "
            "version 3, and admit the new file.",
            offset=4,
            version=little,
        )

    def _read_count(self, kind: str, limit: int) -> Generator[None, None, int]:
        start = self._offset()
        count = yield from self._read_u64()
        if count > limit:
            minimum = _MIN_TENSOR_INFO_BYTES if kind == "tensor" else _MIN_KV_BYTES
            self._declare_end(start + count * minimum, f"the {kind} count")
            self._stop_at_limit(
                f"the header declares {_number(count)} {kind} entries, over the limit of {limit}",
                start,
            )
        return count

    # --- Metadata -----------------------------------------------------------

    def _parse_kv(self, index: int, count: int) -> Generator[None, None, None]:
        start = self._offset()
        self._reading.item = f"key/value pair {index + 1} of {count}"
        key = yield from self._read_string(self.limits.max_key_bytes, True, "a metadata key")
        assert key is not None
        self._reading.item = f"key/value pair {index + 1} of {count} ({_shorten(key)!r})"
        if key in self._keys:
            self._add(
                "gguf.duplicate-key",
                Severity.HIGH,
                f"the metadata key {_shorten(key)!r} appears more than once, so loaders "
                "that read the first value and loaders that read the last disagree",
                _RECONVERT,
                offset=start,
                key=_shorten(key),
            )
        else:
            self._keys.add(key)
        value_type = yield from self._read_u32()
        template = key == _CHAT_TEMPLATE or key.startswith(_CHAT_TEMPLATE + ".")
        if value_type == _STRING:
            yield from self._parse_string_value(key, template)
        elif value_type == _ARRAY:
            yield from self._parse_array(key, 1)
            if key in _KEPT_KEYS:
                self._kept[key] = (_ARRAY, "an array")
            if template:
                self._invalid_template_type(key, "array", start)
        elif value_type in _SCALAR_TYPES:
            value = yield from self._read_scalar(value_type)
            if key in _KEPT_KEYS:
                self._kept[key] = (value_type, value)
            if template:
                self._invalid_template_type(key, _SCALAR_TYPES[value_type][0], start)
        else:
            self._unknown_value_type(value_type, key)

    def _parse_string_value(self, key: str, template: bool) -> Generator[None, None, None]:
        large = template or key in _LARGE_STRING_KEYS
        limit = self.limits.max_large_string_bytes if large else self.limits.max_string_bytes
        if template and len(self._templates) >= self.limits.max_chat_templates:
            self._skipped_templates += 1
            template = False
        keep = template or key in _KEPT_KEYS
        value_offset = self._offset() + 8
        held_before = self._held_bytes
        value = yield from self._read_string(limit, keep, f"the value of {_shorten(key)!r}")
        if value is None:
            return
        if template:
            self._check_time()
            self._templates.append(key)
            location = f"{self.ctx.file}:{key}"
            self._findings.extend(analyze_chat_template(value, self, location, offset=value_offset))
            # The template is analysed and dropped, so it no longer counts.
            self._held_bytes = held_before
        else:
            self._kept[key] = (_STRING, value)

    def _read_scalar(self, value_type: int) -> Generator[None, None, Any]:
        decoder = self._scalars.get(value_type)
        if decoder is None:
            decoder = struct.Struct(self._order + _SCALAR_TYPES[value_type][1])
            self._scalars[value_type] = decoder
        if len(self._buffer) - self._pos < decoder.size:
            yield from self._wait(decoder.size)
        (value,) = decoder.unpack_from(self._buffer, self._pos)
        self._pos += decoder.size
        return value

    def _parse_array(self, key: str, depth: int) -> Generator[None, None, None]:
        start = self._offset()
        if depth > self.limits.max_array_depth:
            self._stop_at_limit(
                f"the value of {_shorten(key)!r} nests arrays deeper than "
                f"{self.limits.max_array_depth} levels",
                start,
            )
        element_type = yield from self._read_u32()
        length = yield from self._read_u64()
        if length > self.limits.max_array_length:
            self._declare_end(start + 12 + length, f"the array in {_shorten(key)!r}")
            self._stop_at_limit(
                f"the array in {_shorten(key)!r} declares {_number(length)} elements, over "
                f"the limit of {self.limits.max_array_length}",
                start,
            )
        if element_type in _SCALAR_TYPES:
            size = struct.calcsize("<" + _SCALAR_TYPES[element_type][1])
            yield from self._skip(length * size)
        elif element_type == _STRING:
            yield from self._skip_strings(key, length)
        elif element_type == _ARRAY:
            for _ in range(length):
                self._count_element(key)
                yield from self._parse_array(key, depth + 1)
        else:
            self._unknown_value_type(element_type, key)

    def _skip_strings(self, key: str, length: int) -> Generator[None, None, None]:
        """Skip a string array: whole strings in the buffer in one loop, the rest one by one."""
        limit = self.limits.max_string_bytes
        unpack = self._u64.unpack_from
        element = f"an element of {_shorten(key)!r}"
        remaining = length
        while remaining:
            # Vocabularies hold hundreds of thousands of short strings, so
            # the common case runs without a generator step per string.
            buffer, pos, end = self._buffer, self._pos, len(self._buffer)
            batch = min(remaining, self.limits.max_elements - self._elements)
            done = 0
            while done < batch and pos + 8 <= end:
                (size,) = unpack(buffer, pos)
                if size > limit or pos + 8 + size > end:
                    break
                pos += 8 + size
                done += 1
            self._pos = pos
            before = self._elements
            self._elements += done
            remaining -= done
            if self._elements // _CHECK_TIME_EVERY != before // _CHECK_TIME_EVERY:
                self._check_time()
            if remaining:
                self._count_element(key)
                yield from self._read_string(limit, False, element)
                remaining -= 1

    def _count_element(self, key: str) -> None:
        self._elements += 1
        if self._elements > self.limits.max_elements:
            self._stop_at_limit(
                f"the metadata holds more than {self.limits.max_elements} strings and arrays "
                f"(reached in {_shorten(key)!r})",
                self._offset(),
            )
        if self._elements % _CHECK_TIME_EVERY == 0:
            self._check_time()

    def _unknown_value_type(self, value_type: int, key: str) -> None:
        self._add(
            "gguf.malformed",
            Severity.HIGH,
            f"the value of {_shorten(key)!r} has type {value_type}, which the GGUF "
            "specification does not define, so the rest of the header cannot be read",
            _RECONVERT,
            offset=self._offset() - 4,
            value_type=value_type,
        )
        raise _Stop

    def _invalid_template_type(self, key: str, type_name: str, offset: int) -> None:
        self._add(
            "gguf.invalid-chat-template",
            Severity.MEDIUM,
            f"the chat template {_shorten(key)!r} is a {type_name}, not a string, so "
            "loaders ignore or reject it and the gate could not analyse it",
            "Have a reviewer check what the value holds, or convert the model again "
            "with its chat template stored as a string.",
            offset=offset,
            key=_shorten(key),
        )

    def _apply_alignment(self) -> None:
        if "general.alignment" not in self._kept:
            return
        value_type, value = self._kept["general.alignment"]
        if value_type == _UINT32 and value > 0 and value & (value - 1) == 0:
            self._alignment = value
            return
        self._add(
            "gguf.malformed",
            Severity.HIGH,
            f"general.alignment is {_shorten(str(value))} of type "
            f"{_type_name(value_type)}, but it must be a uint32 power of two; the "
            f"layout was checked with the default of {_DEFAULT_ALIGNMENT}",
            _RECONVERT,
            alignment=_shorten(str(value)),
        )

    # --- Tensor infos -------------------------------------------------------

    def _parse_tensor_info(self, index: int, count: int) -> Generator[None, None, None]:
        start = self._offset()
        self._reading.item = f"tensor info {index + 1} of {count}"
        name = yield from self._read_string(self.limits.max_key_bytes, True, "a tensor name")
        assert name is not None
        self._reading.item = f"tensor info {index + 1} of {count} ({_shorten(name)!r})"

        n_dims = yield from self._read_u32()
        if n_dims > _MAX_DIMS:
            self._add(
                "gguf.malformed",
                Severity.HIGH,
                f"tensor {_shorten(name)!r} declares {n_dims} dimensions, over the maximum "
                f"of {_MAX_DIMS}, so the rest of the header cannot be read",
                _RECONVERT,
                offset=start,
                tensor=_shorten(name),
            )
            raise _Stop
        dims = []
        for _ in range(n_dims):
            dims.append((yield from self._read_u64()))
        type_id = yield from self._read_u32()
        offset = yield from self._read_u64()

        self._check_name(name, start)
        size = self._tensor_size(name, dims, type_id, start)
        self._names.append(name)
        self._offsets.append(offset)
        self._sizes.append(size)
        self._hold(_TENSOR_OVERHEAD)
        if (index + 1) % _CHECK_TIME_EVERY == 0:
            self._check_time()

    def _check_name(self, name: str, start: int) -> None:
        if len(name.encode("utf-8", "replace")) > _MAX_TENSOR_NAME:
            self._add(
                "gguf.malformed",
                Severity.HIGH,
                f"tensor name {_shorten(name)!r} is longer than the {_MAX_TENSOR_NAME} "
                "bytes that the GGUF specification allows, and llama.cpp rejects it",
                _RECONVERT,
                offset=start,
                tensor=_shorten(name),
            )
        if name in self._name_set:
            self._add(
                "gguf.duplicate-tensor",
                Severity.HIGH,
                f"two tensors are named {_shorten(name)!r}, so loaders that keep the first "
                "and loaders that keep the last load different weights",
                _RECONVERT,
                offset=start,
                tensor=_shorten(name),
            )
        else:
            self._name_set.add(name)

    def _tensor_size(self, name: str, dims: list[int], type_id: int, start: int) -> int:
        """Return the tensor's size in bytes, or -1 when it cannot be computed."""
        ggml_type = _ggml_type(type_id)
        type_name = ggml_type[0] if ggml_type else f"unknown type {type_id}"
        self._type_counts[type_name] = self._type_counts.get(type_name, 0) + 1

        elements = 1
        for dim in dims:
            elements *= dim
            if dim > _MAX_INT64 or elements > _MAX_INT64:
                self._malformed_tensor(name, f"its dimensions {_dims(dims)} overflow int64", start)
                return -1
        if ggml_type is None:
            self._add(
                "gguf.unknown-tensor-type",
                Severity.MEDIUM,
                f"tensor {_shorten(name)!r} has ggml type {type_id}, which the gate does "
                "not know, so its size and bounds could not be checked",
                "Update attestgate (or the gguf package it reads new types from), or have "
                "a reviewer confirm that the producing tool writes this type on purpose.",
                offset=start,
                tensor=_shorten(name),
                type=type_id,
            )
            return -1
        _, block, block_bytes = ggml_type
        first = dims[0] if dims else 1
        if first % block:
            self._malformed_tensor(
                name,
                f"its first dimension {first} is not a multiple of the {type_name} block "
                f"size {block}",
                start,
            )
            return -1
        self._parameters += elements
        return min(elements // block * block_bytes, _MAX_INT64)

    def _malformed_tensor(self, name: str, problem: str, start: int | None) -> None:
        self._add(
            "gguf.malformed",
            Severity.HIGH,
            f"tensor {_shorten(name)!r} is malformed: {problem}",
            _RECONVERT,
            offset=start,
            tensor=_shorten(name),
        )

    # --- Layout -------------------------------------------------------------

    def _check_layout(self) -> None:
        """Check alignment, bounds and overlap of the tensors' data ranges."""
        if self.ctx.size is not None and self.ctx.size > self._total:
            # The stream stopped early (the time budget ran out), so the
            # bytes that would show a tensor in bounds were never seen.
            self._facts["layout"] = "not checked: the stream ended before the end of the file"
            return
        ranges: list[int] = []
        for index, offset in enumerate(self._offsets):
            name = self._names[index]
            begin = self._data_start + offset
            if offset % self._alignment:
                self._malformed_tensor(
                    name,
                    f"its offset {offset} is not a multiple of the alignment {self._alignment}",
                    begin if begin <= self._total else None,
                )
            size = self._sizes[index]
            end = begin + max(size, 0)
            if end > self._total or begin > self._total:
                self._out_of_bounds(name, begin, end, size)
            elif size >= 0:
                ranges.append(index)
        self._check_overlap(ranges)

    def _out_of_bounds(self, name: str, begin: int, end: int, size: int) -> None:
        extent = f"bytes {_number(begin)} to {_number(end)}" if size >= 0 else f"byte {begin}"
        self._add(
            "gguf.tensor-out-of-bounds",
            Severity.HIGH,
            f"tensor {_shorten(name)!r} occupies {extent} of the file, but the file has "
            f"only {self._total} bytes",
            _REDOWNLOAD + " If the digest matches, the file is malformed: " + _RECONVERT,
            offset=None,
            tensor=_shorten(name),
            begin=_number(begin),
            end=_number(end),
            file_size=self._total,
        )

    def _check_overlap(self, indexes: list[int]) -> None:
        indexes.sort(key=self._offsets.__getitem__)
        cursor = -1
        owner = -1
        for index in indexes:
            begin = self._offsets[index]
            end = begin + self._sizes[index]
            if owner >= 0 and begin < cursor:
                self._add(
                    "gguf.tensor-overlap",
                    Severity.HIGH,
                    f"tensor {_shorten(self._names[index])!r} starts at data offset {begin}, "
                    f"inside tensor {_shorten(self._names[owner])!r}, which ends at {cursor}, "
                    "so the two tensors share bytes",
                    _RECONVERT,
                    offset=self._data_start + begin,
                    tensors=[_shorten(self._names[owner]), _shorten(self._names[index])],
                )
            if end > cursor:
                cursor, owner = end, index

    # --- Limits and findings ------------------------------------------------

    def _hold(self, size: int) -> None:
        self._held_bytes += size
        if self._held_bytes > self.limits.max_held_bytes:
            self._stop_at_limit(
                f"the header's names and kept values need more than "
                f"{self.limits.max_held_bytes} bytes of memory",
                self._offset(),
            )

    def _check_time(self) -> None:
        if self.ctx.expired():
            self._stop_at_limit(
                "the time budget for the file ran out while parsing the header", self._offset()
            )

    def _stop_at_limit(self, message: str, offset: int) -> None:
        self._add(
            "gguf.limit-exceeded",
            Severity.MEDIUM,
            message + ", so parsing stopped",
            _OVER_LIMIT,
            offset=offset,
        )
        raise _Stop

    def _declare_end(self, end: int, item: str) -> None:
        self._declared_end = (end, item)

    def _check_declared_end(self) -> None:
        """Report a count or length over a limit that the file could not hold anyway."""
        if self._declared_end is None:
            return
        end, item = self._declared_end
        if end > self._total:
            self._add(
                "gguf.malformed",
                Severity.HIGH,
                f"{item} needs the file to reach at least byte {_number(end)}, but the file "
                f"has only {self._total} bytes, so the header is invalid",
                _RECONVERT,
                needed=_number(end),
                file_size=self._total,
            )

    def _add(
        self,
        rule: str,
        severity: Severity,
        message: str,
        remediation: str,
        *,
        offset: int | None = None,
        **details: Any,
    ) -> None:
        self._counts[rule] = self._counts.get(rule, 0) + 1
        if self._counts[rule] <= _MAX_FINDINGS_PER_RULE:
            self._findings.append(
                self.finding(rule, severity, message, remediation, offset=offset, **details)
            )

    def _overflow_findings(self) -> list[Finding]:
        summaries: list[Finding] = []
        for rule, count in self._counts.items():
            hidden = count - _MAX_FINDINGS_PER_RULE
            if hidden > 0:
                first = next(f for f in self._findings if f.rule == rule)
                summaries.append(
                    self.finding(
                        rule,
                        first.severity,
                        f"{hidden} more {rule} problems were found beyond the "
                        f"{_MAX_FINDINGS_PER_RULE} listed",
                        first.remediation,
                        hidden=hidden,
                    )
                )
        return summaries

    def _summary(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"alignment": self._alignment}
        for key, fact in (
            ("general.architecture", "architecture"),
            ("general.name", "name"),
            ("general.file_type", "file_type"),
            ("tokenizer.ggml.model", "tokenizer_model"),
        ):
            if key in self._kept:
                value = self._kept[key][1]
                facts[fact] = _shorten(value) if isinstance(value, str) else value
        if self._type_counts:
            facts["tensor_types"] = dict(sorted(self._type_counts.items()))
            facts["parameters"] = self._parameters
        if self._templates:
            facts["chat_templates"] = [_shorten(key) for key in self._templates]
        return facts


@functools.lru_cache(maxsize=1)
def _package_types() -> dict[int, tuple[str, int, int]]:
    """Return the ggml types that the installed gguf package defines, if it is installed."""
    try:
        constants = importlib.import_module("gguf.constants")
    except ImportError:
        return {}
    try:
        return {
            int(kind): (str(kind.name), int(sizes[0]), int(sizes[1]))
            for kind, sizes in constants.GGML_QUANT_SIZES.items()
        }
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        logger.warning("the gguf package's GGML_QUANT_SIZES could not be read: %s", exc)
        return {}


def _ggml_type(type_id: int) -> tuple[str, int, int] | None:
    known = GGML_TYPES.get(type_id)
    if known is not None:
        return known
    return _package_types().get(type_id)


def _type_name(value_type: int) -> str:
    if value_type in _SCALAR_TYPES:
        return _SCALAR_TYPES[value_type][0]
    return {_STRING: "string", _ARRAY: "array"}.get(value_type, f"type {value_type}")


def _dims(dims: list[int]) -> str:
    return _shorten("[" + ", ".join(_number(dim) for dim in dims) + "]")


def _number(value: int) -> str:
    """Format an integer from the header, abbreviating absurdly large ones."""
    if value.bit_length() <= 128:
        return str(value)
    return f"about 2**{value.bit_length() - 1}"


def _shorten(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"... ({len(text)} characters)"
