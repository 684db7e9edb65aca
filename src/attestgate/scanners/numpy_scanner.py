"""Check NumPy ``.npy`` files: the header, the data size, and object arrays.

An ``.npy`` file is the magic ``\\x93NUMPY``, a version (1.0, 2.0 or 3.0), the
header length (2 bytes in version 1.0, 4 bytes later), then a header that is a
Python dict literal with the keys ``descr``, ``fortran_order`` and ``shape``.
The array data follows. When the dtype contains Python objects, the data is a
pickle that ``numpy.load(allow_pickle=True)`` unpickles, so the scanner streams
it into the pickle scanner. Otherwise the data must be exactly the shape times
the item size.

``.npz`` files are zip archives of ``.npy`` members; the zip scanner sends each
member here.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners import open_scanner
from attestgate.scanners.interface import ReadAt, ScanContext, Scanner, ScanResult

__all__ = ["NpyScanner"]

logger = logging.getLogger(__name__)

MAGIC = b"\x93NUMPY"
# numpy.load rejects headers over 10,000 bytes unless the caller raises
# max_header_size. The gate parses headers up to this bound, so that a large
# structured dtype still gets its data checked.
MAX_HEADER_BYTES = 1024 * 1024
# NumPy 2 arrays have at most 64 dimensions.
MAX_RANK = 64
# Nesting of structured and subarray dtypes inside each other.
_MAX_DTYPE_DEPTH = 32
_MAX_TEXT = 120
_HEADER_KEYS = frozenset({"descr", "fortran_order", "shape"})
_PAYLOAD_MEMBER = "pickle-payload"

# A dtype string as numpy.save writes it (dtype.str): byte order, kind, size in
# bytes (characters for U), and a unit for datetimes.
_TYPESTR = re.compile(r"([<>|=]?)([biufcSaUVMmO?])(\d*)(\[[A-Za-z0-9]+\])?")
_FIXED_SIZES: dict[str, frozenset[int]] = {
    "b": frozenset({1}),
    "i": frozenset({1, 2, 4, 8}),
    "u": frozenset({1, 2, 4, 8}),
    "f": frozenset({2, 4, 8, 10, 12, 16}),
    "c": frozenset({8, 16, 20, 24, 32}),
    "M": frozenset({8}),
    "m": frozenset({8}),
}

_REEXPORT = (
    "Do not load this file. Save the array again from a trusted copy with "
    "numpy.save, which writes a valid header, and admit the new file."
)
_OBJECT_REMEDIATION = (
    "Loading this array needs numpy.load(allow_pickle=True), which runs whatever "
    "the pickle says. Convert the array to a numeric or fixed-width string dtype "
    "(or to safetensors) and save it again; if the objects are required, have a "
    "reviewer inspect the pickle findings before approving this digest."
)


class _HeaderError(ValueError):
    """The header is not one that numpy.load accepts."""


class _UnknownDtype(ValueError):
    """A dtype string that numpy.save never writes, so its size is unknown."""


@dataclass(frozen=True)
class _Dtype:
    itemsize: int
    has_object: bool


@dataclass(frozen=True)
class _Header:
    version: tuple[int, int]
    descr: object
    shape: tuple[int, ...]
    fortran_order: bool


class NpyScanner(Scanner):
    """Validates an ``.npy`` header and sends object-array pickles to the pickle scanner."""

    check = "numpy"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._prefix = bytearray()
        self._data_start: int | None = None
        self._header: _Header | None = None
        self._dtype: _Dtype | None = None
        self._payload: Scanner | None = None
        self._total = 0
        self._findings: list[Finding] = []
        self._failed = False

    def feed(self, chunk: memoryview) -> None:
        self._total += len(chunk)
        if self._failed:
            return
        if self._data_start is None:
            used = self._take_prefix(chunk)
            if self._data_start is None:
                return
            chunk = chunk[used:]
        if self._payload is not None and len(chunk):
            self._payload.feed(chunk)

    def _take_prefix(self, chunk: memoryview) -> int:
        """Buffer magic, version, length field and header; return the bytes used.

        Parses the header once it is complete, which sets ``_data_start``.
        """
        used = 0
        while self._data_start is None and not self._failed:
            wanted, final = self._wanted()
            if len(self._prefix) == 8 and not final:
                try:
                    _check_magic(bytes(self._prefix))
                except _HeaderError as exc:
                    self._fail(str(exc), offset=0)
                    break
            header_length = wanted - _length_end(self._prefix)
            if final and header_length > MAX_HEADER_BYTES:
                self._fail(
                    f"the header length field declares {header_length} bytes, over "
                    f"the {MAX_HEADER_BYTES} bytes the gate parses",
                    offset=8,
                )
                break
            piece = chunk[used : used + wanted - len(self._prefix)]
            self._prefix += piece
            used += len(piece)
            if len(self._prefix) < wanted:
                break
            if final:
                self._data_start = wanted
                self._parse_prefix()
        return used

    def _wanted(self) -> tuple[int, bool]:
        """Return how many prefix bytes to buffer next, and whether that is all of them."""
        have = len(self._prefix)
        if have < 8:
            return 8, False
        length_end = _length_end(self._prefix)
        if have < length_end:
            return length_end, False
        return length_end + int.from_bytes(self._prefix[8:length_end], "little"), True

    def _parse_prefix(self) -> None:
        try:
            header = _parse_header(bytes(self._prefix))
        except _HeaderError as exc:
            self._fail(str(exc), offset=0)
            return
        self._header = header

        try:
            self._dtype = _dtype_of(header.descr, 0)
        except _UnknownDtype as exc:
            self._unknown_dtype(header.descr, str(exc))
            if not _mentions_object(header.descr):
                return
            self._dtype = _Dtype(itemsize=0, has_object=True)

        if self._dtype.has_object:
            self._open_payload()

    def _open_payload(self) -> None:
        assert self._data_start is not None
        size = None if self.ctx.size is None else max(self.ctx.size - self._data_start, 0)
        self._payload = open_scanner(Format.PICKLE, self.ctx.member(_PAYLOAD_MEMBER, size))
        self._findings.append(
            self.finding(
                "numpy.object-array",
                Severity.MEDIUM,
                f"the array has dtype {_describe(self._header.descr if self._header else '')}, "
                "which holds Python objects stored as a pickle after the header",
                _OBJECT_REMEDIATION,
                offset=self._data_start,
            )
        )

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Check the header was complete and the data has the size the header declares.

        1. The prefix and header arrived in full and parsed.
        2. An object array's pickle payload goes to the pickle scanner,
           located as ``<file>:pickle-payload``.
        3. Any other array's data is exactly shape times item size.
        """
        result = ScanResult(format=Format.NUMPY)
        if self._data_start is None and not self._failed:
            self._fail(
                f"the file ends after {self._total} bytes, inside the header "
                "that every .npy file starts with",
                offset=0,
            )
        if self._header is not None:
            result.facts = self._facts()

        if self._payload is not None:
            result.findings = self._findings + self._close_payload(read_at)
            return result
        if self._header is not None and self._dtype is not None:
            self._check_size(self._header, self._dtype)
        result.findings = self._findings
        return result

    def _close_payload(self, read_at: ReadAt | None) -> list[Finding]:
        assert self._payload is not None and self._data_start is not None
        payload_read_at: ReadAt | None = None
        if read_at is not None:
            start = self._data_start

            def payload_read_at(offset: int, length: int) -> bytes:
                return read_at(start + offset, length)

        return self._payload.close(payload_read_at).findings

    def _check_size(self, header: _Header, dtype: _Dtype) -> None:
        assert self._data_start is not None
        available = self._total - self._data_start
        elements = math.prod(header.shape)
        expected = elements * dtype.itemsize
        shape = _shape_text(header.shape)
        if available < expected:
            self._findings.append(
                self.finding(
                    "numpy.size-mismatch",
                    Severity.HIGH,
                    f"the header declares shape {shape} of {_describe(header.descr)} "
                    f"({_number(expected)} bytes), but only {available} bytes of "
                    "data follow the header",
                    _REEXPORT,
                    offset=self._data_start,
                    expected=_number(expected),
                    available=available,
                )
            )
        elif available > expected:
            self._findings.append(
                self.finding(
                    "numpy.trailing-bytes",
                    Severity.MEDIUM,
                    f"{available - expected} bytes follow the {expected} bytes of "
                    f"data that shape {shape} of {_describe(header.descr)} needs; "
                    "numpy.load ignores them, so they can carry content that no "
                    "loader shows",
                    _REEXPORT,
                    offset=self._data_start + expected,
                    trailing=available - expected,
                )
            )

    def _facts(self) -> dict[str, Any]:
        assert self._header is not None and self._data_start is not None
        header = self._header
        facts: dict[str, Any] = {
            "npy_version": f"{header.version[0]}.{header.version[1]}",
            "dtype": _shorten(
                header.descr if isinstance(header.descr, str) else repr(header.descr)
            ),
            "shape": [_number(dim) for dim in header.shape],
            "fortran_order": header.fortran_order,
            "data_bytes": max(self._total - self._data_start, 0),
        }
        if self._dtype is not None:
            facts["object"] = self._dtype.has_object
        return facts

    def _unknown_dtype(self, descr: object, reason: str) -> None:
        self._findings.append(
            self.finding(
                "numpy.unknown-dtype",
                Severity.MEDIUM,
                f"the header's descr {_describe(descr)} is not a dtype that numpy.save "
                f"writes ({reason}), so the data size cannot be checked",
                "Save the array again with numpy.save from a trusted copy, or have a "
                "reviewer confirm which tool wrote this dtype and why.",
                offset=0,
            )
        )

    def _fail(self, message: str, *, offset: int) -> None:
        self._failed = True
        self._findings.append(
            self.finding(
                "numpy.malformed-header",
                Severity.HIGH,
                message,
                _REEXPORT,
                offset=offset,
            )
        )


