"""Tests for the pickle scanner on joblib files: the raw array bytes that joblib
writes after each NumpyArrayWrapper are skipped when the scan can size them,
and reported when it cannot.

Clean files come from joblib's own writer. Hostile files are written opcode by
opcode in the layout that joblib 1.6 writes and reads. One test loads the
clean hand-written layout with joblib to show that it matches.
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.scanners.archive_scanner import ArchiveScanner
from attestgate.scanners.interface import Limits, ScanContext, ScanResult
from attestgate.scanners.pickle_globals import Kind, classify
from attestgate.scanners.pickle_scanner import PickleScanner

READER = "joblib.numpy_pickle.NumpyArrayWrapper.read"

# Opcodes ---------------------------------------------------------------------

MARK = b"("
STOP = b"."
POP = b"0"
NONE = b"N"
NEWTRUE = b"\x88"
NEWFALSE = b"\x89"
EMPTY_DICT = b"}"
EMPTY_TUPLE = b")"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
REDUCE = b"R"
BUILD = b"b"
NEWOBJ = b"\x81"
SETITEM = b"s"
SETITEMS = b"u"
# posix.system("id"), in protocol 0 opcodes.
SYSTEM = b"cposix\nsystem\n(S'id'\ntR"


def proto(version: int) -> bytes:
    return b"\x80" + bytes([version])


def text(value: str) -> bytes:
    raw = value.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def integer(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def short_bytes(raw: bytes) -> bytes:
    return b"C" + bytes([len(raw)]) + raw


def global_op(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def binput(index: int) -> bytes:
    return b"q" + bytes([index])


def binget(index: int) -> bytes:
    return b"h" + bytes([index])


def frame(body: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(body)) + body


WRAPPER = global_op("joblib.numpy_pickle", "NumpyArrayWrapper")


def dtype_state(byte_order: str = "<", flags: int = 0, elsize: int = -1) -> bytes:
    """Return the BUILD state that numpy writes for a dtype."""
    return (
        MARK
        + integer(3)
        + text(byte_order)
        + NONE * 3
        + integer(elsize)
        + integer(-1)
        + integer(flags)
        + TUPLE
    )


def dtype(code: str = "f8", state: bytes | None = None, copy: bool = True) -> bytes:
    """Return numpy.dtype(code, False, copy) and its BUILD."""
    return (
        global_op("numpy", "dtype")
        + text(code)
        + NEWFALSE
        + (NEWTRUE if copy else NEWFALSE)
        + TUPLE3
        + REDUCE
        + (dtype_state() if state is None else state)
        + BUILD
    )


def shape_of(dims: tuple[int, ...]) -> bytes:
    return MARK + b"".join(integer(n) for n in dims) + TUPLE


NEW_WRAPPER = WRAPPER + EMPTY_TUPLE + NEWOBJ


def wrapper(
    dims: tuple[int, ...] = (3,),
    code: str = "f8",
    *,
    dtype_ops: bytes | None = None,
    aligned: bool = True,
    extra: bytes = b"",
    made_by: bytes = NEW_WRAPPER,
) -> bytes:
    """Return a NumpyArrayWrapper, memoized at 0, and its BUILD, as joblib writes it."""
    state = (
        text("subclass")
        + global_op("numpy", "ndarray")
        + text("shape")
        + shape_of(dims)
        + text("order")
        + text("C")
        + text("dtype")
        + (dtype(code) if dtype_ops is None else dtype_ops)
        + text("allow_mmap")
        + NEWTRUE
    )
    if aligned:
        state += text("numpy_array_alignment_bytes") + integer(16)
    return made_by + binput(0) + EMPTY_DICT + MARK + state + extra + SETITEMS + BUILD


def padded(data: bytes, padding: int = 5) -> bytes:
    """Return the padding length byte, the padding and ``data``, as joblib writes them."""
    return bytes([padding]) + b"\xff" * padding + data


THREE = np.arange(3, dtype="<f8")
CLEAN = proto(2) + wrapper() + padded(THREE.tobytes()) + STOP
WITH_PAYLOAD = proto(2) + wrapper() + padded(THREE.tobytes()) + POP + SYSTEM + STOP


# Scanning --------------------------------------------------------------------


def scan(data: bytes, chunk: int = 0, limits: Limits | None = None) -> ScanResult:
    scanner = PickleScanner(
        ScanContext("model.joblib", len(data), limits or Limits()), Format.PICKLE
    )
    view = memoryview(data)
    step = chunk or max(1, len(data))
    for start in range(0, len(data), step):
        scanner.feed(view[start : start + step])
    return scanner.close()


def dumped(value: Any, **options: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer, **options)
    return buffer.getvalue()


def worst(result: ScanResult) -> Severity:
    return max((f.severity for f in result.findings), default=Severity.INFO)


def rules(result: ScanResult) -> set[str]:
    return {f.rule for f in result.findings}


def reader_finding(result: ScanResult) -> Finding:
    matches = [f for f in result.findings if f.details.get("global") == READER]
    assert len(matches) == 1, result.findings
    return matches[0]


def critical_globals(result: ScanResult) -> set[str]:
    return {f.details["global"] for f in result.findings if f.severity is Severity.CRITICAL}


# Allowlist -------------------------------------------------------------------


def test_wrapper_allowed() -> None:
    assert classify("joblib.numpy_pickle", "NumpyArrayWrapper").kind is Kind.ALLOWED


def test_old_wrappers_stay_unknown() -> None:
    # joblib before 0.10 read these arrays from separate files by name.
    assert classify("joblib.numpy_pickle", "NDArrayWrapper").kind is Kind.UNKNOWN


# Clean files from joblib's writer --------------------------------------------


@pytest.mark.parametrize(
    "dtype_name",
    [
        "float64",
        "float32",
        "float16",
        "longdouble",
        "int8",
        "int32",
        "int64",
        "uint16",
        "bool",
        "complex64",
        "complex128",
        "datetime64[ns]",
        "timedelta64[s]",
        ">f8",
        ">i2",
    ],
)
def test_dtype_clean(dtype_name: str) -> None:
    array = np.arange(24).reshape(4, 6).astype(dtype_name)
    result = scan(dumped({"a": array}))
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 1


@pytest.mark.parametrize(
    "array",
    [
        np.array(2.5),
        np.zeros((0, 3)),
        np.zeros(0, dtype="M8[D]"),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(32.0).reshape(2, 2, 2, 2, 2),
        np.zeros((1,) * 40),
    ],
    ids=["0-d", "empty", "empty-datetime", "fortran", "5-d", "40-d"],
)
def test_shape_clean(array: np.ndarray[Any, Any]) -> None:
    result = scan(dumped({"a": array}))
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 1


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_protocols_clean(protocol: int) -> None:
    value = {"w": np.arange(10), "b": np.ones(3, dtype=bool), "t": np.zeros(2, "M8[ns]")}
    result = scan(dumped(value, protocol=protocol))
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 3


MANY = {
    "weights": np.random.default_rng(0).random((64, 64)),
    "bias": np.ones(7, dtype=np.float32),
    "scale": np.float64(0.5),
    "nested": [np.arange(5), (np.zeros((2, 2), order="F"), {"k": np.int8(3)})],
    "label": "model",
}


MANY_BYTES = dumped(MANY)


def test_many_arrays_clean() -> None:
    result = scan(MANY_BYTES)
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 4


def test_one_byte_chunks_clean() -> None:
    result = scan(MANY_BYTES, chunk=1)
    assert result.findings == []
    assert result.facts == scan(MANY_BYTES).facts


@settings(max_examples=25, deadline=None)
@given(chunk=st.integers(min_value=1, max_value=700))
def test_any_chunking_clean(chunk: int) -> None:
    result = scan(MANY_BYTES, chunk=chunk)
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 4


def test_scalar_before_array_clean() -> None:
    # The scalar's pickle memoizes the float64 dtype that the array reuses.
    result = scan(dumped({"s": np.float64(1.5), "a": np.ones(3)}))
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 1


def test_build_on_read_array_ignored() -> None:
    # joblib's BUILD leaves the array on the stack, not the wrapper, so a
    # further BUILD sets the array's state and reads nothing.
    raw = short_bytes(THREE.tobytes())
    state = MARK + integer(1) + shape_of((3,)) + dtype() + NEWFALSE + raw + TUPLE
    data = proto(2) + wrapper() + padded(THREE.tobytes()) + state + BUILD + STOP
    result = scan(data)
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 1


class _Unseekable(io.RawIOBase):
    """A file object without tell(), for which joblib writes no padding."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk: Any) -> int:
        self.data += chunk
        return len(chunk)

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def test_unpadded_writer_clean() -> None:
    target = _Unseekable()
    joblib.dump({"a": np.arange(10), "e": np.zeros(0)}, target)
    result = scan(bytes(target.data))
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 2


