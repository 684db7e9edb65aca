"""joblib files whose payload hides where the scan skips bytes as array data.

The pickle scan skips the padding and data that joblib 1.2 and newer read
after each NumpyArrayWrapper. joblib 1.1 and older read no padding, so they
parse the last padding-length-plus-one skipped bytes as opcodes. Compressed
joblib files are recognised by the first bytes that joblib itself checks.
"""

from __future__ import annotations

import io
import lzma
import random
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import joblib.numpy_pickle
import numpy as np
import pytest

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners.interface import Limits, ScanContext, ScanResult
from attestgate.scanners.pickle_scanner import PickleScanner

Decide = Callable[[Path], tuple[str, list[Finding]]]
Write = Callable[[str, bytes], Path]

MARK = b"("
STOP = b"."
NONE_POP = b"N0"
SETITEM = b"s"
SETITEMS = b"u"
BUILD = b"b"
# posix.system("id") in protocol 0 opcodes, which leaves the stack as it was.
SYSTEM = b"cposix\nsystem\n(S'id'\ntR0"
THREE = np.arange(3, dtype="<f8")


def text(value: str) -> bytes:
    raw = value.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binput(index: int) -> bytes:
    return b"q" + bytes([index])


def binget(index: int) -> bytes:
    return b"h" + bytes([index])


def wrapper_state() -> bytes:
    dtype_state = MARK + b"K\x03" + text("<") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + b"K\x00" + b"t"
    return (
        text("subclass")
        + b"cnumpy\nndarray\n"
        + text("shape")
        + MARK
        + b"K\x03"
        + b"t"
        + text("order")
        + text("C")
        + text("dtype")
        + b"cnumpy\ndtype\n"
        + text("f8")
        + b"\x89\x88\x87R"
        + dtype_state
        + BUILD
        + text("allow_mmap")
        + b"\x88"
        + text("numpy_array_alignment_bytes")
        + b"K\x10"
    )