def _parse_header(prefix: bytes) -> _Header:
    """Parse magic, version and header dict the way numpy.lib.format reads them."""
    version = _check_magic(prefix)

    raw = prefix[10:] if version[0] == 1 else prefix[12:]
    # Versions 1.0 and 2.0 store the header as latin-1, version 3.0 as UTF-8.
    encoding = "latin-1" if version[0] < 3 else "utf-8"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _HeaderError(f"header byte {exc.start} is not valid UTF-8") from None

    try:
        # literal_eval builds only literals: it never calls or imports anything.
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        reason = type(exc).__name__
        raise _HeaderError(f"the header is not a Python literal ({reason})") from None

    if not isinstance(value, dict):
        raise _HeaderError(f"the header is a {type(value).__name__}, not a dict")
    keys = set(value)
    if keys != _HEADER_KEYS:
        shown = sorted(_shorten(repr(key)) for key in keys)[:6]
        raise _HeaderError(
            f"the header keys are {', '.join(shown) or 'none'}, but numpy.load "
            "requires exactly 'descr', 'fortran_order' and 'shape'"
        )
    shape = value["shape"]
    if not isinstance(shape, tuple) or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise _HeaderError(f"shape {_shorten(repr(shape))} is not a tuple of non-negative ints")
    if len(shape) > MAX_RANK:
        raise _HeaderError(f"shape has {len(shape)} dimensions, over the maximum of {MAX_RANK}")
    fortran_order = value["fortran_order"]
    if not isinstance(fortran_order, bool):
        raise _HeaderError(f"fortran_order {_shorten(repr(fortran_order))} is not a bool")
    return _Header(version, value["descr"], shape, fortran_order)