def test_old_layout_clean() -> None:
    # joblib 1.1 and older wrote no alignment attribute and no padding.
    data = proto(2) + wrapper(aligned=False) + THREE.tobytes() + STOP
    assert scan(data).findings == []


def test_array_subclasses_not_high(tmp_path: Path) -> None:
    memmap = np.memmap(tmp_path / "m.dat", dtype="f4", mode="w+", shape=(4,))
    with pytest.warns(PendingDeprecationWarning):
        matrix = np.matrix([[1, 2]])
    result = scan(dumped({"m": memmap, "x": matrix}))
    assert worst(result) is Severity.MEDIUM
    assert rules(result) == {"pickle.unknown-global"}


def test_handmade_layout_matches_joblib() -> None:
    # The fixture is written here and contains no call, so loading it is safe.
    loaded = joblib.load(io.BytesIO(CLEAN))
    assert np.array_equal(loaded, THREE)
    assert scan(CLEAN).findings == []


# Compressed files through the archive scanner ---------------------------------


def scan_file(data: bytes) -> ScanResult:
    fmt = sniff(data[:512], len(data), "model.joblib")
    routed = fmt if fmt in (Format.GZIP, Format.BZIP2, Format.XZ) else Format.UNKNOWN
    scanner = ArchiveScanner(ScanContext("model.joblib", len(data), Limits()), routed)
    view = memoryview(data)
    for start in range(0, len(data), 4096):
        scanner.feed(view[start : start + 4096])
    return scanner.close(lambda offset, length: data[offset : offset + length])


