"""Pickles built to slip past a static scanner while CPython still runs them.

Every payload is written opcode by opcode. The scanner must reach the same
global that CPython's unpickler imports and calls, so each test asserts the
rule that fires and the default policy's decision.
"""

from __future__ import annotations

import io
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from attestgate.findings import Finding
from attestgate.identify.formats import Format
from attestgate.scanners.interface import Limits, ScanContext
from attestgate.scanners.pickle_scanner import PickleScanner

Decide = Callable[[Path], tuple[str, list[Finding]]]
Write = Callable[[str, bytes], Path]

# Protocol 0: import os.system and call it with ("id",).
SYSTEM = b"cos\nsystem\n(S'id'\ntR."
POP = b"0"


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def short_unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binunicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + u32(len(raw)) + raw


def rules(findings: list[Finding]) -> set[str]:
    return {finding.rule for finding in findings}


# Number and memo-index lines that CPython parses as C strings ---------------


@pytest.mark.parametrize(
    "prefix",
    [
        b"I010\n" + POP,  # strtol reads a leading 0 as octal; int() rejects it
        b"I-017\n" + POP,
        b"I5\x00junk\n" + POP,  # the C string ends at the NUL
        b"I\x00\n" + POP,
        b"L5\x00junkL\n" + POP,
        b"F1.5\x00junk\n" + POP,
        b"I7\np0\x00junk\n" + POP + b"g0\x00junk\n" + POP,
    ],
    ids=[
        "int-octal",
        "int-negative-octal",
        "int-nul",
        "int-empty-nul",
        "long-nul",
        "float-nul",
        "memo-nul",
    ],
)
def test_number_line_cpython_accepts(decide: Decide, write: Write, prefix: bytes) -> None:
    action, findings = decide(write("model.pkl", prefix + SYSTEM))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_unknown_string_escape(decide: Decide, write: Write) -> None:
    # escape_decode keeps "\q" with a DeprecationWarning; an error filter on
    # warnings in the gate must not end the scan before the payload.
    action, findings = decide(write("model.pkl", b"S'\\q'\n" + POP + SYSTEM))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


# First bytes that the sniffer did not take for a pickle ----------------------


@pytest.mark.parametrize("version", [0, 1])
def test_protocol_header_0_or_1(decide: Decide, write: Write, version: int) -> None:
    data = b"\x80" + bytes([version]) + SYSTEM
    action, findings = decide(write("weights.bin", data))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


@pytest.mark.parametrize(
    "prefix",
    [
        short_unicode("a") + POP,
        b"C\x01a" + POP,
        b"B" + u32(1) + b"a" + POP,
        b"\x88" + POP,
        b"\x89" + POP,
        b"\x8a\x01\x01" + POP,
        b"\x8b" + u32(1) + b"\x01" + POP,
        b"\x8d" + u64(1) + b"a" + POP,
        b"\x8e" + u64(1) + b"a" + POP,
        b"\x96" + u64(1) + b"a" + POP,
        b"\x8f" + POP,
        b"\x95" + u64(len(SYSTEM)),
    ],
    ids=lambda prefix: f"0x{prefix[0]:02x}",
)
def test_binary_first_opcode(decide: Decide, write: Write, prefix: bytes) -> None:
    # The unpickler runs protocol 4 opcodes without a PROTO header.
    action, findings = decide(write("weights.bin", prefix + SYSTEM))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


# Code that runs before a protocol 0 parse breaks -----------------------------


def test_unknown_call_before_break(decide: Decide, write: Write) -> None:
    # tempfile.mkdtemp() runs, then the unpickler stops at byte 0xff.
    action, findings = decide(write("notes", b"ctempfile\nmkdtemp\n)R\xff"))
    assert "pickle.unknown-global-call" in rules(findings)
    assert action == "block"


def test_unresolved_call_before_break(decide: Decide, write: Write) -> None:
    action, findings = decide(write("notes", b"cbuiltins\nslice\n)R)R\xff"))
    assert "pickle.unresolved-call" in rules(findings)
    assert action == "block"


def test_import_that_runs_code_before_break(decide: Decide, write: Write) -> None:
    # Importing antigravity opens a web browser; the name need not exist.
    action, findings = decide(write("notes", b"cantigravity\nfly\n\xff"))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


# Globals that reach the same power under another name -------------------------


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("unittest.__main__", "main"),
        ("idlelib.idle", "x"),
        ("_operator", "attrgetter"),
        ("_functools", "partial"),
        ("io", "open"),
        ("_io", "FileIO"),
        ("codecs", "open"),
        ("_socket", "socket"),
        ("_ctypes", "dlopen"),
        ("_imp", "create_dynamic"),
        ("zipimport", "zipimporter"),
        ("torch", "nn.modules.module._multiprocessing.Process"),
    ],
)
def test_alias_of_critical_global(decide: Decide, write: Write, module: str, name: str) -> None:
    data = b"\x80\x04" + short_unicode(module) + short_unicode(name) + b"\x93."
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