def _length_end(prefix: bytes | bytearray) -> int:
    """Return where the header starts: version 1.0 has a 2-byte header length, later 4."""
    return 10 if len(prefix) > 6 and prefix[6] == 1 else 12


def _check_magic(prefix: bytes) -> tuple[int, int]:
    """Check the magic and return the format version from the first 8 bytes."""
    if prefix[:6] != MAGIC:
        raise _HeaderError("the file does not start with the .npy magic \\x93NUMPY")
    version = (prefix[6], prefix[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise _HeaderError(
            f"format version {version[0]}.{version[1]} is not one of 1.0, 2.0 and 3.0"
        )
    return version


def _dtype_of(descr: object, depth: int) -> _Dtype:
    """Return the item size of a header descr and whether it contains objects.

    Mirrors numpy.lib.format.descr_to_dtype: a string is one dtype, a tuple
    ``(descr, shape)`` a subarray, and a list the fields of a structured dtype,
    whose item size is the sum of its fields (padding fields included).
    """
    if depth > _MAX_DTYPE_DEPTH:
        raise _UnknownDtype(f"it nests more than {_MAX_DTYPE_DEPTH} levels deep")
    if isinstance(descr, str):
        return _typestr_dtype(descr)
    if isinstance(descr, tuple) and len(descr) == 2:
        base = _dtype_of(descr[0], depth + 1)
        return _Dtype(base.itemsize * _subarray_count(descr[1]), base.has_object)
    if isinstance(descr, list):
        itemsize = 0
        has_object = False
        for field in descr:
            field_dtype = _field_dtype(field, depth + 1)
            itemsize += field_dtype.itemsize
            has_object = has_object or field_dtype.has_object
        return _Dtype(itemsize, has_object)
    raise _UnknownDtype(f"a {type(descr).__name__} is not a dtype description")


def _field_dtype(field: object, depth: int) -> _Dtype:
    if not isinstance(field, tuple) or len(field) not in (2, 3):
        raise _UnknownDtype("a structured field is not a (name, dtype[, shape]) tuple")
    name = field[0]
    valid_name = isinstance(name, str) or (
        isinstance(name, tuple) and len(name) == 2 and all(isinstance(n, str) for n in name)
    )
    if not valid_name:
        raise _UnknownDtype("a structured field name is not a string or (title, name)")
    base = _dtype_of(field[1], depth)
    if len(field) == 2:
        return base
    return _Dtype(base.itemsize * _subarray_count(field[2]), base.has_object)


def _subarray_count(shape: object) -> int:
    dims = (shape,) if isinstance(shape, int) else shape
    if not isinstance(dims, tuple) or not all(type(d) is int and d >= 0 for d in dims):
        raise _UnknownDtype("a subarray shape is not a tuple of non-negative ints")
    if len(dims) > MAX_RANK:
        raise _UnknownDtype(f"a subarray has more than {MAX_RANK} dimensions")
    return math.prod(dims)


def _typestr_dtype(text: str) -> _Dtype:
    match = _TYPESTR.fullmatch(text)
    if match is None:
        raise _UnknownDtype("not a byte order, kind and size such as '<f4'")
    kind, digits = match.group(2), match.group(3)
    if kind == "O":
        return _Dtype(8, has_object=True)
    if kind == "?":
        if digits:
            raise _UnknownDtype("'?' takes no size")
        return _Dtype(1, has_object=False)
    if not digits:
        raise _UnknownDtype(f"kind {kind!r} needs a size")
    size = int(digits)
    allowed = _FIXED_SIZES.get(kind)
    if allowed is not None and size not in allowed:
        raise _UnknownDtype(f"kind {kind!r} has no {size}-byte variant")
    if kind == "U":
        # Unicode strings are UCS-4: four bytes per character.
        size *= 4
    return _Dtype(size, has_object=False)


def _mentions_object(descr: object) -> bool:
    """Tell whether an unparsed descr could name an object dtype anywhere inside."""
    if isinstance(descr, str):
        return "O" in descr or "object" in descr.lower()
    if isinstance(descr, list | tuple):
        return any(_mentions_object(item) for item in descr)
    return False


def _describe(descr: object) -> str:
    return _shorten(repr(descr))


def _shape_text(shape: tuple[int, ...]) -> str:
    return _shorten("(" + ", ".join(_number(dim) for dim in shape) + ")")


def _number(value: int) -> str:
    """Format an integer from the header, abbreviating absurdly large ones."""
    if value.bit_length() <= 128:
        return str(value)
    return f"about 2**{value.bit_length() - 1}"


def _shorten(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"... ({len(text)} characters)"