@pytest.mark.parametrize("compress", [3, "gzip", "bz2", "xz", "lzma"])
def test_compressed_clean(tmp_path: Path, compress: Any) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(MANY, path, compress=compress)
    result = scan_file(path.read_bytes())
    assert result.facts["member_formats"] == {"pickle": 1}
    assert result.findings == []


def test_compressed_payload_blocked() -> None:
    result = scan_file(gzip.compress(WITH_PAYLOAD, mtime=0))
    assert "posix.system" in critical_globals(result)


# Hostile files ----------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_payload_after_array_blocked(chunk: int) -> None:
    result = scan(WITH_PAYLOAD, chunk=chunk)
    assert critical_globals(result) == {"posix.system"}
    assert result.facts["joblib_arrays"] == 1


def test_payload_after_old_layout_blocked() -> None:
    data = proto(2) + wrapper(aligned=False) + THREE.tobytes() + POP + SYSTEM + STOP
    assert critical_globals(scan(data)) == {"posix.system"}


def test_payload_after_second_build_blocked() -> None:
    # A second BUILD of the same wrapper merges its state into the first, as
    # pickle's load_build does, and joblib reads a second array.
    rebuilt = binget(0) + EMPTY_DICT + text("shape") + shape_of((2,)) + SETITEM + BUILD
    data = (
        proto(2)
        + wrapper()
        + padded(THREE.tobytes())
        + POP
        + rebuilt
        + padded(THREE[:2].tobytes(), padding=9)
        + POP
        + SYSTEM
        + STOP
    )
    result = scan(data, chunk=3)
    assert critical_globals(result) == {"posix.system"}
    assert result.facts["joblib_arrays"] == 2


