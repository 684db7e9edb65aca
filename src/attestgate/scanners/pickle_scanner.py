"""Static scan of pickle streams for the globals they import and call.

The scanner simulates the unpickler's stack, mark stack and memo opcode by
opcode, without importing or calling anything, so that every global is
resolved even when its module and name pass through the memo or are built by
STACK_GLOBAL. It reads protocols 0 to 5 incrementally from arbitrary chunks
and scans every pickle of a stream, one after another.

joblib writes each NumPy array's bytes right after the BUILD of its
``NumpyArrayWrapper``, and joblib.load reads them there. Once a stream imports
that wrapper, the scan keeps ints, booleans, tuples, small dicts and dtypes
exactly, and skips the array bytes when ``pickle_joblib`` can size them.
joblib 1.1 and older read no alignment padding, so from the first padded
array on they parse other bytes as opcodes. A second scanner, the legacy
view, follows that reading from a copy of the stack and memo. Its findings
of globals and calls are reported too.

The simulation follows CPython's unpickler. It may accept input that CPython
rejects (it lets opcodes pop values below a MARK, say) but it never stops on
input that CPython accepts, because a payload placed after the point where a
scanner gives up would still run.

Rules:

- ``pickle.unsafe-global`` (critical): a global that runs code or reaches the
  operating system, whether it is called or only referenced.
- ``pickle.unknown-global-call`` (high) and ``pickle.unknown-global``
  (medium): a global outside the allowlist that is called, or only
  referenced. The high rule also covers a joblib array whose data the scan
  cannot size, because joblib.load then calls
  ``NumpyArrayWrapper.read`` on bytes that the scan parsed as opcodes.
- ``pickle.build-on-global`` (high): BUILD sets attributes on a module or
  class.
- ``pickle.unresolved-call`` (high): a call whose callable is not a named
  global.
- ``pickle.unresolved-global`` (high): STACK_GLOBAL on values that are not
  strings, or a module or name longer than the scan keeps.
- ``pickle.extension-code`` (medium): an EXT opcode.
- ``pickle.truncated``, ``pickle.malformed``, ``pickle.limit-exceeded``
  (medium) and ``pickle.trailing-data`` (low, or high in the members of
  torch's legacy tar format, where torch unpickles data after raw frames).
"""

from __future__ import annotations

import codecs
import copy
import enum
import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, could_start_pickle
from attestgate.scanners import open_scanner
from attestgate.scanners.interface import ReadAt, ScanContext, Scanner, ScanResult
from attestgate.scanners.pickle_globals import Kind, argument_calls, classify
from attestgate.scanners.pickle_joblib import (
    DTYPE,
    NONE,
    RETURNS_ARGUMENT,
    WRAPPER,
    ArrayLayout,
    ArrayWrapper,
    Dtype,
    NoneValue,
    StateDict,
    array_layout,
    creates_empty_wrapper,
    global_role,
)

__all__ = ["PickleProbe", "PickleScanner", "with_pickle_probe"]

logger = logging.getLogger(__name__)


class Op(enum.IntEnum):
    """Pickle opcodes, with the names that pickletools and pickle.py give them."""

    MARK = 0x28  # (
    STOP = 0x2E  # .
    POP = 0x30  # 0
    POP_MARK = 0x31  # 1
    DUP = 0x32  # 2
    BINBYTES = 0x42  # B
    SHORT_BINBYTES = 0x43  # C
    FLOAT = 0x46  # F
    BINFLOAT = 0x47  # G
    INT = 0x49  # I
    BININT = 0x4A  # J
    BININT1 = 0x4B  # K
    LONG = 0x4C  # L
    BININT2 = 0x4D  # M
    NONE = 0x4E  # N
    PERSID = 0x50  # P
    BINPERSID = 0x51  # Q
    REDUCE = 0x52  # R
    STRING = 0x53  # S
    BINSTRING = 0x54  # T
    SHORT_BINSTRING = 0x55  # U
    UNICODE = 0x56  # V
    BINUNICODE = 0x58  # X
    EMPTY_LIST = 0x5D  # ]
    APPEND = 0x61  # a
    BUILD = 0x62  # b
    GLOBAL = 0x63  # c
    DICT = 0x64  # d
    APPENDS = 0x65  # e
    GET = 0x67  # g
    BINGET = 0x68  # h
    INST = 0x69  # i
    LONG_BINGET = 0x6A  # j
    LIST = 0x6C  # l
    OBJ = 0x6F  # o
    PUT = 0x70  # p
    BINPUT = 0x71  # q
    LONG_BINPUT = 0x72  # r
    SETITEM = 0x73  # s
    TUPLE = 0x74  # t
    SETITEMS = 0x75  # u
    EMPTY_TUPLE = 0x29  # )
    EMPTY_DICT = 0x7D  # }
    PROTO = 0x80
    NEWOBJ = 0x81
    EXT1 = 0x82
    EXT2 = 0x83
    EXT4 = 0x84
    TUPLE1 = 0x85
    TUPLE2 = 0x86
    TUPLE3 = 0x87
    NEWTRUE = 0x88
    NEWFALSE = 0x89
    LONG1 = 0x8A
    LONG4 = 0x8B
    SHORT_BINUNICODE = 0x8C
    BINUNICODE8 = 0x8D
    BINBYTES8 = 0x8E
    EMPTY_SET = 0x8F
    ADDITEMS = 0x90
    FROZENSET = 0x91
    NEWOBJ_EX = 0x92
    STACK_GLOBAL = 0x93
    MEMOIZE = 0x94
    FRAME = 0x95
    BYTEARRAY8 = 0x96
    NEXT_BUFFER = 0x97
    READONLY_BUFFER = 0x98


HIGHEST_PROTOCOL: Final = 5

# The first pickle of a legacy (non-zip) torch.save file contains this
# number. Four more pickles and the raw storage bytes follow it.
LEGACY_TORCH_MAGIC: Final = 0x1950A86A20F9469CFC6C
LEGACY_TORCH_PICKLES: Final = 5

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")

# Argument size of the opcodes that push a value the scan never needs to
# read (numbers, empty containers); -1 for every other opcode.
_OPAQUE_PUSHES: Final[dict[int, int]] = {
    Op.BININT1: 1,
    Op.BININT2: 2,
    Op.BININT: 4,
    Op.BINFLOAT: 8,
    Op.NONE: 0,
    Op.NEWTRUE: 0,
    Op.NEWFALSE: 0,
    Op.EMPTY_DICT: 0,
    Op.EMPTY_LIST: 0,
    Op.EMPTY_TUPLE: 0,
    Op.EMPTY_SET: 0,
}
_OPAQUE_PUSH_SIZES: Final = tuple(_OPAQUE_PUSHES.get(op, -1) for op in range(256))
# The opaque pushes whose value a joblib stream keeps, because ints, None,
# booleans and empty dicts and tuples may describe an array. The ints have
# the size _EXACT_INT in _JOBLIB_PUSH_SIZES, for a branch of _run, and the
# others -1, for _op_joblib_value.
_JOBLIB_INTS: Final[frozenset[int]] = frozenset({Op.BININT1, Op.BININT2, Op.BININT})
_JOBLIB_CONSTANTS: Final[frozenset[int]] = frozenset(
    {Op.NONE, Op.NEWTRUE, Op.NEWFALSE, Op.EMPTY_DICT, Op.EMPTY_TUPLE}
)
_EXACT_INT: Final = -2


def _joblib_push_sizes() -> tuple[int, ...]:
    sizes = list(_OPAQUE_PUSH_SIZES)
    for op in _JOBLIB_INTS:
        sizes[op] = _EXACT_INT
    for op in _JOBLIB_CONSTANTS:
        sizes[op] = -1
    return tuple(sizes)


_JOBLIB_PUSH_SIZES: Final = _joblib_push_sizes()
_OPCODES: Final = frozenset(int(op) for op in Op)