# Names the scan cannot keep ---------------------------------------------------


def test_stack_global_name_longer_than_kept(decide: Decide, write: Write) -> None:
    # Protocol 4 walks the dotted name with getattr; the part that reaches
    # os.system lies past the 64 KiB that the scan keeps of a string.
    name = "nn.modules.module.torch." * 3000 + "serialization.os.system"
    data = b"\x80\x04" + short_unicode("torch") + binunicode(name) + b"\x93."
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unresolved-global" in rules(findings)
    assert action == "block"


def test_global_line_longer_than_kept() -> None:
    limits = Limits(max_pickle_string=64)
    data = b"ctorch\n" + b"nn." * 40 + b"os.system\n."
    scanner = PickleScanner(ScanContext("model.pkl", len(data), limits=limits), Format.PICKLE)
    scanner.feed(memoryview(data))
    assert "pickle.unresolved-global" in rules(scanner.close().findings)


# Memo tricks, computed names and every calling opcode ------------------------


def test_names_through_memo(decide: Decide, write: Write) -> None:
    data = (
        b"\x80\x04"
        + short_unicode("os")
        + b"\x94"  # MEMOIZE as 0
        + short_unicode("system")
        + b"\x94"  # MEMOIZE as 1
        + POP
        + POP
        + b"h\x00"  # BINGET 0
        + b"j"
        + u32(1)  # LONG_BINGET 1
        + b"\x93"
        + short_unicode("id")
        + b"\x85R."
    )
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_stack_global_on_computed_string(decide: Decide, write: Write) -> None:
    # _codecs.encode("bf", "rot13") returns "os" at load time.
    data = (
        b"\x80\x04"
        + short_unicode("_codecs")
        + short_unicode("encode")
        + b"\x93"
        + short_unicode("bf")
        + short_unicode("rot13")
        + b"\x86R"
        + short_unicode("system")
        + b"\x93"
        + short_unicode("id")
        + b"\x85R."
    )
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unresolved-global" in rules(findings)
    assert action == "block"


@pytest.mark.parametrize(
    "data",
    [
        b"(S'id'\nios\nsystem\n.",  # INST
        b"(cos\nsystem\nS'id'\no.",  # OBJ
        b"\x80\x04" + short_unicode("subprocess") + short_unicode("Popen") + b"\x93)}\x92.",
        b"\x80\x02csubprocess\nPopen\n)\x81.",  # NEWOBJ
    ],
    ids=["inst", "obj", "newobj-ex", "newobj"],
)
def test_calling_opcode(decide: Decide, write: Write, data: bytes) -> None:
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_extension_code_called(decide: Decide, write: Write) -> None:
    action, findings = decide(write("model.pkl", b"\x80\x02\x82\x01)R."))
    assert "pickle.unresolved-call" in rules(findings)
    assert action == "block"


# Allowed helpers that call or keep their arguments -----------------------------


def test_reconstructor_with_unknown_class(decide: Decide, write: Write) -> None:
    # copyreg._reconstructor(cls, object, None) runs object.__new__(cls).
    data = (
        b"\x80\x02ccopy_reg\n_reconstructor\n(ctempfile\nTemporaryDirectory\n"
        b"c__builtin__\nobject\nNtR."
    )
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unknown-global-call" in rules(findings)
    assert action == "block"


def test_rebuild_from_type_calls_unknown_function(decide: Decide, write: Write) -> None:
    # _rebuild_from_type_v2(func, new_type, args, state) runs func(*args).
    data = (
        b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctempfile\nmkdtemp\nctorch\nTensor\n)}tR."
    )
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unknown-global-call" in rules(findings)
    assert action == "block"


def test_rebuild_tensor_with_critical_argument(decide: Decide, write: Write) -> None:
    # The helper keeps backward_hooks as given; a critical global there is
    # reported even though nothing calls it during the load.
    data = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(NK\x00))\x89cos\nsystem\ntR."
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_reduce_helper_calls_its_argument(decide: Decide, write: Write) -> None:
    # functools.reduce(os.system, ["id"], ...) calls os.system from inside
    # a helper that is not on the allowlist.
    data = b"\x80\x02c_functools\nreduce\n(cos\nsystem\n]S'id'\natR."
    action, findings = decide(write("model.pkl", data))
    assert "pickle.unknown-global-call" in rules(findings)
    assert action == "block"