def test_shape_beyond_file_truncated() -> None:
    data = proto(2) + wrapper((10**9,)) + padded(THREE.tobytes())
    result = scan(data, chunk=5)
    finding = next(f for f in result.findings if f.rule == "pickle.truncated")
    assert "array data" in finding.message
    assert finding.offset == len(data)


@pytest.mark.parametrize("dims", [(2**62, 4), (2**64, 0), (2**2000, 0)])
def test_shape_overflowing_int64_reported(dims: tuple[int, ...]) -> None:
    # joblib multiplies the sizes as int64 values, which wrap silently.
    data = proto(2) + wrapper(dims) + padded(THREE.tobytes()) + STOP
    finding = reader_finding(scan(data))
    assert finding.severity is Severity.HIGH
    assert "int64" in finding.details["reason"]


def test_object_array_reported() -> None:
    result = scan(dumped({"o": np.array([1, "a", None], dtype=object)}))
    finding = reader_finding(result)
    assert finding.severity is Severity.HIGH
    assert "nested pickle" in finding.details["reason"]


def test_object_array_nested_payload_blocked() -> None:
    object_dtype = dtype("O8", dtype_state("|", flags=63))
    nested = proto(2) + SYSTEM + STOP
    data = proto(2) + wrapper((1,), dtype_ops=object_dtype) + nested + STOP
    result = scan(data)
    assert critical_globals(result) == {"posix.system"}
    assert reader_finding(result).severity is Severity.HIGH


@pytest.mark.parametrize(
    ("dtype_ops", "reason"),
    [
        (dtype("S8", dtype_state("|", elsize=8)), "not a numeric type"),
        (dtype("U2", dtype_state(elsize=8)), "not a numeric type"),
        (dtype("f8", dtype_state(flags=63)), "state other than the plain one"),
        (dtype("f8", dtype_state(elsize=64)), "state other than the plain one"),
        (dtype("f8", copy=False), "not rebuilt as a new copy"),
        (global_op("numpy", "float64"), "not a numpy.dtype"),
    ],
    ids=["bytes", "unicode", "object-flags", "elsize", "shared-dtype", "type-not-dtype"],
)
def test_forged_dtype_not_skipped(dtype_ops: bytes, reason: str) -> None:
    data = proto(2) + wrapper(dtype_ops=dtype_ops) + padded(THREE.tobytes()) + STOP
    result = scan(data)
    finding = reader_finding(result)
    assert finding.severity is Severity.HIGH
    assert reason in finding.details["reason"]
    assert result.facts["joblib_arrays"] == 0


def test_forged_dtype_payload_blocked() -> None:
    # Not skipping means parsing the array bytes as opcodes, as pickle.load does.
    forged = dtype("S8", dtype_state("|", elsize=8))
    data = proto(2) + wrapper(dtype_ops=forged) + SYSTEM + STOP
    assert critical_globals(scan(data)) == {"posix.system"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (text("__setstate__") + global_op("builtins", "bool"), "'__setstate__'"),
        (text("shape") + shape_of((1,) * 65), "shape"),
        (text("shape") + shape_of((3, -1)), "shape"),
        (text("order") + text("K"), "order"),
        (text("allow_mmap") + integer(1), "allow_mmap"),
        (text("subclass") + global_op("mypkg", "Array"), "subclass"),
        (text("numpy_array_alignment_bytes") + text("16"), "alignment"),
    ],
    ids=["setstate", "65-dims", "negative", "order", "allow-mmap", "subclass", "alignment"],
)
def test_forged_state_not_skipped(extra: bytes, reason: str) -> None:
    data = proto(2) + wrapper(extra=extra) + padded(THREE.tobytes()) + STOP
    finding = reader_finding(scan(data))
    assert finding.severity is Severity.HIGH
    assert reason in finding.details["reason"]