# STRING escapes that codecs.escape_decode decodes. A backslash before any
# other byte stays in the string.
_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)
_KNOWN_ESCAPES: Final = frozenset(b"\n\\'\"abfnrtvx01234567")
# The numbers that C's strtol(s, &end, 0) accepts: leading white space, a
# sign, then a hexadecimal, octal or decimal number. An empty string is 0.
_STRTOL: Final = re.compile(rb"[ \t\n\v\f\r]*([-+]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
# A tuple keeps this many leading items: enough for the arguments that
# copyreg._reconstructor and torch's rebuild helpers call.
_TUPLE_ITEMS_KEPT: Final = 4
# In a joblib stream, tuples up to this length are kept whole: an array's
# shape has at most 64 dimensions in NumPy 2.
_EXACT_TUPLE_ITEMS: Final = 64
# A PUT or GET line longer than this cannot be a memo index that a binary
# opcode could also reach, and Python 3.11 rejects ints of 4300 digits.
_MAX_MEMO_INDEX_LINE: Final = 4000
# Distinct (rule, global) pairs reported per stream; further ones are counted
# in one finding per rule so that memory stays bounded.
_MAX_DISTINCT_HITS: Final = 1000
_MAX_FACT_GLOBALS: Final = 200
_MAX_CACHED_GLOBALS: Final = 4096
# Opcodes between two checks of the stack, memo, opcode and time limits. A
# value grows by at most one entry per opcode, so it overshoots a limit by
# at most this many entries.
_MAX_CHECK_INTERVAL: Final = 8192
# Nesting of helpers that call their arguments, such as
# _rebuild_from_type_v2 wrapping copyreg._reconstructor.
_MAX_ARGUMENT_DEPTH: Final = 4
# Maximum length of a global name quoted in messages and details.
_DISPLAY_CHARS: Final = 200

_OTHER_GLOBALS: Final = "(other globals)"
# C0 and C1 controls, bidirectional overrides and lone surrogates.
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class Opaque:
    """A value whose content the scan does not need, such as a number or a list."""

    __slots__ = ("description",)

    def __init__(self, description: str) -> None:
        self.description = description

    def __deepcopy__(self, memo: dict[int, Any]) -> Opaque:
        return self


OPAQUE: Final = Opaque("a value that is not a named global")


class Global:
    """A global that GLOBAL, STACK_GLOBAL or INST imports, with its class."""

    __slots__ = ("call", "kind", "module", "name", "on_import", "path", "reason", "role")

    def __init__(self, module: str, name: str, torchscript: bool) -> None:
        classification = classify(module, name, torchscript)
        self.module = module
        self.name = name
        self.path = _display(f"{module}.{name}")
        self.kind = classification.kind
        self.reason = classification.reason
        self.on_import = classification.on_import
        self.call = Call(self)
        # The part the global plays in a joblib array, or "".
        self.role = global_role(module, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> Global:
        return self


class Call:
    """The result of a call; ``callee`` is the global called, when it is known."""

    __slots__ = ("callee",)

    def __init__(self, callee: Global | None) -> None:
        self.callee = callee

    def __deepcopy__(self, memo: dict[int, Any]) -> Call:
        return self


class Extension:
    """A global named by a code of the copyreg extension registry (EXT1/2/4)."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code

    def __deepcopy__(self, memo: dict[int, Any]) -> Extension:
        return self


# A string value is str, or bytes holding the UTF-8 of a BINUNICODE or
# SHORT_BINUNICODE argument. Those are decoded only when used as a name,
# because most strings in a checkpoint are dict keys that never are.
Value: TypeAlias = (
    "str | bytes | int | tuple[Value, ...] | Global | Call | Extension | Opaque"
    " | StateDict | ArrayWrapper | Dtype | NoneValue"
)


UNRESOLVED_CALL: Final = Call(None)
PERSISTENT_OBJECT: Final = Opaque("an object that the loader's persistent_load returns")
# A string longer than Limits.max_pickle_string: only its start is kept, so it
# cannot name a global that the scan could classify.
_LONG_STRING: Final = Opaque("a string too long to keep")
# The last item of a tuple that was too long to keep whole.
_TRUNCATED: Final = Opaque("the rest of a tuple too long to keep")
# A memo read that the scan cannot resolve, which may return any object.
_UNTRACKED: Final = Opaque("a memo entry that the scan could not track")
_MAYBE_WRAPPER: Final = Opaque("the result of a helper that may return its argument")
# The array that joblib's BUILD leaves on the stack in place of a wrapper.
_JOBLIB_ARRAY: Final = Opaque("an array that joblib reads")

# Values that no unpickler can call: numbers, containers, arrays, and
# strings too long to keep.
_NOT_CALLABLE: Final = (OPAQUE, _JOBLIB_ARRAY, _LONG_STRING, _TRUNCATED, PERSISTENT_OBJECT)
# The legacy view's findings that count: globals, calls and a scan that
# stopped early. Its truncated and malformed reports are left out, because
# a file that joblib 1.2 and newer wrote breaks there by design.
_LEGACY_RULES: Final = frozenset(
    {
        "pickle.unsafe-global",
        "pickle.unknown-global",
        "pickle.unknown-global-call",
        "pickle.build-on-global",
        "pickle.unresolved-call",
        "pickle.unresolved-global",
        "pickle.limit-exceeded",
    }
)

# Parses the opcode at the offset and returns the offset after it, or -1
# when its argument is not complete yet.
_Handler: TypeAlias = Callable[[bytes, int], int]


class _Malformed(Exception):
    """The pickle breaks the format at the current opcode."""


@dataclass(slots=True)
class _Pending:
    """An opcode whose argument continues past the end of the data fed so far."""

    op: int
    offset: int
    # Bytes of the argument still to read, or -1 for newline-ended lines.
    remaining: int
    # Maximum length of ``prefix``, the start of the argument that is kept.
    keep: int
    prefix: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    lines: list[tuple[bytes, bool]] = field(default_factory=list)
    lines_needed: int = 0


@dataclass(slots=True)
class _Hit:
    """Occurrences of one (rule, subject) pair, which become one finding."""

    rule: str
    severity: Severity
    offset: int
    message: str
    remediation: str
    details: dict[str, Any]
    count: int = 1


# Stream states.
_PARSING: Final = 0
_DATA: Final = 1
_HALTED: Final = 2

_REMEDIATE_CRITICAL: Final = (
    "Do not load this file. Ask the publisher for a safetensors export of the "
    "weights, and treat the publisher's account as compromised until they "
    "explain the import. If the file must be examined, do it only in a "
    "disposable sandbox without network access or credentials."
)
_REMEDIATE_UNKNOWN: Final = (
    "A full-model pickle needs the code of {g} to load and runs whatever that "
    "code does. Ask the publisher for a state_dict saved as safetensors, or "
    "have a reviewer confirm that {g} comes from a trusted package and record "
    "an exception for this file's digest."
)
_REMEDIATE_UNRESOLVED: Final = (
    "Do not load this file: legitimate pickles call named globals only. Ask "
    "the publisher for a safetensors export, or have a reviewer read the "
    "opcodes with 'python -m pickletools FILE', which does not execute them."
)
_ARRAY_READER: Final = "joblib.numpy_pickle.NumpyArrayWrapper.read"
_REMEDIATE_ARRAY: Final = (
    "Ask the publisher to save the arrays as safetensors or .npy files of a "
    "numeric dtype, which load without unpickling. Otherwise have a reviewer "
    "load the file with joblib in a disposable sandbox without network access "
    "or credentials before recording an exception for this file's digest."
)
_REMEDIATE_MALFORMED: Final = (
    "Ask the publisher for a fresh export, preferably as safetensors. A "
    "pickle that breaks the format is a known way to hide a payload from "
    "scanners, so review the other findings for this file before loading it."
)


def _opcode_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"0x{op:02x}"


def _display(text: str) -> str:
    # Names come from the file: control characters would let it forge lines
    # of a text report or move a terminal's cursor.
    if len(text) > _DISPLAY_CHARS:
        text = text[:_DISPLAY_CHARS] + "..."
    return _UNPRINTABLE.sub(_escape_character, text)


def _escape_character(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def _describe(value: Value) -> str:
    if isinstance(value, Global):
        return value.path
    if isinstance(value, Call):
        if value.callee is None:
            return "the result of an unresolved call"
        return f"the result of calling {value.callee.path}"
    if isinstance(value, Extension):
        return f"extension code {value.code}"
    if isinstance(value, str):
        return f"the string {_display(value)!r}"
    if isinstance(value, bytes):
        return f"the string {_display(value.decode('utf-8', 'replace'))!r}"
    if isinstance(value, tuple):
        return "a tuple"
    if isinstance(value, int):
        return "an integer"
    return value.description


def _maybe_callable(value: Value) -> bool:
    """Tell whether ``value`` may be callable; strings, numbers and containers are not."""
    if isinstance(value, str | bytes | int | tuple | StateDict | Dtype | ArrayWrapper | NoneValue):
        return False
    return all(value is not marker for marker in _NOT_CALLABLE)


def _maybe_text(value: Value) -> bool:
    """Tell whether ``value`` may be a str, as STACK_GLOBAL requires."""
    if isinstance(value, int | tuple | StateDict | Dtype | ArrayWrapper | NoneValue):
        return False
    return value is not OPAQUE and value is not _JOBLIB_ARRAY


def _overflow_key(hit: _Hit) -> tuple[str, str]:
    """Fold a hit into its rule's catch-all entry once a stream has too many."""
    hit.details = {"global": _OTHER_GLOBALS}
    hit.message = (
        f"{hit.message} The same rule also fired for further globals that the "
        "report does not list one by one."
    )
    return (hit.rule, _OTHER_GLOBALS)


def _make_tuple(items: list[Value], exact: bool = False) -> Value:
    """Build a tuple from ``items``, a list that the caller hands over.

    A tuple longer than the scan keeps ends with ``_TRUNCATED`` after its
    first items, so that it never passes for a shorter tuple.
    """
    if exact:
        if len(items) <= _EXACT_TUPLE_ITEMS:
            return tuple(items)
    else:
        for item in items:
            if item is not OPAQUE:
                break
        else:
            return OPAQUE
        if len(items) <= _TUPLE_ITEMS_KEPT:
            return tuple(items)
    items[_TUPLE_ITEMS_KEPT] = _TRUNCATED
    return tuple(items[: _TUPLE_ITEMS_KEPT + 1])


def _text(raw: bytes, encoding: str = "utf-8") -> str:
    # CPython decodes binary unicode with surrogatepass.
    try:
        return raw.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"the string is not valid {encoding}: {exc.reason}") from None


def _string_line(line: bytes, truncated: bool) -> Value:
    # The STRING opcode carries a quoted Python 2 literal with escapes.
    if truncated:
        return _LONG_STRING
    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
        body = line[1:-1]
    else:
        raise _Malformed("the STRING opcode argument must be quoted")
    if b"\\" in body:
        # An unknown escape such as \q stays as written, with a
        # DeprecationWarning that a warnings filter may turn into an error in
        # the gate but not in the loader. Doubling its backslash gives the
        # same bytes without the warning.
        body = _ESCAPE.sub(_keep_unknown_escape, body)
    try:
        decoded: object = codecs.escape_decode(body)[0]
    except ValueError as exc:
        raise _Malformed(f"the STRING opcode argument is invalid: {exc}") from None
    if isinstance(decoded, bytes):
        return decoded.decode("latin-1")
    return str(decoded)


def _keep_unknown_escape(match: re.Match[bytes]) -> bytes:
    escape = match.group()
    return escape if escape[1] in _KNOWN_ESCAPES else b"\\" + escape


def _c_string(line: bytes) -> bytes:
    # CPython parses number and memo-index lines as C strings, which end at
    # the first NUL byte: "5\0anything" is 5.
    return line[: line.index(0)] if 0 in line else line


def _line_int(line: bytes, base: int = 10) -> int:
    """Parse a line that _c_string has already cut at its first NUL."""
    try:
        return int(line, base)
    except ValueError as exc:
        raise _Malformed(f"invalid integer argument: {exc}") from None


def _int_argument(line: bytes) -> int:
    """Parse an INT line as CPython does: strtol with base 0, then int()."""
    text = _c_string(line) if 0 in line else line
    if text.isdigit() and text[:1] != b"0":
        return int(text)
    if not text:
        return 0
    match = _STRTOL.match(text)
    if match is not None and match.end() == len(text):
        sign, digits = match.groups()
        if digits[:2] in (b"0x", b"0X"):
            value = int(digits[2:], 16)
        elif digits[:1] == b"0":
            value = int(digits, 8)  # strtol reads a leading 0 as octal
        else:
            value = int(digits)
        if value < 2**63:
            return -value if sign == b"-" else value
    return _line_int(text, 0)


class PickleScanner(Scanner):
    """Scans every pickle of a stream for unsafe, unknown and unresolved globals."""

    check = "pickle"
    version = "1"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        limits = ctx.limits
        self._max_ops = limits.max_pickle_opcodes
        self._max_memo = limits.max_pickle_memo
        self._max_stack = limits.max_pickle_stack
        self._keep = max(1, limits.max_pickle_string)
        self._max_pickles = limits.max_pickles_per_stream
        self._check_interval = max(
            1, min(_MAX_CHECK_INTERVAL, self._max_stack // 4, self._max_memo // 4)
        )
        self._maybe = fmt is Format.MAYBE_PICKLE
        self._torchscript = ctx.container == "torchscript"
        # Members of torch's legacy tar format that mix pickles with raw data.
        member = ctx.file.rsplit(":", 1)[-1] if ctx.depth else ""
        self._tar_member = member if member in _TAR_FRAMES else ""

        # Stream state.
        self._state = _PARSING
        self._fed = 0
        self._tail = b""
        self._base = 0
        self._pending: _Pending | None = None
        self._ops = 0
        self._pickles = 0
        self._protocols: set[int] = set()
        self._legacy = False
        self._hits: dict[tuple[str, str], _Hit] = {}
        self._globals_seen: set[str] = set()
        self._globals_cache: dict[tuple[str, str], Global] = {}
        self._trailing_at: int | None = None
        self._not_pickle = False
        self._flagged_call = False
        self._limit_hit = False
        self._last_value: Value = OPAQUE
        self._stopped = False
        # Raw bytes still to skip, and the element size of a storage frame
        # (0 for a tensor frame) whose header comes next, or -1 for none.
        self._skip = 0
        self._frame_size = -1
        # Joblib arrays. Once a stream imports NumpyArrayWrapper or
        # numpy.dtype, ``_exact`` keeps the values that size an array. The
        # dtype is in the trigger because an array's dtype is often memoized
        # from a NumPy scalar pickled before the first wrapper.
        self._exact = False
        self._sizes = _OPAQUE_PUSH_SIZES
        self._wrapper_seen = False
        # Set by _call when a call reaches NumpyArrayWrapper, for _call_value.
        self._wrapper_called = False
        # Set when a handler switches to exact values or announces an array,
        # so that _run reloads its locals or stops.
        self._interrupt = False
        # The layout of the array whose first byte comes next, and the
        # offset of the BUILD that announced the array being read.
        self._next_array: ArrayLayout | None = None
        self._array_at = -1
        self._arrays_skipped = 0
        # Where the frame of the last FRAME opcode ends.
        self._frame_end = 0
        # joblib 1.1 and older read no alignment padding, so from the first
        # padded array on they parse other bytes as opcodes. A second scanner
        # (the legacy view) follows that reading from there; see _fork_legacy.
        self._legacy_mode = False
        self._legacy_view: PickleScanner | None = None
        self._legacy_forked = False

        # State of the pickle being parsed.
        self._in_pickle = False
        self._tentative = False
        self._pickle_start = 0
        self._stack: list[Value] = []
        self._marks: list[int] = []
        self._memo_list: list[Value] = []
        self._memo_map: dict[int, Value] | None = None
        self._memo_poisoned = False
        self._pickle_hits: dict[tuple[str, str], _Hit] = {}
        self._pickle_globals: set[str] = set()
        self._pickle_flagged_call = False
        self._pickle_has_proto = False

        self._handlers = self._build_handlers()

    # Streaming ---------------------------------------------------------------

    def feed(self, chunk: memoryview) -> None:
        size = len(chunk)
        if size == 0:
            return
        self._fed += size
        if self._legacy_view is not None:
            self._legacy_view.feed(chunk)
        if self._state != _PARSING:
            return
        if self._skip and not self._tail:
            # Raw tensor bytes, skipped without a copy.
            taken = min(self._skip, size)
            self._skip -= taken
            chunk = chunk[taken:]
            if not chunk:
                return
        data = b"".join((self._tail, chunk)) if self._tail else bytes(chunk)
        self._base = self._fed - len(data)
        end = len(data)
        pos = 0
        while pos < end and self._state == _PARSING:
            if self._pending is not None:
                pos = self._advance_pending(data, pos)
                continue
            if self._next_array is not None:
                layout = self._next_array
                self._start_array(data[pos])
                if layout.padded and not self._legacy_forked and not self._legacy_mode:
                    self._fork_legacy(layout, memoryview(data)[pos:])
                continue
            if self._skip:
                taken = min(self._skip, end - pos)
                self._skip -= taken
                pos += taken
                continue
            if self._frame:
                if not self._start_frame(data, pos):
                    break
                continue
            if not self._in_pickle and not self._start_pickle(self._base + pos):
                break
            start = pos
            pos = self._run(data, pos)
            if self._stopped:
                self._stopped = False
                self._end_pickle()
            elif pos == start:
                break
        self._tail = data[pos:] if self._state == _PARSING else b""

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        if self._state == _PARSING:
            if self._in_pickle and (self._skip or self._next_array is not None):
                self._fail(
                    "truncated",
                    self._fed,
                    "the stream ends inside the array data that joblib reads after the "
                    f"NumpyArrayWrapper built at byte {self._array_at}",
                )
            elif self._in_pickle:
                self._fail("truncated", self._fed, "the stream ends inside a pickle")
            elif self._legacy:
                self._tentative = False
                self._fail(
                    "truncated",
                    self._fed,
                    f"the legacy PyTorch checkpoint ends after {self._pickles} of its "
                    f"{LEGACY_TORCH_PICKLES} pickles",
                )
            elif self._pickles == 0:
                self._tentative = self._maybe
                self._fail("truncated", 0, "the stream holds no pickle")
        self._halt()
        if self._maybe and not self._confirmed():
            return ScanResult()
        if self._trailing_at is not None:
            self._add_trailing_data(self._trailing_at)
        if self._legacy_view is not None:
            self._merge_legacy(self._legacy_view)
        return ScanResult(
            findings=self._findings(),
            format=Format.PYTORCH_LEGACY if self._legacy else Format.PICKLE,
            facts=self._facts(),
        )

    def _confirmed(self) -> bool:
        # A stream sniffed as maybe-pickle is reported only when it parsed as
        # one, or when it ran code before breaking, because a crafted payload
        # runs before its parse fails. Running code means a call of a global
        # that is not allowed, or an import that runs a program.
        if self._not_pickle:
            return False
        if self._flagged_call or self._limit_hit:
            return True
        if self._pickles == 0:
            return False
        return self._trailing_at is None or bool(self._hits)

    # Pickle boundaries -------------------------------------------------------

    def _start_pickle(self, offset: int) -> bool:
        if self._pickles >= self._max_pickles:
            self._limit("pickles in one stream", self._max_pickles, offset)
            return False
        self._in_pickle = True
        self._pickle_start = offset
        self._tentative = (self._maybe and self._pickles == 0) or (
            self._pickles > 0 and not self._legacy
        )
        self._reset_pickle()
        return True

    def _reset_pickle(self) -> None:
        # NOTE: each pickle starts with an empty memo, as with one pickle.load
        # call per pickle. A loader that calls load() twice on one Unpickler
        # keeps the memo, so a second pickle could read names the first one
        # stored. The scan reports such a read as malformed instead.
        self._stack = []
        self._marks = []
        self._memo_list = []
        self._memo_map = None
        self._memo_poisoned = False
        self._pickle_hits = {}
        self._pickle_globals = set()
        self._pickle_flagged_call = False
        self._pickle_has_proto = False
        self._next_array = None

    def _end_pickle(self) -> None:
        value = self._last_value
        self._last_value = OPAQUE
        self._in_pickle = False
        self._pickles += 1
        if not self._pickle_has_proto:
            # Protocols 0 and 1 have no PROTO opcode, so the facts list them as 0.
            self._protocols.add(0)
        self._commit()
        self._reset_pickle()
        if self._legacy_mode:
            # joblib.load unpickles one pickle.
            self._halt()
            return
        if self._pickles == 1 and type(value) is int and value == LEGACY_TORCH_MAGIC:
            self._legacy = True
        if self._legacy and self._pickles == LEGACY_TORCH_PICKLES:
            # The raw storage bytes follow, and torch reads them without unpickling.
            self._state = _DATA
        if self._tar_member and isinstance(value, tuple) and len(value) >= 3:
            # (key, location, storage type) or (key, storage id, tensor type):
            # torch reads a raw frame next, then the next pickle.
            frame_type = value[2]
            if self._tar_member == "tensors":
                self._frame_size = 0
            elif isinstance(frame_type, Global):
                self._frame_size = _STORAGE_ELEMENT_SIZES.get(frame_type.name, -1)

    @property
    def _frame(self) -> bool:
        return self._frame_size >= 0

    def _start_frame(self, data: bytes, pos: int) -> bool:
        """Read a raw frame's header at ``pos`` and set the bytes to skip.

        A storage frame is an int64 element count and the elements. A tensor
        frame is an int32 rank, four unused bytes, the sizes and strides
        (int64 each) and an int64 offset. Return False when the header is not
        complete in ``data`` yet.
        """
        if self._frame_size > 0:
            if len(data) - pos < 8:
                return False
            (count,) = struct.unpack_from("<q", data, pos)
            length = 8 + count * self._frame_size
        else:
            if len(data) - pos < 4:
                return False
            (rank,) = struct.unpack_from("<i", data, pos)
            length = 16 + 16 * rank
        self._frame_size = -1
        # A negative size fails torch's read, so the bytes are parsed as they are.
        self._skip = length if length >= 8 else 0
        return True

    def _commit(self) -> None:
        for key, hit in self._pickle_hits.items():
            self._merge(key, hit)
        for name in self._pickle_globals:
            if len(self._globals_seen) > _MAX_FACT_GLOBALS:
                break
            self._globals_seen.add(name)
        if self._pickle_flagged_call:
            self._flagged_call = True
        self._pickle_hits = {}
        self._pickle_globals = set()
        self._pickle_flagged_call = False

    def _merge(self, key: tuple[str, str], hit: _Hit) -> None:
        """Add a hit of the current pickle to the stream's hits."""
        existing = self._hits.get(key)
        if existing is None and len(self._hits) >= _MAX_DISTINCT_HITS:
            key = _overflow_key(hit)
            existing = self._hits.get(key)
        if existing is None:
            self._hits[key] = hit
            return
        existing.count += hit.count
        existing.offset = min(existing.offset, hit.offset)
        if hit.details.get("called") and not existing.details.get("called"):
            existing.details["called"] = True
            existing.message = hit.message

    def _fail(self, kind: str, offset: int, reason: str) -> None:
        """Record that the current pickle is truncated or malformed, and stop."""
        if self._tentative:
            if self._pickles == 0 and not self._pickle_flagged_call:
                # Sniffed as maybe-pickle and never ran code: the stream is
                # not a pickle.
                self._not_pickle = True
                self._halt()
                return
            if self._pickles > 0 and not self._pickle_hits:
                self._trailing_at = self._pickle_start
                self._halt()
                return
        self._commit()
        if kind == "truncated":
            self._record(
                "pickle.truncated",
                Severity.MEDIUM,
                kind,
                offset,
                f"The pickle that starts at byte {self._pickle_start} is truncated: "
                f"{reason} at byte {offset}.",
                "Download the file again and compare its digest with the "
                "publisher's. A truncated pickle fails to load, but the opcodes "
                "before the break still run, so review the other findings first.",
                {"pickle_offset": self._pickle_start},
                stage=self._hits,
            )
        else:
            self._record(
                "pickle.malformed",
                Severity.MEDIUM,
                kind,
                offset,
                f"The pickle that starts at byte {self._pickle_start} is malformed "
                f"at byte {offset}: {reason}.",
                _REMEDIATE_MALFORMED,
                {"reason": reason, "pickle_offset": self._pickle_start},
                stage=self._hits,
            )
        logger.debug("pickle scan of %s stopped: %s at %d", self.ctx.file, reason, offset)
        self._halt()

    def _limit(self, quantity: str, limit: int | float, offset: int) -> None:
        self._commit()
        self._limit_hit = True
        self._record(
            "pickle.limit-exceeded",
            Severity.MEDIUM,
            quantity,
            offset,
            f"The scan stopped at byte {offset} because the number of {quantity} "
            f"exceeded the limit of {limit}; the rest of the file was not checked.",
            "Have a reviewer inspect the file, or raise the limit in the scan "
            "configuration if this is a known large pickle. Findings listed for "
            "this file cover only the part before the limit.",
            {"limit": quantity, "value": limit},
            stage=self._hits,
        )
        logger.warning("pickle scan of %s hit the %s limit at %d", self.ctx.file, quantity, offset)
        self._halt()

    def _halt(self) -> None:
        if self._state == _PARSING:
            self._state = _HALTED
        self._pending = None
        self._tail = b""
        self._reset_pickle()

    def _add_trailing_data(self, offset: int) -> None:
        size = self._fed - offset
        if self._tar_member:
            # torch's legacy tar loader reads pickles after raw frames; bytes
            # the framing did not explain may hide one.
            self._record(
                "pickle.trailing-data",
                Severity.HIGH,
                "trailing",
                offset,
                f"{size} bytes from byte {offset} of the legacy PyTorch member "
                f"{self._tar_member!r} are neither a pickle nor a raw frame that "
                "torch reads, so pickles that torch loads after them were not scanned.",
                _REMEDIATE_UNRESOLVED,
                {"bytes": size},
                stage=self._hits,
            )
            return
        self._record(
            "pickle.trailing-data",
            Severity.LOW,
            "trailing",
            offset,
            f"{size} bytes after the last pickle, from byte {offset}, do not form a pickle.",
            "Ask the publisher what the extra bytes are and for a file without "
            "them. Loaders ignore them, but they can carry data that no scanner "
            "reads.",
            {"bytes": size},
            stage=self._hits,
        )

    # Limits ------------------------------------------------------------------

    def _budget(self, offset: int) -> int:
        """Return how many opcodes may run before the next limit check."""
        remaining = self._max_ops - self._ops
        if remaining <= 0:
            self._limit("opcodes", self._max_ops, offset)
            return 0
        depth = len(self._stack) + len(self._marks)
        if depth > self._max_stack:
            self._limit("stack entries", self._max_stack, offset)
            return 0
        if self._memo_size() > self._max_memo:
            self._limit("memo entries", self._max_memo, offset)
            return 0
        if self.ctx.expired():
            self._limit("seconds", self.ctx.limits.file_time_budget, offset)
            return 0
        return min(self._check_interval, remaining)

    def _memo_size(self) -> int:
        if self._memo_map is None:
            return len(self._memo_list)
        return len(self._memo_map)

    # The opcode loop ---------------------------------------------------------

    def _run(self, data: bytes, i: int) -> int:
        """Parse the whole opcodes of ``data`` from ``i``; return where parsing stopped.

        Parsing stops at the end of the data, before an opcode whose fixed-size
        argument is incomplete, after STOP (setting ``_stopped``) or when the
        scan halts. The most frequent opcodes are handled inline, tested in
        order of frequency with literal opcode values (named in comments),
        because this loop bounds the scanner's throughput.
        """
        end = len(data)
        budget = self._budget(self._base + i)
        if budget <= 0:
            return i
        stack = self._stack
        push = stack.append
        pop = stack.pop
        marks = self._marks
        memo = self._memo_list
        dense = self._memo_map is None
        handlers = self._handlers
        sizes = self._sizes
        exact = self._exact
        opaque = OPAQUE
        global_type = Global
        dict_type = StateDict
        unpack_u32 = _U32.unpack_from
        unpack_i32 = _I32.unpack_from
        unpack_u16 = _U16.unpack_from
        keep = self._keep
        done = 0
        try:
            for done in range(budget):  # noqa: B007 - counts the opcodes run
                op = data[i]
                size = sizes[op]
                if size >= 0:
                    j = i + 1 + size
                    if j > end:
                        break
                    push(opaque)
                    i = j
                elif op == 0x94:  # MEMOIZE
                    if dense:
                        memo.append(stack[-1])
                    else:
                        self._memo_store(None, stack[-1])
                    i += 1
                elif op == 0x71:  # BINPUT
                    if i + 2 > end:
                        break
                    k = data[i + 1]
                    # Picklers write PUT with the memo's length as the index.
                    if k == len(memo) and dense:
                        memo.append(stack[-1])
                    elif k < len(memo) and dense:
                        memo[k] = stack[-1]
                    else:
                        self._memo_store(k, stack[-1])
                        dense = self._memo_map is None
                    i += 2
                elif op == 0x8C:  # SHORT_BINUNICODE
                    if i + 2 > end:
                        break
                    j = i + 2 + data[i + 1]
                    if j > end:
                        break
                    # Kept as UTF-8 bytes; decoded only if used as a name.
                    push(data[i + 2 : j])
                    i = j
                elif op == 0x58:  # BINUNICODE
                    if i + 5 > end:
                        break
                    j = i + 5 + unpack_u32(data, i + 1)[0]
                    if j <= end and j - i - 5 <= keep:
                        push(data[i + 5 : j])
                        i = j
                    else:
                        i = self._op_sized(data, i, Op.BINUNICODE)
                elif op == 0x28:  # MARK
                    marks.append(len(stack))
                    i += 1
                elif op == 0x72:  # LONG_BINPUT
                    if i + 5 > end:
                        break
                    k = unpack_u32(data, i + 1)[0]
                    # Picklers write PUT with the memo's length as the index.
                    if k == len(memo) and dense:
                        memo.append(stack[-1])
                    elif k < len(memo) and dense:
                        memo[k] = stack[-1]
                    else:
                        self._memo_store(k, stack[-1])
                        dense = self._memo_map is None
                    i += 5
                elif op == 0x68:  # BINGET
                    if i + 2 > end:
                        break
                    k = data[i + 1]
                    if dense and k < len(memo):
                        push(memo[k])
                    else:
                        push(self._memo_fetch(k))
                    i += 2
                elif op == 0x6A:  # LONG_BINGET
                    if i + 5 > end:
                        break
                    k = unpack_u32(data, i + 1)[0]
                    if dense and k < len(memo):
                        push(memo[k])
                    else:
                        push(self._memo_fetch(k))
                    i += 5
                elif op == 0x86:  # TUPLE2
                    second = pop()
                    first = stack[-1]
                    if first is not opaque or second is not opaque:
                        stack[-1] = (first, second)
                    i += 1
                elif op == 0x75 or op == 0x65:  # noqa: PLR1714 - SETITEMS, APPENDS
                    mark = marks.pop()
                    if mark and op == 0x75:
                        target = stack[mark - 1]
                        if type(target) is dict_type:
                            target.set_items(stack[mark:])
                    del stack[mark:]
                    if type(stack[-1]) is global_type:
                        self._mutate_global(stack[-1], op, self._base + i)
                    i += 1
                elif op == 0x85:  # TUPLE1
                    first = stack[-1]
                    if first is not opaque:
                        stack[-1] = (first,)
                    i += 1
                elif op == 0x87:  # TUPLE3
                    third = pop()
                    second = pop()
                    first = stack[-1]
                    if first is not opaque or second is not opaque or third is not opaque:
                        stack[-1] = (first, second, third)
                    i += 1
                elif op == 0x73 or op == 0x61:  # noqa: PLR1714 - SETITEM, APPEND
                    value = pop()
                    if op == 0x73:
                        key = pop()
                        target = stack[-1]
                        if type(target) is dict_type:
                            target.set_item(key, value)
                    if type(stack[-1]) is global_type:
                        self._mutate_global(stack[-1], op, self._base + i)
                    i += 1
                elif op == 0x74:  # TUPLE
                    mark = marks.pop()
                    items = stack[mark:]
                    del stack[mark:]
                    push(_make_tuple(items, exact))
                    i += 1
                elif op == 0x2E:  # STOP
                    self._last_value = pop()
                    self._stopped = True
                    self._ops += 1
                    i += 1
                    break
                elif size == _EXACT_INT:  # BININT1, BININT2 or BININT of a joblib stream
                    j = i + 1 + _OPAQUE_PUSH_SIZES[op]
                    if j > end:
                        break
                    if op == 0x4B:  # BININT1
                        push(data[i + 1])
                    elif op == 0x4A:  # BININT
                        push(unpack_i32(data, i + 1)[0])
                    else:
                        push(unpack_u16(data, i + 1)[0])
                    i = j
                else:
                    handler = handlers[op]
                    if handler is None:
                        raise _Malformed(f"unknown opcode 0x{op:02x}")
                    j = handler(data, i)
                    if j < 0:
                        break
                    i = j
                    dense = self._memo_map is None
                    memo = self._memo_list
                    if self._interrupt:
                        self._interrupt = False
                        sizes = self._sizes
                        exact = self._exact
                        if self._next_array is not None:
                            # The array's bytes follow this BUILD: feed() skips them.
                            self._ops += 1
                            break
            else:
                done = budget
        except IndexError:
            if i < end:
                self._ops += done
                self._fail("malformed", self._base + i, self._underflow_reason(data[i]))
                return i
        except _Malformed as exc:
            self._ops += done
            self._fail("malformed", self._base + i, str(exc))
            return i
        self._ops += done
        return i

    @staticmethod
    def _underflow_reason(op: int) -> str:
        name = _opcode_name(op)
        return f"opcode {name} needs values or a MARK that the stack does not hold"

    # Memo --------------------------------------------------------------------

    def _memo_store(self, key: int | None, value: Value) -> None:
        """Store ``value`` at ``key``, or at the memo's length for MEMOIZE."""
        if self._memo_map is None:
            memo = self._memo_list
            if key is None or key == len(memo):
                memo.append(value)
                return
            if key < len(memo):
                memo[key] = value
                return
            # A PUT beyond the end: switch to a dict, as the keys are sparse.
            self._memo_map = dict(enumerate(memo))
            self._memo_list = []
        if key is None:
            key = len(self._memo_map)
        self._memo_map[key] = value

    def _memo_fetch(self, key: int) -> Value:
        if self._memo_poisoned:
            return _UNTRACKED
        if self._memo_map is None:
            if 0 <= key < len(self._memo_list):
                return self._memo_list[key]
        elif key in self._memo_map:
            return self._memo_map[key]
        raise _Malformed(f"memo key {key} is read before it is written")

    def _poison_memo(self) -> None:
        # A PUT whose index the scan cannot parse may overwrite any entry, so
        # from here on every memo read is unresolved rather than possibly wrong.
        if self._memo_map is None:
            self._memo_map = dict(enumerate(self._memo_list))
            self._memo_list = []
        self._memo_poisoned = True

    # Opcodes outside the inline loop -----------------------------------------

    def _build_handlers(self) -> list[_Handler | None]:
        handlers: list[_Handler | None] = [None] * 256
        table: dict[int, _Handler] = {
            Op.POP: self._op_pop,
            Op.POP_MARK: self._op_pop_mark,
            Op.DUP: self._op_dup,
            Op.REDUCE: self._op_reduce,
            Op.BUILD: self._op_build,
            Op.NEWOBJ: self._op_newobj,
            Op.NEWOBJ_EX: self._op_newobj_ex,
            Op.OBJ: self._op_obj,
            Op.STACK_GLOBAL: self._op_stack_global,
            Op.BINPERSID: self._op_binpersid,
            Op.DICT: self._op_collection,
            Op.LIST: self._op_collection,
            Op.FROZENSET: self._op_collection,
            Op.ADDITEMS: self._op_additems,
            Op.PROTO: self._op_proto,
            Op.FRAME: self._op_frame,
            Op.EXT1: self._op_ext,
            Op.EXT2: self._op_ext,
            Op.EXT4: self._op_ext,
            Op.NEXT_BUFFER: self._op_next_buffer,
            Op.READONLY_BUFFER: self._op_readonly_buffer,
        }
        for op in _JOBLIB_CONSTANTS:
            # Reached only once a joblib stream switches to _JOBLIB_PUSH_SIZES.
            table[op] = self._op_joblib_value
        for op in _SIZED_OPCODES:
            table[op] = self._op_sized_handler
        for op in _LINE_OPCODES:
            table[op] = self._op_lines
        for op, handler in table.items():
            handlers[op] = handler
        return handlers

    def _op_pop(self, data: bytes, i: int) -> int:
        stack = self._stack
        if self._marks and self._marks[-1] == len(stack):
            self._marks.pop()
        else:
            stack.pop()
        return i + 1

    def _pop_mark(self) -> list[Value]:
        mark = self._marks.pop()
        items = self._stack[mark:]
        del self._stack[mark:]
        return items

    def _op_pop_mark(self, data: bytes, i: int) -> int:
        self._pop_mark()
        return i + 1

    def _op_dup(self, data: bytes, i: int) -> int:
        self._stack.append(self._stack[-1])
        return i + 1

    def _op_collection(self, data: bytes, i: int) -> int:
        items = self._pop_mark()
        if self._exact and data[i] == Op.DICT:
            state = StateDict()
            state.set_items(items)
            self._stack.append(state)
        else:
            self._stack.append(OPAQUE)
        return i + 1

    def _op_joblib_value(self, data: bytes, i: int) -> int:
        op = data[i]
        value: Value
        if op == Op.NONE:
            value = NONE
        elif op == Op.EMPTY_DICT:
            value = StateDict()
        elif op == Op.EMPTY_TUPLE:
            value = ()
        else:
            value = op == Op.NEWTRUE
        self._stack.append(value)
        return i + 1

    def _op_additems(self, data: bytes, i: int) -> int:
        self._pop_mark()
        target = self._stack[-1]
        if isinstance(target, Global):
            self._mutate_global(target, Op.ADDITEMS, self._base + i)
        return i + 1

    def _op_binpersid(self, data: bytes, i: int) -> int:
        # The persistent ID goes to the loader's persistent_load. For torch,
        # ("storage", ...) yields a storage, and the legacy format's
        # ("module", cls, source_file, source) yields cls itself. The legacy
        # tar format returns the first item of any tuple. A later call of the
        # result is then a call of cls.
        pid = self._stack.pop()
        result: Value = PERSISTENT_OBJECT
        if isinstance(pid, tuple) and pid and isinstance(pid[0], Global):
            result = pid[0]
        elif isinstance(pid, tuple) and len(pid) > 1 and isinstance(pid[1], Global):
            typename = pid[0]
            # torch decodes a bytes type name as ASCII, so a name the scan did
            # not keep (SHORT_BINBYTES, a call result) may be "module" too.
            if typename in ("module", b"module") or not isinstance(typename, str | bytes):
                result = pid[1]
        self._stack.append(result)
        return i + 1

    def _op_next_buffer(self, data: bytes, i: int) -> int:
        self._stack.append(OPAQUE)
        return i + 1

    def _op_readonly_buffer(self, data: bytes, i: int) -> int:
        # CPython marks the buffer on top of the stack as read-only.
        if not self._stack:
            raise IndexError("READONLY_BUFFER on an empty stack")
        return i + 1

    def _op_proto(self, data: bytes, i: int) -> int:
        if i + 2 > len(data):
            return -1
        protocol = data[i + 1]
        if protocol > HIGHEST_PROTOCOL:
            raise _Malformed(f"unsupported pickle protocol {protocol}")
        self._protocols.add(protocol)
        self._pickle_has_proto = True
        return i + 2

    def _op_frame(self, data: bytes, i: int) -> int:
        # A frame only announces the size of the opcodes that follow it,
        # except to joblib's reader of arrays (see _read_array).
        if i + 9 > len(data):
            return -1
        self._frame_end = self._base + i + 9 + _U64.unpack_from(data, i + 1)[0]
        return i + 9

    def _op_ext(self, data: bytes, i: int) -> int:
        op = data[i]
        width = _EXT_WIDTHS[op]
        if i + 1 + width > len(data):
            return -1
        if self._legacy_mode:
            # joblib registers no extension codes, so its load fails here.
            raise _Malformed("an extension code that no joblib process registers")
        if op == Op.EXT1:
            code = data[i + 1]
        elif op == Op.EXT2:
            code = _U16.unpack_from(data, i + 1)[0]
        else:
            code = _I32.unpack_from(data, i + 1)[0]
        self._record(
            "pickle.extension-code",
            Severity.MEDIUM,
            str(code),
            self._base + i,
            f"The pickle refers to code {code} of the copyreg extension registry, "
            "which names a global only in a process that registered the code, so "
            "the scan cannot tell what it imports.",
            "Ask the publisher why the file depends on copyreg extension codes and "
            "for a safetensors export. Do not load it in a process that registers "
            "extension codes.",
            {"code": code},
        )
        self._pickle_globals.add(f"<extension code {code}>")
        self._stack.append(Extension(code))
        return i + 1 + width

    # Calls and globals -------------------------------------------------------

    def _op_reduce(self, data: bytes, i: int) -> int:
        args = self._stack.pop()
        callee = self._stack[-1]
        if self._exact:
            self._stack[-1] = self._call_value(callee, args, self._base + i, "REDUCE")
        else:
            self._stack[-1] = self._call(callee, args, self._base + i, "REDUCE")
        return i + 1

    def _op_newobj(self, data: bytes, i: int) -> int:
        stack = self._stack
        stack.pop()
        cls = stack.pop()
        if self._exact:
            stack.append(self._call_value(cls, None, self._base + i, "NEWOBJ"))
        else:
            stack.append(self._call(cls, None, self._base + i, "NEWOBJ"))
        return i + 1

    def _op_newobj_ex(self, data: bytes, i: int) -> int:
        stack = self._stack
        stack.pop()
        stack.pop()
        cls = stack.pop()
        stack.append(self._call_value(cls, None, self._base + i, "NEWOBJ_EX"))
        return i + 1

    def _op_obj(self, data: bytes, i: int) -> int:
        items = self._pop_mark()
        if not items:
            raise IndexError("OBJ without a class")
        args = _make_tuple(items[1:], self._exact)
        self._stack.append(self._call_value(items[0], args, self._base + i, "OBJ"))
        return i + 1

    def _op_build(self, data: bytes, i: int) -> int:
        state = self._stack.pop()
        target = self._stack[-1]
        if self._exact and not isinstance(target, Global):
            self._joblib_build(target, state, i)
        elif isinstance(target, Global):
            self._pickle_flagged_call = True
            self._record(
                "pickle.build-on-global",
                Severity.HIGH,
                target.path,
                self._base + i,
                f"The pickle applies BUILD to {target.path} itself, which sets "
                "attributes on a module or class inside the loading process and can "
                "redirect code that runs later.",
                "Do not load this file: a checkpoint never changes modules or classes "
                "while it loads. Ask the publisher for a safetensors export.",
                {"global": target.path},
            )
        return i + 1

    def _op_stack_global(self, data: bytes, i: int) -> int:
        stack = self._stack
        name = stack.pop()
        module = stack.pop()
        if isinstance(module, bytes):
            module = _text(module)
        if isinstance(name, bytes):
            name = _text(name)
        if isinstance(module, str) and isinstance(name, str):
            stack.append(self._global(module, name, self._base + i))
        elif self._legacy_mode and not (_maybe_text(module) and _maybe_text(name)):
            # The unpickler raises before it imports anything.
            raise _Malformed("STACK_GLOBAL on values that are not strings")
        else:
            stack.append(self._unresolved_global(module, name, self._base + i))
        return i + 1

    def _unresolved_global(self, module: Value, name: Value, offset: int) -> Opaque:
        description = f"{_describe(module)} and {_describe(name)}"
        self._record(
            "pickle.unresolved-global",
            Severity.HIGH,
            description,
            offset,
            f"The pickle imports a global whose module and name are {description}, "
            "not plain strings that the scan kept, so it cannot tell what it imports.",
            _REMEDIATE_UNRESOLVED,
            {"module": _describe(module), "name": _describe(name)},
        )
        return Opaque(f"a global named by {description}")

    def _global(self, module: str, name: str, offset: int) -> Global:
        key = (module, name)
        found = self._globals_cache.get(key)
        if found is None:
            found = Global(module, name, self._torchscript)
            if len(self._globals_cache) < _MAX_CACHED_GLOBALS and len(module) + len(name) < 512:
                self._globals_cache[key] = found
        if len(self._pickle_globals) <= _MAX_FACT_GLOBALS:
            self._pickle_globals.add(found.path)
        if found.role == WRAPPER:
            self._wrapper_seen = True
        if found.role in (WRAPPER, DTYPE) and not self._exact:
            self._exact = True
            self._sizes = _JOBLIB_PUSH_SIZES
            self._interrupt = True
        if found.kind is Kind.CRITICAL:
            if found.on_import:
                # Importing the module runs a program, so the pickle has run
                # code even if its parse breaks right after.
                self._pickle_flagged_call = True
            self._record_critical(found, offset, called=False)
        elif found.kind is Kind.UNKNOWN:
            self._record(
                "pickle.unknown-global",
                Severity.MEDIUM,
                found.path,
                offset,
                f"The pickle references {found.path}, which is not on the allowlist "
                "of helpers that rebuild tensors, arrays and containers. Loading the "
                "file imports its module, which runs that module's code.",
                _REMEDIATE_UNKNOWN.format(g=found.path),
                {"global": found.path},
            )
        return found

    def _record_critical(self, target: Global, offset: int, called: bool) -> None:
        verb = "calls" if called else "imports"
        self._record(
            "pickle.unsafe-global",
            Severity.CRITICAL,
            target.path,
            offset,
            f"The pickle {verb} {target.path}, which {target.reason}. Loading this "
            "file with pickle, or with torch.load without weights_only=True, hands "
            "that power to the file's author.",
            _REMEDIATE_CRITICAL,
            {"global": target.path, "called": called, "reason": target.reason},
            count=not called,
        )

    def _call(
        self, callee: Value, args: Value | None, offset: int, via: str, depth: int = 0
    ) -> Call:
        """Record a call of ``callee`` and return its result."""
        if self._legacy_mode and depth == 0 and not _maybe_callable(callee):
            # The unpickler raises TypeError before anything runs.
            raise _Malformed(f"a call of {_describe(callee)}, which is not callable")
        if not isinstance(callee, Global):
            self._pickle_flagged_call = True
            description = _describe(callee)
            self._record(
                "pickle.unresolved-call",
                Severity.HIGH,
                description,
                offset,
                f"The pickle calls {description} through {via}, which the scan cannot "
                "resolve to a named global.",
                _REMEDIATE_UNRESOLVED,
                {"callable": description},
            )
            return UNRESOLVED_CALL
        if callee.kind is Kind.CRITICAL:
            self._pickle_flagged_call = True
            self._record_critical(callee, offset, called=True)
        elif callee.kind is Kind.UNKNOWN:
            self._pickle_flagged_call = True
            self._record(
                "pickle.unknown-global-call",
                Severity.HIGH,
                callee.path,
                offset,
                f"The pickle calls {callee.path} through {via}. It is not on the "
                "allowlist of helpers that rebuild tensors, arrays and containers, "
                "so loading the file runs it with arguments chosen by the file.",
                _REMEDIATE_UNKNOWN.format(g=callee.path),
                {"global": callee.path},
            )
        else:
            if callee.role == WRAPPER:
                self._wrapper_called = True
            self._check_argument_calls(callee, args, offset, depth)
        return callee.call

    def _check_argument_calls(
        self, callee: Global, args: Value | None, offset: int, depth: int
    ) -> None:
        # Some allowed helpers call their arguments (copyreg._reconstructor
        # instantiates its first argument), so those arguments are the real
        # callees.
        calls = argument_calls(callee.module, callee.name)
        if not calls or args is None:
            return
        via = f"an argument of {callee.path}"
        for index, args_index in calls:
            if depth >= _MAX_ARGUMENT_DEPTH:
                target: Value = OPAQUE
            elif isinstance(args, tuple) and index < len(args):
                target = args[index]
            else:
                target = Opaque(f"argument {index} of {callee.path}")
            inner_args: Value | None = None
            if isinstance(args, tuple) and 0 <= args_index < len(args):
                inner_args = args[args_index]
            self._call(target, inner_args, offset, via, depth + 1)

    def _mutate_global(self, target: Value, op: int, offset: int) -> None:
        # APPEND, SETITEM and ADDITEMS call a method of their target when it
        # is not a plain list, dict or set: on a global, that is a call of the
        # global's attribute.
        method = _MUTATOR_METHODS[op]
        assert isinstance(target, Global)
        # The method is reached through the global, so it is as dangerous as
        # the global, and never allowed.
        attribute = Global(target.module, f"{target.name}.{method}", self._torchscript)
        if target.kind is Kind.CRITICAL:
            attribute.kind, attribute.reason = Kind.CRITICAL, target.reason
        else:
            attribute.kind, attribute.reason = Kind.UNKNOWN, ""
        if len(self._pickle_globals) <= _MAX_FACT_GLOBALS:
            self._pickle_globals.add(attribute.path)
        self._call(attribute, None, offset, _opcode_name(op))

    # Joblib arrays -----------------------------------------------------------

    def _call_value(self, callee: Value, args: Value | None, offset: int, via: str) -> Value:
        """Record a call and return its result, which in a joblib stream may be part of an array."""
        if not self._exact:
            return self._call(callee, args, offset, via)
        self._wrapper_called = False
        result: Value = self._call(callee, args, offset, via)
        if not isinstance(callee, Global) or callee.kind is not Kind.ALLOWED:
            return result
        if callee.role == DTYPE and via == "REDUCE":
            return Dtype.from_arguments(args)
        if callee.role == RETURNS_ARGUMENT:
            return _MAYBE_WRAPPER
        if not self._wrapper_called:
            return result

        # The call creates a NumpyArrayWrapper, itself or through a helper
        # that calls its argument.
        if callee.role == WRAPPER:
            empty = via in ("NEWOBJ", "NEWOBJ_EX")
        else:
            roles = []
            if type(args) is tuple:
                roles = [item.role if isinstance(item, Global) else "" for item in args[:2]]
            empty = creates_empty_wrapper(callee.role, roles)
        if empty:
            return ArrayWrapper()
        return ArrayWrapper(
            f"it was made by a call of {callee.path} through {via}, which may set "
            "attributes that the scan does not track"
        )

    def _joblib_build(self, target: Value, state: Value, i: int) -> None:
        """Apply BUILD in a joblib stream, where it may make joblib.load read an array."""
        if isinstance(target, Dtype):
            target.build(state)
        elif isinstance(target, ArrayWrapper):
            target.build(state)
            # joblib's BUILD replaces the wrapper with the array it reads.
            self._stack[-1] = _JOBLIB_ARRAY
            self._read_array(target, i)
        elif self._wrapper_seen and (target is _UNTRACKED or target is _MAYBE_WRAPPER):
            self._report_array(
                self._base + i,
                f"the object it builds is {_describe(target)}, which may be a NumpyArrayWrapper",
            )

    def _read_array(self, wrapper: ArrayWrapper, i: int) -> None:
        """Size the array that joblib.load reads after the BUILD at ``i``, or report it."""
        offset = self._base + i
        subclass = wrapper.attributes.get("subclass")
        layout = array_layout(wrapper, subclass.role if isinstance(subclass, Global) else "")
        if isinstance(layout, str):
            self._report_array(offset, layout)
            return
        if self._legacy_mode:
            # joblib 1.1 and older ignore numpy_array_alignment_bytes.
            layout = ArrayLayout(padded=False, size=layout.size)
        if self._frame_end > offset + 1:
            # joblib's unpickler reads the rest of a frame from its buffer
            # but the array from the file, after the frame.
            self._report_array(
                offset,
                "the pickle frame that contains the BUILD goes on after it, so joblib "
                "reads the array from the bytes after the frame",
            )
            return
        if layout.padded or layout.size:
            self._next_array = layout
            self._array_at = offset
            self._interrupt = True
        else:
            self._arrays_skipped += 1

    def _start_array(self, first: int) -> None:
        """Set up the skip of the announced array, whose first byte is ``first``."""
        layout = self._next_array
        assert layout is not None
        self._next_array = None
        if first in _OPCODES:
            # pickle.load does not read joblib's arrays and runs the bytes
            # after the BUILD as opcodes. A padding length of 1 to 16, or a
            # first data byte that is not an opcode, makes it fail right there.
            self._report_array(
                self._array_at,
                f"the byte after it, 0x{first:02x}, is an opcode that pickle.load would run, "
                "while joblib.load reads it as array data",
            )
            return
        self._skip = layout.size + (1 + first if layout.padded else 0)
        self._arrays_skipped += 1

    def _fork_legacy(self, layout: ArrayLayout, rest: memoryview) -> None:
        """Start the legacy view at the first padded array, whose padding byte starts ``rest``.

        joblib 1.1 and older read ``layout.size`` bytes from the padding byte
        on and parse the bytes after them as opcodes, which this scan skips
        as padding and data. The view continues from a copy of the stack and
        memo, which contain the same objects as such a loader's at that point.
        """
        self._legacy_forked = True
        view = copy.copy(self)
        # Values that BUILD and SETITEM change in place are copied. Globals,
        # calls and the opaque markers copy as themselves (their __deepcopy__),
        # because identity checks use them.
        view._stack = copy.deepcopy(self._stack)
        view._marks = list(self._marks)
        view._memo_list = copy.deepcopy(self._memo_list)
        view._memo_map = copy.deepcopy(self._memo_map)
        view._globals_cache = dict(self._globals_cache)
        view._hits = {}
        view._pickle_hits = {}
        view._pickle_globals = set()
        view._globals_seen = set()
        view._protocols = set(self._protocols)
        view._handlers = view._build_handlers()
        view._legacy_mode = True
        view._legacy_view = None
        view._next_array = None
        view._skip = layout.size
        view._tail = b""
        view._fed = self._fed - len(rest)
        view.feed(rest)
        self._legacy_view = view

    def _merge_legacy(self, view: PickleScanner) -> None:
        """Add the legacy view's findings of code that runs, or of a scan that stopped early."""
        view._halt()
        view._commit()
        for (rule, subject), hit in view._hits.items():
            if rule not in _LEGACY_RULES:
                continue
            hit.message = (
                "joblib 1.1 and older read no alignment padding after an array, so they "
                f"parse other bytes of this file as opcodes. Read that way: {hit.message}"
            )
            hit.details = {**hit.details, "reader": "joblib 1.1 and older"}
            self._merge((rule, f"{subject} (joblib 1.1 and older)"), hit)

    def _report_array(self, offset: int, reason: str) -> None:
        self._pickle_flagged_call = True
        self._record(
            "pickle.unknown-global-call",
            Severity.HIGH,
            _ARRAY_READER,
            offset,
            f"After the BUILD at byte {offset}, joblib.load calls {_ARRAY_READER}, which "
            f"reads array data from the bytes that follow, but the scan cannot size that "
            f"data: {reason}. The scan parsed those bytes as pickle opcodes, which may "
            "not be what joblib.load runs.",
            _REMEDIATE_ARRAY,
            {"global": _ARRAY_READER, "reason": reason},
        )

    # Findings ----------------------------------------------------------------

    def _record(
        self,
        rule: str,
        severity: Severity,
        subject: str,
        offset: int,
        message: str,
        remediation: str,
        details: dict[str, Any],
        *,
        stage: dict[tuple[str, str], _Hit] | None = None,
        count: bool = True,
    ) -> None:
        """Count one occurrence of (rule, subject), creating its hit on first sight."""
        hits = self._pickle_hits if stage is None else stage
        key = (rule, subject)
        hit = hits.get(key)
        if hit is not None:
            if count:
                hit.count += 1
            if details.get("called") and not hit.details.get("called"):
                hit.details["called"] = True
                hit.message = message
            return
        hit = _Hit(rule, severity, offset, message, remediation, details)
        if stage is None and len(hits) >= _MAX_DISTINCT_HITS:
            key = _overflow_key(hit)
            existing = hits.get(key)
            if existing is not None:
                existing.count += 1
                return
        hits[key] = hit

    def partial_findings(self) -> list[Finding]:
        return self._findings()

    def _findings(self) -> list[Finding]:
        called = {subject for (rule, subject) in self._hits if rule == "pickle.unknown-global-call"}
        findings = []
        for (rule, subject), hit in self._hits.items():
            if rule == "pickle.unknown-global" and subject in called:
                continue
            findings.append(
                self.finding(
                    hit.rule,
                    hit.severity,
                    hit.message,
                    hit.remediation,
                    offset=hit.offset,
                    occurrences=hit.count,
                    **hit.details,
                )
            )
        findings.sort(key=lambda f: (f.offset or 0, -f.severity))
        return findings

    def _facts(self) -> dict[str, Any]:
        names = sorted(self._globals_seen)
        facts: dict[str, Any] = {
            "pickles": self._pickles,
            "opcodes": self._ops,
            "protocols": sorted(self._protocols),
            "globals": names[:_MAX_FACT_GLOBALS],
            "globals_truncated": len(names) > _MAX_FACT_GLOBALS,
        }
        if self._wrapper_seen:
            facts["joblib_arrays"] = self._arrays_skipped
        return facts

    # Arguments that span chunks ----------------------------------------------

    def _op_sized_handler(self, data: bytes, i: int) -> int:
        return self._op_sized(data, i, data[i])

    def _op_sized(self, data: bytes, i: int, op: int) -> int:
        """Parse an opcode with a length-prefixed argument, streaming long ones."""
        header, kind = _SIZED_OPCODES[op]
        end = len(data)
        start = i + 1 + header.size
        if start > end:
            return -1
        length = int(header.unpack_from(data, i + 1)[0])
        if length < 0:
            raise _Malformed(f"{_opcode_name(op)} has a negative length {length}")

        keep = self._keep if kind in ("utf-8", "latin-1") else 0
        if op == Op.LONG1:
            keep = length
        stop = start + length
        if stop <= end:
            prefix_length = min(length, keep)
            self._push_sized(op, data[start : start + prefix_length], length > prefix_length)
            return stop

        # A one-byte length is at most 255 bytes, so waiting for it is cheap.
        if header.size == 1:
            return -1
        # The argument continues in later chunks: keep at most ``keep`` bytes.
        available = end - start
        self._pending = _Pending(
            op=op,
            offset=self._base + i,
            remaining=length - available,
            keep=keep,
            prefix=bytearray(data[start : start + min(keep, available)]),
            truncated=length > keep,
        )
        return end

    def _push_sized(self, op: int, raw: bytes, truncated: bool) -> None:
        kind = _SIZED_OPCODES[op][1]
        if truncated and kind in ("utf-8", "latin-1"):
            self._stack.append(_LONG_STRING)
        elif kind == "utf-8":
            # Decoded only when used as a name, as in the inline loop.
            self._stack.append(raw)
        elif kind == "latin-1":
            # Python 2 str: CPython decodes it with the load's encoding (ASCII
            # by default). Latin-1 keeps every byte and never fails.
            self._stack.append(raw.decode("latin-1"))
        elif op == Op.LONG1 and len(raw) <= 16:
            self._stack.append(int.from_bytes(raw, "little", signed=True))
        else:
            self._stack.append(OPAQUE)

    def _op_lines(self, data: bytes, i: int) -> int:
        """Parse an opcode whose arguments are newline-ended lines."""
        op = data[i]
        needed = 2 if op in (Op.GLOBAL, Op.INST) else 1
        end = len(data)
        keep = self._keep
        lines: list[tuple[bytes, bool]] = []
        pos = i + 1
        while len(lines) < needed:
            j = data.find(b"\n", pos, end)
            if j < 0:
                break
            lines.append((data[pos : min(j, pos + keep)], j - pos > keep))
            pos = j + 1
        if len(lines) == needed:
            self._finish_lines(op, lines, self._base + i)
            return pos
        prefix_length = min(end - pos, keep)
        self._pending = _Pending(
            op=op,
            offset=self._base + i,
            remaining=-1,
            keep=keep,
            prefix=bytearray(data[pos : pos + prefix_length]),
            truncated=end - pos > keep,
            lines=lines,
            lines_needed=needed,
        )
        return end

    def _advance_pending(self, data: bytes, pos: int) -> int:
        pending = self._pending
        assert pending is not None
        end = len(data)
        try:
            if pending.remaining >= 0:
                return self._advance_sized(pending, data, pos, end)
            return self._advance_lines(pending, data, pos, end)
        except (_Malformed, UnicodeDecodeError) as exc:
            reason = str(exc)
        except IndexError:
            reason = self._underflow_reason(pending.op)
        # The opcode was counted when it started, but a failed opcode is not
        # counted when its argument is complete in one chunk either.
        self._ops -= 1
        self._fail("malformed", pending.offset, reason)
        return end

    def _advance_sized(self, pending: _Pending, data: bytes, pos: int, end: int) -> int:
        take = min(pending.remaining, end - pos)
        room = pending.keep - len(pending.prefix)
        if room > 0:
            pending.prefix += data[pos : pos + min(room, take)]
        pending.remaining -= take
        pos += take
        if pending.remaining == 0:
            self._pending = None
            self._push_sized(pending.op, bytes(pending.prefix), pending.truncated)
        return pos

    def _advance_lines(self, pending: _Pending, data: bytes, pos: int, end: int) -> int:
        while True:
            j = data.find(b"\n", pos, end)
            stop = end if j < 0 else j
            room = pending.keep - len(pending.prefix)
            if stop - pos > room:
                pending.truncated = True
            if room > 0:
                pending.prefix += data[pos : pos + min(room, stop - pos)]
            if j < 0:
                return end
            pending.lines.append((bytes(pending.prefix), pending.truncated))
            pending.prefix = bytearray()
            pending.truncated = False
            pos = j + 1
            if len(pending.lines) == pending.lines_needed:
                self._pending = None
                self._finish_lines(pending.op, pending.lines, pending.offset)
                return pos

    def _finish_lines(self, op: int, lines: list[tuple[bytes, bool]], offset: int) -> None:
        line, truncated = lines[0]
        stack = self._stack
        if op in (Op.GLOBAL, Op.INST):
            # CPython decodes GLOBAL names as UTF-8 and INST names as ASCII.
            encoding = "utf-8" if op == Op.GLOBAL else "ascii"
            if truncated or lines[1][1]:
                found: Value = self._unresolved_global(_LONG_STRING, _LONG_STRING, offset)
            else:
                module = _text(line, encoding)
                found = self._global(module, _text(lines[1][0], encoding), offset)
            if op == Op.GLOBAL:
                stack.append(found)
            else:
                args = _make_tuple(self._pop_mark(), self._exact)
                stack.append(self._call_value(found, args, offset, "INST"))
        elif op == Op.STRING:
            stack.append(_string_line(line, truncated))
        elif op == Op.UNICODE:
            if truncated:
                stack.append(_LONG_STRING)
            else:
                try:
                    stack.append(line.decode("raw-unicode-escape"))
                except UnicodeDecodeError as exc:
                    raise _Malformed(f"the UNICODE argument is invalid: {exc.reason}") from None
        elif op in (Op.INT, Op.LONG):
            stack.append(self._int_line(op, line, truncated, self._exact))
        elif op == Op.FLOAT:
            if not truncated:
                try:
                    float(_c_string(line) if 0 in line else line)
                except ValueError:
                    raise _Malformed(f"invalid FLOAT argument {line[:40]!r}") from None
            stack.append(OPAQUE)
        elif op == Op.PERSID:
            stack.append(OPAQUE)
        elif op == Op.GET:
            key = self._memo_index(line, truncated)
            stack.append(_UNTRACKED if key is None else self._memo_fetch(key))
        else:  # PUT
            key = self._memo_index(line, truncated)
            if key is not None and key < 0:
                raise _Malformed("negative PUT argument")
            value = stack[-1]
            if key is None:
                self._poison_memo()
            else:
                self._memo_store(key, value)

    @staticmethod
    def _int_line(op: int, line: bytes, truncated: bool, exact: bool) -> Value:
        if truncated:
            return OPAQUE
        if op == Op.INT:
            if line in (b"00", b"01"):
                # Protocols 0 and 1 write False and True as these lines.
                return line == b"01" if exact else OPAQUE
            return _int_argument(line)
        if line.endswith(b"L"):
            line = line[:-1]
        return _line_int(_c_string(line), 0)

    @staticmethod
    def _memo_index(line: bytes, truncated: bool) -> int | None:
        """Parse a PUT or GET index; None when it is too long to resolve."""
        if 0 in line:
            line = _c_string(line)
        if not truncated and len(line) <= _MAX_MEMO_INDEX_LINE:
            return _line_int(line)
        digits = line.strip().replace(b"_", b"").lstrip(b"+").lstrip(b"0")
        if not truncated and digits.isdigit() and len(digits) <= 20:
            return int(digits)
        return None


# Opcodes with a length-prefixed argument: the length's format and how the
# argument is kept ("utf-8" and "latin-1" strings, "opaque" otherwise).
_SIZED_OPCODES: Final[dict[int, tuple[struct.Struct, str]]] = {
    Op.SHORT_BINUNICODE: (struct.Struct("<B"), "utf-8"),
    Op.BINUNICODE: (_U32, "utf-8"),
    Op.BINUNICODE8: (_U64, "utf-8"),
    Op.SHORT_BINSTRING: (struct.Struct("<B"), "latin-1"),
    Op.BINSTRING: (_I32, "latin-1"),
    Op.SHORT_BINBYTES: (struct.Struct("<B"), "opaque"),
    Op.BINBYTES: (_U32, "opaque"),
    Op.BINBYTES8: (_U64, "opaque"),
    Op.BYTEARRAY8: (_U64, "opaque"),
    Op.LONG1: (struct.Struct("<B"), "opaque"),
    Op.LONG4: (_I32, "opaque"),
}

_EXT_WIDTHS: Final[dict[int, int]] = {Op.EXT1: 1, Op.EXT2: 2, Op.EXT4: 4}

# Members of torch's legacy tar checkpoints whose pickles alternate with raw
# frames that torch reads without unpickling.
_TAR_FRAMES: Final = frozenset({"storages", "tensors"})
# Bytes per element of the legacy storage classes, by class name.
_STORAGE_ELEMENT_SIZES: Final[dict[str, int]] = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
    "QInt8Storage": 1,
    "QUInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
}

# The method that each container opcode calls on a target that is not a
# plain list, dict or set.
_MUTATOR_METHODS: Final[dict[int, str]] = {
    Op.APPEND: "append",
    Op.APPENDS: "extend",
    Op.SETITEM: "__setitem__",
    Op.SETITEMS: "__setitem__",
    Op.ADDITEMS: "add",
}

_LINE_OPCODES: Final = (
    Op.FLOAT,
    Op.INT,
    Op.LONG,
    Op.PERSID,
    Op.STRING,
    Op.UNICODE,
    Op.GLOBAL,
    Op.GET,
    Op.INST,
    Op.PUT,
)


class PickleProbe(Scanner):
    """Scans a stream as a possible pickle beside the scanner of its sniffed format.

    The first bytes of a tar header, a GGUF or bzip2 magic or a safetensors
    header length can also be opcodes, and pickle.load runs such a file as a
    pickle whatever else it is. The probe reports only what the maybe-pickle
    rules confirm, so files that are not pickles cost one failed opcode.
    """

    def __init__(self, ctx: ScanContext, fmt: Format, primary: Scanner | None, probe: Scanner):
        super().__init__(ctx, fmt)
        self.primary = primary
        self.probe = probe
        # The record names the scanner of the sniffed format.
        self.check = primary.check if primary is not None else probe.check
        self.version = primary.version if primary is not None else probe.version

    def feed(self, chunk: memoryview) -> None:
        if self.primary is not None:
            self.primary.feed(chunk)
        self.probe.feed(chunk)

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        result = self.primary.close(read_at) if self.primary is not None else ScanResult()
        extra = self.probe.close(read_at)
        if extra.findings:
            result.findings.extend(extra.findings)
            result.facts["pickle"] = extra.facts
        return result


def with_pickle_probe(
    scanner: Scanner | None, fmt: Format, head: bytes, ctx: ScanContext
) -> Scanner | None:
    """Return ``scanner``, wrapped in a PickleProbe when ``head`` could start a pickle."""
    if fmt in (Format.PICKLE, Format.MAYBE_PICKLE) or not could_start_pickle(head):
        return scanner
    probe = open_scanner(Format.MAYBE_PICKLE, ctx)
    assert probe is not None  # the registry always has the pickle scanner
    return PickleProbe(ctx, fmt, scanner, probe)