def test_ordered_dict_state_is_data(decide: Decide, write: Write) -> None:
    # BUILD on an OrderedDict instance only sets instance attributes.
    data = b"\x80\x02ccollections\nOrderedDict\n)R}S'a'\nK\x01sb."
    action, findings = decide(write("model.pkl", data))
    assert [f for f in findings if f.rule.startswith("pickle.")] == []
    assert action == "allow"


# persistent_load results --------------------------------------------------------


def test_persistent_module_with_bytes_type_name(decide: Decide, write: Write) -> None:
    # The legacy torch loader decodes the bytes b"module" to "module" and
    # returns the class itself; BUILD then sets attributes on torch.Tensor.
    data = b"\x80\x02(C\x06modulectorch\nTensor\nNNtQ}b."
    action, findings = decide(write("model.pkl", data))
    assert "pickle.build-on-global" in rules(findings)
    assert action == "block"


def test_persistent_tuple_returns_first_item(decide: Decide, write: Write) -> None:
    # The legacy tar loader's persistent_load returns the first item of any tuple.
    data = b"\x80\x02(ctorch\nTensor\nNtQ}b."
    action, findings = decide(write("model.pkl", data))
    assert "pickle.build-on-global" in rules(findings)
    assert action == "block"


# Text that starts like a protocol 0 pickle stays allowed ------------------------


@pytest.mark.parametrize(
    "text",
    [
        b"cat\ndog\nbird\n",
        b"Copyright (c) 2024 Example Corp.\nAll rights reserved.\n",
        b"BSD 3-Clause License\n\nRedistribution and use in source and binary forms\n",
        b"certifi==2024.2.2\nnumpy==2.1.0\n",
        b"(c) notice\n",
        b"Ignore this line\n",
    ],
    ids=["labels", "copyright", "bsd", "requirements", "paren", "ignore"],
)
def test_text_is_not_a_pickle(decide: Decide, write: Write, text: bytes) -> None:
    action, findings = decide(write("NOTICE", text * 20))
    assert findings == []
    assert action == "allow"


# Pickles between raw frames of torch's legacy tar format -------------------------


def legacy_tar(storages: bytes, tensors: bytes = b"\x80\x02K\x00.") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("storages", storages), ("tensors", tensors), ("pickle", b"\x80\x02}.")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def storage_args(storage_type: bytes) -> bytes:
    # (key, location, storage type), as torch wrote them before 1.6.
    return b"\x80\x02(X\x01\x00\x00\x000X\x03\x00\x00\x00cpuctorch\n" + storage_type + b"\nt."


def test_pickle_after_raw_storage_frame(decide: Decide, write: Write) -> None:
    # torch reads one FloatStorage element without unpickling it, then
    # unpickles storage_views from the bytes after it.
    storages = (
        b"\x80\x02K\x01."
        + storage_args(b"FloatStorage")
        + struct.pack("<q", 1)
        + b"\xff\x00\x13\x37"
        + SYSTEM
    )
    action, findings = decide(write("model.tar", legacy_tar(storages)))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_pickle_after_raw_tensor_frame(decide: Decide, write: Write) -> None:
    # A tensor frame: rank 1, four unused bytes, one size, one stride, offset.
    frame = struct.pack("<i", 1) + b"\x00" * 4 + struct.pack("<qqq", 1, 1, 0)
    tensors = b"\x80\x02K\x01." + b"\x80\x02(K\x00K\x00ctorch\nFloatTensor\nt." + frame + SYSTEM
    action, findings = decide(write("model.tar", legacy_tar(b"\x80\x02K\x00.", tensors)))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_raw_bytes_the_framing_cannot_explain(decide: Decide, write: Write) -> None:
    # An unknown storage class leaves the frame's size unknown.
    storages = b"\x80\x02K\x01." + storage_args(b"OddStorage") + b"\xff" * 12 + SYSTEM
    action, findings = decide(write("model.tar", legacy_tar(storages)))
    assert "pickle.trailing-data" in rules(findings)
    assert action == "block"


def test_crash_after_critical_keeps_finding():
    # A scanner bug reached after a critical finding must not turn the
    # block into the check failure's quarantine.
    from attestgate.findings import CHECK_FAILED
    from attestgate.identify.formats import Format
    from attestgate.scanners import GuardedScanner
    from attestgate.scanners.interface import ScanContext
    from attestgate.scanners.pickle_scanner import PickleScanner

    ctx = ScanContext(file="model.pkl", size=None)
    inner = PickleScanner(ctx, Format.PICKLE)
    guarded = GuardedScanner(inner, ctx)
    guarded.feed(memoryview(b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00idtR."))

    def broken_feed(chunk):
        raise RuntimeError("simulated scanner bug")

    inner.feed = broken_feed
    guarded.feed(memoryview(b"more"))
    rules = {f.rule for f in guarded.close().findings}
    assert "pickle.unsafe-global" in rules
    assert CHECK_FAILED in rules