def test_wrapper_init_call_reported() -> None:
    # NumpyArrayWrapper(...) runs __init__, whose attributes the scan does not track.
    constructed = (
        WRAPPER + MARK + global_op("numpy", "ndarray") + shape_of((3,)) + text("C") + TUPLE
    )
    data = proto(2) + constructed + REDUCE + EMPTY_DICT + BUILD + padded(THREE.tobytes()) + STOP
    finding = reader_finding(scan(data))
    assert "call of joblib.numpy_pickle.NumpyArrayWrapper" in finding.details["reason"]


OBJECT = global_op("builtins", "object")


@pytest.mark.parametrize(
    "made_by",
    [
        global_op("copyreg", "__newobj__") + WRAPPER + TUPLE1 + REDUCE,
        global_op("copyreg", "_reconstructor") + MARK + WRAPPER + OBJECT + NONE + TUPLE + REDUCE,
    ],
    ids=["newobj-helper", "reconstructor"],
)
def test_copyreg_construction_clean(made_by: bytes) -> None:
    # Both helpers create the wrapper without running its __init__.
    data = proto(2) + wrapper(made_by=made_by) + padded(THREE.tobytes()) + STOP
    result = scan(data)
    assert result.findings == []
    assert result.facts["joblib_arrays"] == 1


@pytest.mark.parametrize(
    "made_by",
    [
        global_op("copyreg", "_reconstructor")
        + MARK
        + WRAPPER
        + global_op("builtins", "dict")
        + NONE
        + TUPLE
        + REDUCE,
        global_op("torch._tensor", "_rebuild_from_type_v2")
        + MARK
        + WRAPPER
        + WRAPPER
        + EMPTY_TUPLE
        + EMPTY_DICT
        + TUPLE
        + REDUCE,
    ],
    ids=["reconstructor-base", "torch-rebuild"],
)
def test_helper_construction_reported(made_by: bytes) -> None:
    data = proto(2) + wrapper(made_by=made_by) + padded(THREE.tobytes()) + STOP
    finding = reader_finding(scan(data))
    assert "attributes that the scan does not track" in finding.details["reason"]


def test_argument_returning_helper_reported() -> None:
    # scalar(dtype('O'), obj) returns obj itself in some NumPy releases.
    scalar = global_op("numpy.core.multiarray", "scalar")
    returned = scalar + dtype("O8", dtype_state("|", flags=63)) + NEW_WRAPPER + TUPLE2 + REDUCE
    data = proto(2) + returned + EMPTY_DICT + BUILD + STOP
    finding = reader_finding(scan(data))
    assert "may return its argument" in finding.details["reason"]


def test_untracked_memo_build_reported() -> None:
    index = b"9" * 5000
    data = (
        proto(2)
        + WRAPPER
        + EMPTY_TUPLE
        + NEWOBJ
        + b"p"
        + index
        + b"\n"
        + POP
        + b"g"
        + index
        + b"\n"
        + EMPTY_DICT
        + BUILD
        + STOP
    )
    finding = reader_finding(scan(data))
    assert "memo entry" in finding.details["reason"]


def test_frame_after_build_reported() -> None:
    # joblib's unpickler reads the rest of the frame first, then the array
    # from the bytes after the frame.
    data = proto(4) + frame(wrapper() + POP + NONE) + padded(THREE.tobytes()) + STOP
    finding = reader_finding(scan(data))
    assert "frame" in finding.details["reason"]


def test_frame_ending_at_build_clean() -> None:
    data = proto(4) + frame(wrapper()) + padded(THREE.tobytes()) + frame(STOP)
    assert scan(data).findings == []


@pytest.mark.parametrize(
    "data",
    [
        proto(2) + wrapper() + padded(THREE.tobytes(), padding=0x28) + STOP,
        proto(2) + wrapper(aligned=False) + b"(" + THREE.tobytes()[1:] + STOP,
    ],
    ids=["padding-length", "unpadded-data"],
)
def test_opcode_after_build_reported(data: bytes) -> None:
    # pickle.load would run the byte after the BUILD as an opcode.
    result = scan(data)
    assert "0x28" in reader_finding(result).details["reason"]
    assert result.facts["joblib_arrays"] == 0
