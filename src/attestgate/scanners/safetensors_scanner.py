"""Validate a safetensors file's header and data layout while it streams past.

A safetensors file is an 8-byte little-endian header length N, N bytes of
UTF-8 JSON header, then the data section that the header's ``data_offsets``
index. The scanner buffers only the header, bounded by
``Limits.max_safetensors_header``, and counts the data section without keeping
it, because the identify step hashes those bytes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners.interface import ReadAt, ScanContext, Scanner, ScanResult

logger = logging.getLogger(__name__)

# Size in bits of every dtype that safetensors 0.8.0 defines (its Rust Dtype
# enum, 22 variants). F4 and F6 pack several values into a byte.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_LENGTH_FIELD = 8
_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})
# NumPy 2 rejects arrays of more than 64 dimensions, so no deeper tensor can
# be loaded as an array. The bound also keeps each shape's product short.
_MAX_RANK = 64
# Findings per rule before the rest are summed up in one finding, so that a
# header with a million bad entries yields a readable report.
_MAX_FINDINGS_PER_RULE = 20
# Caps for what the facts and messages repeat from the header.
_MAX_FACT_KEYS = 64
_MAX_TEXT = 120

_REEXPORT = (
    "Do not load this file. Re-export the weights from a trusted copy with the "
    "safetensors library (for example safetensors.torch.save_file), which writes "
    "a valid header and layout, and admit the new file."
)
_REDOWNLOAD = (
    "The file is incomplete or damaged. Copy it again from its source, compare "
    "its digest with the published one, and admit the complete file."
)


class _HeaderError(ValueError):
    """The header bytes are not the strict JSON that safetensors requires."""


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsScanner(Scanner):
    """Checks that a safetensors header is strict and describes its data exactly."""

    check = "safetensors"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._length_field = bytearray()
        self._header_len: int | None = None
        self._header = bytearray()
        self._header_done = False
        self._total = 0
        self._findings: list[Finding] = []
        self._counts: dict[str, int] = {}

    def feed(self, chunk: memoryview) -> None:
        self._total += len(chunk)
        if self._header_done:
            return

        view = chunk
        if self._header_len is None:
            needed = _LENGTH_FIELD - len(self._length_field)
            self._length_field += view[:needed]
            view = view[needed:]
            if len(self._length_field) < _LENGTH_FIELD:
                return
            self._header_len = int.from_bytes(self._length_field, "little")
            if self._header_len > self.ctx.limits.max_safetensors_header:
                # The header cannot be parsed within the limit, so nothing
                # past this point is worth buffering.
                self._header_done = True
                return

        missing = self._header_len - len(self._header)
        self._header += view[:missing]
        if len(self._header) >= self._header_len:
            self._header_done = True

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Validate the buffered header against the streamed length.

        1. The length field is complete, within the limit and within the file.
        2. The header is strict UTF-8 JSON: one object, no duplicate keys, no
           NaN or Infinity, padded with spaces only.
        3. ``__metadata__`` maps strings to strings, and every tensor entry has
           exactly a known dtype, a shape and ``data_offsets``.
        4. Each tensor's range has the size that its shape and dtype need.
        5. The ranges tile the data section from 0 to its end, with no
           overlap, hole or trailing byte.
        """
        result = ScanResult(format=Format.SAFETENSORS)
        header = self._read_header()
        if header is not None:
            result.facts = self._validate(header)
        result.findings = self._findings + self._overflow_findings()
        return result

    def _read_header(self) -> dict[str, Any] | None:
        header_len = self._header_len
        if header_len is None:
            self._add(
                "safetensors.truncated",
                Severity.HIGH,
                f"the file has {self._total} bytes, fewer than the 8-byte header "
                "length field that starts every safetensors file",
                _REDOWNLOAD,
                offset=0,
            )
            return None

        limit = self.ctx.limits.max_safetensors_header
        if header_len > limit:
            self._add(
                "safetensors.header-too-large",
                Severity.HIGH,
                f"the header length field declares {_number(header_len)} bytes, "
                f"over the limit of {limit} bytes that the gate and the "
                "safetensors library accept",
                _REEXPORT,
                offset=0,
                header_length=_number(header_len),
                limit=limit,
            )
            return None

        available = self._total - _LENGTH_FIELD
        if header_len > available:
            self._add(
                "safetensors.invalid-header",
                Severity.HIGH,
                f"the header length field declares {header_len} bytes, but only "
                f"{available} bytes follow it in the file",
                _REDOWNLOAD,
                offset=0,
                header_length=header_len,
                file_size=self._total,
            )
            return None

        try:
            return _parse_header(bytes(self._header))
        except _HeaderError as exc:
            self._add(
                "safetensors.invalid-header",
                Severity.HIGH,
                f"the header is not valid safetensors JSON: {exc}",
                _REEXPORT,
                offset=_LENGTH_FIELD,
            )
            return None

    def _validate(self, header: dict[str, Any]) -> dict[str, Any]:
        assert self._header_len is not None
        data_len = self._total - _LENGTH_FIELD - self._header_len
        facts: dict[str, Any] = {
            "header_bytes": self._header_len,
            "data_bytes": data_len,
        }

        metadata = header.pop("__metadata__", None)
        if metadata is not None:
            facts["metadata_keys"] = self._check_metadata(metadata)

        count = len(header)
        facts["tensor_count"] = count
        limit = self.ctx.limits.max_safetensors_tensors
        if count > limit:
            self._add(
                "safetensors.too-many-tensors",
                Severity.HIGH,
                f"the header lists {count} tensors, over the limit of {limit}",
                _REEXPORT,
                offset=_LENGTH_FIELD,
                tensor_count=count,
                limit=limit,
            )
            return facts

        tensors = [self._check_entry(name, entry) for name, entry in header.items()]
        valid = [tensor for tensor in tensors if tensor is not None]
        facts["dtypes"] = _count_dtypes(valid)
        facts["parameters"] = sum(self._check_size(tensor, data_len) for tensor in valid)
        if len(valid) == len(tensors):
            # A malformed entry has no trustworthy range, so checking the
            # layout without it would report holes that are not there.
            self._check_layout(valid, data_len)
        return facts

    def _check_metadata(self, metadata: object) -> list[str]:
        if not isinstance(metadata, dict):
            self._add(
                "safetensors.invalid-header",
                Severity.HIGH,
                "__metadata__ must be a JSON object of strings, but it is a "
                f"{_json_type(metadata)}",
                _REEXPORT,
                offset=_LENGTH_FIELD,
            )
            return []

        for key, value in metadata.items():
            if not isinstance(value, str):
                self._add(
                    "safetensors.invalid-header",
                    Severity.HIGH,
                    f"__metadata__ entry {_quote(key)} must be a string, but it "
                    f"is a {_json_type(value)}",
                    _REEXPORT,
                    offset=_LENGTH_FIELD,
                )
        return [_shorten(key) for key in sorted(metadata)[:_MAX_FACT_KEYS]]

    def _check_entry(self, name: str, entry: object) -> _Tensor | None:
        problem = _entry_problem(entry)
        if problem is not None:
            self._add(
                "safetensors.invalid-header",
                Severity.HIGH,
                f"tensor {_quote(name)} is malformed: {problem}",
                _REEXPORT,
                offset=_LENGTH_FIELD,
                tensor=_shorten(name),
            )
            return None

        assert isinstance(entry, dict)
        begin, end = entry["data_offsets"]
        return _Tensor(name, entry["dtype"], tuple(entry["shape"]), begin, end)

    def _check_size(self, tensor: _Tensor, data_len: int) -> int:
        """Compare a tensor's range with its shape and return its element count."""
        bits = DTYPE_BITS.get(tensor.dtype)
        offset = self._data_offset(tensor.begin)
        if bits is None:
            self._add(
                "safetensors.unknown-dtype",
                Severity.MEDIUM,
                f"tensor {_quote(tensor.name)} has dtype {_quote(tensor.dtype)}, "
                "which the safetensors format does not define, so its size "
                "cannot be checked",
                "Re-export the tensor with a dtype that the safetensors format "
                "defines, or have a reviewer confirm that the producing tool "
                "writes this dtype on purpose.",
                offset=offset,
                tensor=_shorten(tensor.name),
                dtype=_shorten(tensor.dtype),
            )
            return 0

        span = tensor.end - tensor.begin
        elements = _element_count(tensor.shape, max(span, data_len) * 8 // bits + 1)
        describe = (
            f"tensor {_quote(tensor.name)} has shape {_shape_text(tensor.shape)} of {tensor.dtype}"
        )
        if elements is None:
            message = (
                f"{describe}, which needs more bytes than the whole data "
                f"section ({data_len}), but its data_offsets span {_number(span)}"
            )
        elif elements * bits % 8:
            message = (
                f"{describe}, which is {elements * bits} bits and so does not fill whole bytes"
            )
        elif elements * bits // 8 != span:
            message = (
                f"{describe}, which needs {elements * bits // 8} bytes, but its "
                f"data_offsets [{_number(tensor.begin)}, {_number(tensor.end)}] "
                f"span {_number(span)} bytes"
            )
        else:
            return elements

        self._add(
            "safetensors.size-mismatch",
            Severity.HIGH,
            message,
            _REEXPORT,
            offset=offset,
            tensor=_shorten(tensor.name),
        )
        return 0

    def _check_layout(self, tensors: list[_Tensor], data_len: int) -> None:
        """Check that the sorted ranges tile ``[0, data_len)`` exactly."""
        cursor = 0
        owner: _Tensor | None = None
        for tensor in sorted(tensors, key=lambda t: (t.begin, t.end)):
            if owner is not None and tensor.begin < cursor:
                self._report_overlap(owner, tensor, cursor)
            elif tensor.begin > cursor:
                self._report_gap(cursor, tensor)
            if owner is None or tensor.end > cursor:
                cursor, owner = tensor.end, tensor

        if owner is not None and cursor > data_len:
            self._add(
                "safetensors.truncated",
                Severity.HIGH,
                f"tensor {_quote(owner.name)} ends at byte {_number(cursor)} of "
                f"the data section, but the file holds only {data_len} data bytes",
                _REDOWNLOAD,
                offset=self._data_offset(owner.begin),
                tensor=_shorten(owner.name),
                needed=_number(cursor),
                available=data_len,
            )
        elif cursor < data_len:
            self._add(
                "safetensors.trailing-bytes",
                Severity.MEDIUM,
                f"the last {data_len - cursor} bytes of the file, from offset "
                f"{self._data_offset(cursor)}, belong to no tensor, so they can "
                "carry content that loaders never show",
                _REEXPORT,
                offset=self._data_offset(cursor),
                trailing=data_len - cursor,
            )

    def _report_overlap(self, owner: _Tensor, tensor: _Tensor, cursor: int) -> None:
        self._add(
            "safetensors.overlap",
            Severity.HIGH,
            f"the data_offsets of tensor {_quote(tensor.name)} "
            f"[{_number(tensor.begin)}, {_number(tensor.end)}] start inside those "
            f"of tensor {_quote(owner.name)} [{_number(owner.begin)}, "
            f"{_number(cursor)}], so the two tensors share bytes",
            _REEXPORT,
            offset=self._data_offset(tensor.begin),
            tensors=[_shorten(owner.name), _shorten(tensor.name)],
        )

    def _report_gap(self, cursor: int, tensor: _Tensor) -> None:
        self._add(
            "safetensors.gap",
            Severity.MEDIUM,
            f"data bytes {_number(cursor)} to {_number(tensor.begin)}, before "
            f"tensor {_quote(tensor.name)}, belong to no tensor, so they can "
            "carry content that loaders never show",
            _REEXPORT,
            offset=self._data_offset(cursor),
            hole=[_number(cursor), _number(tensor.begin)],
        )

    def _data_offset(self, position: int) -> int | None:
        """Return the file offset of a data-section position, if it is plausible."""
        assert self._header_len is not None
        offset = _LENGTH_FIELD + self._header_len + position
        return offset if offset <= self._total else None

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
        """Sum up, one finding per rule, the findings that the cap left out."""
        summaries: list[Finding] = []
        listed = {finding.rule: finding for finding in reversed(self._findings)}
        for rule, count in self._counts.items():
            hidden = count - _MAX_FINDINGS_PER_RULE
            if hidden > 0:
                first = listed[rule]
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


def _parse_header(raw: bytes) -> dict[str, Any]:
    """Parse header bytes as strict JSON, raising _HeaderError with the reason."""
    # The format allows the writer to pad the header with spaces (0x20) to an
    # alignment. No other padding byte is allowed.
    body = raw.rstrip(b" ")
    if not body.startswith(b"{"):
        raise _HeaderError("it does not start with '{'")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _HeaderError(f"byte {exc.start} is not valid UTF-8") from None

    decoder = json.JSONDecoder(
        object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
    )
    try:
        value, end = decoder.raw_decode(text)
    except RecursionError:
        raise _HeaderError("it nests too deeply to parse") from None
    except ValueError as exc:
        # json.JSONDecodeError and the digit limit of int() both raise
        # ValueError. _HeaderError passes through with its own message.
        if isinstance(exc, _HeaderError):
            raise
        raise _HeaderError(str(exc)) from None
    if end != len(text):
        raise _HeaderError(f"unexpected data after the JSON object at character {end}")
    if not isinstance(value, dict):
        raise _HeaderError(f"the top level is a {_json_type(value)}, not an object")
    return value


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _HeaderError(f"key {_quote(key)} appears more than once")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise _HeaderError(f"{name} is not a JSON number")


def _entry_problem(entry: object) -> str | None:
    """Return why a tensor entry is malformed, or None when it is well formed."""
    if not isinstance(entry, dict):
        return f"its entry is a {_json_type(entry)}, not an object"
    keys = set(entry)
    if keys != _TENSOR_KEYS:
        missing = sorted(_TENSOR_KEYS - keys)
        extra = sorted(_shorten(key) for key in keys - _TENSOR_KEYS)[:5]
        return (
            "expected the keys dtype, shape and data_offsets, "
            f"but {missing} are missing and {extra} are extra"
        )

    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        return f"dtype is a {_json_type(dtype)}, not a string"
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        return "shape is not a list of non-negative integers"
    if len(shape) > _MAX_RANK:
        return f"shape has {len(shape)} dimensions, over the maximum of {_MAX_RANK}"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        return "data_offsets is not a list of two non-negative integers"
    if offsets[0] > offsets[1]:
        return f"data_offsets [{_number(offsets[0])}, {_number(offsets[1])}] end before they begin"
    return None


def _is_count(value: object) -> bool:
    # bool is a subclass of int, but JSON true is not a dimension.
    return type(value) is int and value >= 0


def _element_count(shape: tuple[int, ...], bound: int) -> int | None:
    """Return the product of ``shape``, or None once it exceeds ``bound``."""
    if 0 in shape:
        return 0
    product = 1
    for dim in shape:
        product *= dim
        if product > bound:
            return None
    return product


def _count_dtypes(tensors: list[_Tensor]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tensor in tensors:
        key = _shorten(tensor.dtype)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "number")


def _number(value: int) -> str:
    """Format an integer from the header, abbreviating absurdly large ones."""
    if value.bit_length() <= 128:
        return str(value)
    return f"about 2**{value.bit_length() - 1}"


def _shape_text(shape: tuple[int, ...]) -> str:
    return _shorten("[" + ", ".join(_number(d) for d in shape) + "]")


def _shorten(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"... ({len(text)} characters)"


def _quote(text: str) -> str:
    return repr(_shorten(text))