def legacy_file(hidden: bytes, prefix: bytes = b"", padding: int = 200) -> bytes:
    """Return {"a": array} whose last padding + 1 skipped bytes are ``hidden`` for joblib 1.1.

    joblib 1.2 and newer read the padding-length byte, the padding and 24
    bytes of data. joblib 1.1 and older read 24 bytes from the padding-length
    byte on and then parse ``hidden``, filled up with NONE and POP pairs.
    """
    size = THREE.nbytes
    filler = padding + 1 - len(hidden)
    if filler % 2:
        padding += 1
        filler += 1
    assert filler >= 0
    region = bytearray(b"\xff" * (1 + padding + size))
    region[0] = padding
    region[size:] = hidden + NONE_POP * (filler // 2)
    head = (
        b"\x80\x04"
        + prefix
        + b"}"
        + text("a")
        + b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n"
        + b")\x81"
        + binput(0)
        + b"}"
        + MARK
        + wrapper_state()
        + SETITEMS
        + BUILD
    )
    return head + bytes(region) + SETITEM + STOP


def scan(data: bytes, chunks: list[int] | None = None) -> ScanResult:
    scanner = PickleScanner(ScanContext("model.joblib", len(data), Limits()), Format.PICKLE)
    view = memoryview(data)
    start = 0
    sizes = iter(chunks or [len(data)])
    while start < len(data):
        step = next(sizes, len(data))
        scanner.feed(view[start : start + step])
        start += step
    return scanner.close()


def worst(result: ScanResult) -> Severity:
    return max((f.severity for f in result.findings), default=Severity.INFO)


def test_legacy_layout_matches_old_joblib(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hidden bytes replace the array with 42 (POP, then an int). Loading
    # this fixture, which calls nothing, shows that joblib without padding
    # runs them and that joblib 1.6 does not.
    data = legacy_file(b"0K\x2a")
    modern = joblib.load(io.BytesIO(data))["a"]
    assert isinstance(modern, np.ndarray)
    assert modern.shape == (3,)
    monkeypatch.setattr(
        joblib.numpy_pickle.NumpyArrayWrapper,
        "safe_get_numpy_array_alignment_bytes",
        lambda self: None,
    )
    assert joblib.load(io.BytesIO(data))["a"] == 42


@pytest.mark.parametrize("chunk", [0, 1, 2, 7, 201])
def test_legacy_global_found(chunk: int) -> None:
    result = scan(legacy_file(SYSTEM), [chunk] * 100_000 if chunk else None)
    critical = [f for f in result.findings if f.severity is Severity.CRITICAL]
    assert len(critical) == 1
    assert critical[0].details["global"] == "posix.system"
    assert "joblib 1.1 and older" in critical[0].message


def test_legacy_stack_global_found() -> None:
    # The names come from strings that the visible part memoized as dict
    # keys, so the hidden part has no GLOBAL opcode.
    prefix = b"}" + binput(1) + MARK + text("posix") + binput(2) + b"N" + text("system")
    prefix += binput(3) + b"N" + SETITEMS + b"0"
    hidden = binget(2) + binget(3) + b"\x93" + b"(S'id'\ntR0"
    result = scan(legacy_file(hidden, prefix=prefix))
    assert worst(result) is Severity.CRITICAL


def test_legacy_random_chunks_found() -> None:
    data = legacy_file(SYSTEM)
    for seed in range(50):
        rng = random.Random(seed)
        result = scan(data, [rng.randint(1, 64) for _ in range(len(data))])
        assert worst(result) is Severity.CRITICAL, seed


def test_legacy_view_clean_on_real_dumps() -> None:
    # joblib 1.1 reads garbage from these files and fails, which must not
    # produce findings.
    rng = np.random.default_rng(7)
    dtypes = ["f8", "f4", "f2", "i8", "i2", "u1", "c16", "b1"]
    for index in range(150):
        arrays: dict[str, Any] = {}
        for key in range(1 + index % 3):
            shape = tuple(int(n) for n in rng.integers(0, 30, size=index % 3))
            dtype = np.dtype(dtypes[(index + key) % len(dtypes)])
            count = int(np.prod(shape))
            raw = rng.integers(0, 256, size=count * dtype.itemsize, dtype=np.uint8)
            arrays[f"k{key}"] = raw.view(dtype).reshape(shape)
        buffer = io.BytesIO()
        joblib.dump(arrays, buffer, protocol=2 + index % 4)
        assert scan(buffer.getvalue()).findings == [], index


def _lzma_alone(data: bytes, dict_size: int) -> bytes:
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": dict_size}]
    return lzma.compress(data, format=lzma.FORMAT_ALONE, filters=filters)


PAYLOAD = b"\x80\x02" + SYSTEM[:-1] + STOP


def test_lzma_small_dictionary_blocked(decide: Decide, write: Write) -> None:
    # joblib.load recognises LZMA-alone by its first two bytes, 5d 00, and a
    # dictionary of 4 KiB makes the third byte 0x10.
    data = _lzma_alone(PAYLOAD, 4096)
    assert data[:3] == b"\x5d\x00\x10"
    decision, _findings = decide(write("model.joblib", data))
    assert decision == "block"


@pytest.mark.parametrize("length", ["{:x}", " 0x{:x}", "0X{:x}", "+{:x}"])
def test_zfile_length_spellings_blocked(decide: Decide, write: Write, length: str) -> None:
    # joblib's read_zfile parses the 19 characters after "ZF" with int(x, 16).
    header = b"ZF" + length.format(len(PAYLOAD)).encode().ljust(19)
    data = header + zlib.compress(PAYLOAD)
    decision, _findings = decide(write("weights.bin", data))
    assert decision == "block"


def test_zfile_header_is_what_joblib_reads() -> None:
    # joblib accepts each spelling of the length in the fixture above.
    from joblib.numpy_pickle_compat import read_zfile

    for length in ["{:x}", " 0x{:x}", "0X{:x}", "+{:x}"]:
        header = b"ZF" + length.format(len(PAYLOAD)).encode().ljust(19)
        assert read_zfile(io.BytesIO(header + zlib.compress(PAYLOAD))) == PAYLOAD
