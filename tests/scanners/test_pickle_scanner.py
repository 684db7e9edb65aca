"""Tests for the pickle scanner: hostile pickles written opcode by opcode, real
checkpoints that must stay clean, chunking, limits and fuzzing."""

from __future__ import annotations

import io
import pickle
import struct
import time
import zipfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners import scan_bytes
from attestgate.scanners.interface import Limits, ScanContext, ScanResult
from attestgate.scanners.pickle_globals import Kind, classify
from attestgate.scanners.pickle_scanner import PickleScanner

# Opcode helpers: each returns the bytes of one opcode with its argument.


def proto(version: int) -> bytes:
    return b"\x80" + bytes([version])


def short_unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binunicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def global_op(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def binget(index: int) -> bytes:
    return b"h" + bytes([index])


def long_binput(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def long_binget(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"
MARK = b"("
TUPLE = b"t"
TUPLE1 = b"\x85"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
REDUCE = b"R"
BUILD = b"b"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
STOP = b"."

SYSTEM_P0 = b"cos\nsystem\n(S'id'\ntR."


def scan(
    data: bytes,
    fmt: Format = Format.PICKLE,
    *,
    chunk: int | None = None,
    limits: Limits | None = None,
    container: str = "",
) -> ScanResult:
    ctx = ScanContext("model.pkl", len(data), limits=limits or Limits(), container=container)
    scanner = PickleScanner(ctx, fmt)
    view = memoryview(data)
    step = chunk or max(1, len(data))
    for start in range(0, len(data), step):
        scanner.feed(view[start : start + step])
    return scanner.close()


def rules(result: ScanResult) -> set[str]:
    return {finding.rule for finding in result.findings}


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, result.findings
    return matches[0]


def summary(result: ScanResult) -> list[tuple[Any, ...]]:
    return [
        (f.rule, f.severity, f.offset, f.message, sorted(f.details.items()))
        for f in result.findings
    ]


# Hostile pickles ----------------------------------------------------------


def test_protocol0_os_system_critical() -> None:
    result = scan(SYSTEM_P0)
    finding = only(result, "pickle.unsafe-global")
    assert finding.severity is Severity.CRITICAL
    assert finding.details["global"] == "os.system"
    assert finding.details["called"] is True
    assert finding.offset == 0
    assert "os.system" in finding.message
    assert finding.remediation.startswith("Do not load this file.")


def test_protocol0_maybe_pickle_reported() -> None:
    result = scan(SYSTEM_P0, Format.MAYBE_PICKLE)
    assert result.format is Format.PICKLE
    assert only(result, "pickle.unsafe-global").severity is Severity.CRITICAL


@pytest.mark.parametrize("version", [2, 4])
def test_stack_global_names_through_memo(version: int) -> None:
    data = (
        proto(version)
        + short_unicode("os")
        + MEMOIZE
        + short_unicode("system")
        + MEMOIZE
        + b"0"  # POP the name, so that only the memo contains it
        + b"0"
        + binget(0)
        + binget(1)
        + STACK_GLOBAL
        + short_unicode("id")
        + TUPLE1
        + REDUCE
        + STOP
    )
    finding = only(scan(data), "pickle.unsafe-global")
    assert finding.details["global"] == "os.system"
    assert finding.details["called"] is True


def test_stack_global_long_memo_keys() -> None:
    data = (
        proto(2)
        + binunicode("subprocess")
        + long_binput(300)
        + binunicode("check_output")
        + long_binput(7)
        + b"0"
        + b"0"
        + long_binget(300)
        + long_binget(7)
        + STACK_GLOBAL
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    )
    finding = only(scan(data), "pickle.unsafe-global")
    assert finding.details["global"] == "subprocess.check_output"


def test_inst_call_critical() -> None:
    data = b"(S'id'\nios\nsystem\n."
    finding = only(scan(data, Format.MAYBE_PICKLE), "pickle.unsafe-global")
    assert finding.details["called"] is True


def test_obj_call_critical() -> None:
    data = b"(cos\nsystem\nS'id'\no."
    finding = only(scan(data, Format.MAYBE_PICKLE), "pickle.unsafe-global")
    assert finding.details["global"] == "os.system"
    assert finding.details["called"] is True


def test_newobj_unknown_class_high() -> None:
    data = proto(2) + global_op("mypkg.models", "Net") + EMPTY_TUPLE + NEWOBJ + STOP
    result = scan(data)
    finding = only(result, "pickle.unknown-global-call")
    assert finding.severity is Severity.HIGH
    assert finding.details["global"] == "mypkg.models.Net"
    assert "pickle.unknown-global" not in rules(result)
    assert "safetensors" in finding.remediation


def test_newobj_ex_critical() -> None:
    data = (
        proto(4)
        + short_unicode("subprocess")
        + short_unicode("Popen")
        + STACK_GLOBAL
        + short_unicode("id")
        + TUPLE1
        + EMPTY_DICT
        + NEWOBJ_EX
        + STOP
    )
    finding = only(scan(data), "pickle.unsafe-global")
    assert finding.details["global"] == "subprocess.Popen"
    assert finding.details["called"] is True


def test_build_on_global_high() -> None:
    data = proto(2) + global_op("collections", "OrderedDict") + EMPTY_DICT + BUILD + STOP
    result = scan(data)
    finding = only(result, "pickle.build-on-global")
    assert finding.severity is Severity.HIGH
    assert finding.details["global"] == "collections.OrderedDict"
    assert rules(result) == {"pickle.build-on-global"}


def test_builtins_print_reduce_high() -> None:
    data = proto(2) + global_op("builtins", "print") + binunicode("hi") + TUPLE1 + REDUCE + STOP
    result = scan(data)
    finding = only(result, "pickle.unknown-global-call")
    assert finding.severity is Severity.HIGH
    assert finding.details["global"] == "builtins.print"
    assert rules(result) == {"pickle.unknown-global-call"}


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("__builtin__", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("posix", "system"),
        ("nt", "system"),
        ("runpy", "_run_code"),
        ("os.path", "join"),
        ("posixpath", "join"),
        ("commands", "getoutput"),
        ("cPickle", "loads"),
        ("torch", "load"),
        ("torch.storage", "_load_from_bytes"),
        ("numpy.testing._private.utils", "runstring"),
        ("operator", "attrgetter"),
        ("functools", "partial"),
        ("torch._C", "_jit_set_profiling_mode"),
        ("webbrowser", "open"),
    ],
)
def test_critical_globals(module: str, name: str) -> None:
    data = proto(2) + global_op(module, name) + binunicode("x") + TUPLE1 + REDUCE + STOP
    finding = only(scan(data), "pickle.unsafe-global")
    assert finding.severity is Severity.CRITICAL
    assert finding.details["global"] == f"{module}.{name}"


def test_critical_global_referenced_only() -> None:
    data = proto(2) + global_op("os", "system") + b"0" + b"N" + STOP
    finding = only(scan(data), "pickle.unsafe-global")
    assert finding.details["called"] is False
    assert finding.message.startswith("The pickle imports os.system")


def test_dotted_name_into_os() -> None:
    data = (
        proto(4)
        + short_unicode("torch.serialization")
        + short_unicode("os.system")
        + STACK_GLOBAL
        + short_unicode("id")
        + TUPLE1
        + REDUCE
        + STOP
    )
    assert only(scan(data), "pickle.unsafe-global").severity is Severity.CRITICAL


def test_reconstructor_class_is_callee() -> None:
    data = (
        proto(2)
        + global_op("copy_reg", "_reconstructor")
        + MARK
        + global_op("subprocess", "Popen")
        + global_op("__builtin__", "object")
        + b"N"
        + TUPLE
        + REDUCE
        + STOP
    )
    finding = only(scan(data), "pickle.unsafe-global")
    assert finding.details["global"] == "subprocess.Popen"
    assert finding.details["called"] is True


def test_reconstructor_unknown_class_high() -> None:
    data = (
        proto(2)
        + global_op("copyreg", "_reconstructor")
        + MARK
        + global_op("mypkg", "Config")
        + global_op("builtins", "object")
        + b"N"
        + TUPLE
        + REDUCE
        + STOP
    )
    finding = only(scan(data), "pickle.unknown-global-call")
    assert finding.details["global"] == "mypkg.Config"


def test_reconstructor_opaque_class_unresolved() -> None:
    data = proto(2) + global_op("copyreg", "_reconstructor") + b"NNN\x87" + REDUCE + STOP
    found = [f for f in scan(data).findings if f.rule == "pickle.unresolved-call"]
    assert {f.details["callable"] for f in found} == {
        "argument 0 of copyreg._reconstructor",
        "argument 1 of copyreg._reconstructor",
    }
    assert {f.severity for f in found} == {Severity.HIGH}


def test_setitem_on_global_is_call() -> None:
    data = proto(2) + global_op("copyreg", "_extension_registry") + b"NNs" + STOP
    result = scan(data)
    finding = only(result, "pickle.unknown-global-call")
    assert finding.details["global"] == "copyreg._extension_registry.__setitem__"
    assert only(result, "pickle.unknown-global").severity is Severity.MEDIUM


def test_ext1_code_reported() -> None:
    data = proto(2) + b"\x82\x05" + EMPTY_TUPLE + REDUCE + STOP
    result = scan(data)
    extension = only(result, "pickle.extension-code")
    assert extension.severity is Severity.MEDIUM
    assert extension.details["code"] == 5
    unresolved = only(result, "pickle.unresolved-call")
    assert unresolved.severity is Severity.HIGH
    assert unresolved.details["callable"] == "extension code 5"


def test_stack_global_non_strings_unresolved() -> None:
    data = proto(4) + b"K\x01K\x02" + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + STOP
    result = scan(data)
    assert only(result, "pickle.unresolved-global").severity is Severity.HIGH
    assert only(result, "pickle.unresolved-call").severity is Severity.HIGH


def test_poisoned_memo_unresolved() -> None:
    huge_index = b"9" * 5000
    data = (
        proto(4)
        + short_unicode("os")
        + b"p"
        + huge_index
        + b"\n"
        + b"0"
        + short_unicode("system")
        + MEMOIZE
        + b"0"
        + binget(0)
        + binget(0)
        + STACK_GLOBAL
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    )
    result = scan(data)
    assert only(result, "pickle.unresolved-global").severity is Severity.HIGH
    assert "pickle.malformed" not in rules(result)


def test_zero_padded_put_resolved() -> None:
    data = b"S'os'\np0001\n0S'system'\np0\n0g1\ng0\n\x93)R."
    result = scan(data, Format.MAYBE_PICKLE)
    assert only(result, "pickle.unsafe-global").details["global"] == "os.system"


def test_rebuild_from_type_nested_call() -> None:
    data = (
        proto(2)
        + global_op("torch._tensor", "_rebuild_from_type_v2")
        + MARK
        + global_op("copyreg", "_reconstructor")
        + global_op("torch", "Tensor")
        + MARK
        + global_op("mypkg.hooks", "Payload")
        + global_op("builtins", "object")
        + b"N"
        + TUPLE
        + EMPTY_DICT
        + TUPLE
        + REDUCE
        + STOP
    )
    finding = only(scan(data), "pickle.unknown-global-call")
    assert finding.details["global"] == "mypkg.hooks.Payload"


def test_reduce_on_opaque_unresolved() -> None:
    finding = only(scan(proto(2) + b"N" + EMPTY_TUPLE + REDUCE + STOP), "pickle.unresolved-call")
    assert finding.severity is Severity.HIGH
    assert "REDUCE" in finding.message


def test_empty_stream() -> None:
    assert only(scan(b""), "pickle.truncated").offset == 0
    assert scan(b"", Format.MAYBE_PICKLE).format is None


def test_second_pickle_payload() -> None:
    clean = pickle.dumps({"weights": [1.0, 2.0]}, protocol=2)
    data = clean + proto(2) + global_op("os", "system") + binunicode("id") + TUPLE1 + REDUCE + STOP
    result = scan(data)
    finding = only(result, "pickle.unsafe-global")
    assert finding.offset == len(clean) + 2
    assert result.facts["pickles"] == 2


def test_second_pickle_protocol0_payload() -> None:
    data = pickle.dumps([1, 2], protocol=4) + SYSTEM_P0
    assert only(scan(data), "pickle.unsafe-global").details["called"] is True


def test_truncated_keeps_global() -> None:
    data = proto(2) + global_op("os", "system") + binunicode("id")
    result = scan(data)
    assert only(result, "pickle.unsafe-global").severity is Severity.CRITICAL
    truncated = only(result, "pickle.truncated")
    assert truncated.severity is Severity.MEDIUM
    assert truncated.offset == len(data)


def test_truncated_maybe_pickle_critical_call() -> None:
    data = b"cos\nsystem\n(S'id'\ntR"
    result = scan(data, Format.MAYBE_PICKLE)
    assert rules(result) == {"pickle.unsafe-global", "pickle.truncated"}


def test_unknown_opcode_malformed() -> None:
    data = proto(2) + global_op("builtins", "print") + b"\xff"
    result = scan(data)
    malformed = only(result, "pickle.malformed")
    assert malformed.severity is Severity.MEDIUM
    assert malformed.offset == len(data) - 1
    assert "0xff" in malformed.details["reason"]
    assert only(result, "pickle.unknown-global").severity is Severity.MEDIUM


def test_stack_underflow_malformed() -> None:
    result = scan(proto(2) + REDUCE + STOP)
    assert "REDUCE" in only(result, "pickle.malformed").details["reason"]


def test_unsupported_protocol_malformed() -> None:
    assert "protocol" in only(scan(b"\x80\x09N."), "pickle.malformed").details["reason"]


def test_memo_read_before_write_malformed() -> None:
    result = scan(proto(2) + binget(3) + STOP)
    assert "memo" in only(result, "pickle.malformed").details["reason"]


def test_trailing_data_low() -> None:
    data = pickle.dumps([1, 2, 3], protocol=4) + b"\x00garbage"
    result = scan(data)
    finding = only(result, "pickle.trailing-data")
    assert finding.severity is Severity.LOW
    assert finding.details["bytes"] == 8
    assert rules(result) == {"pickle.trailing-data"}


def test_unquoted_string_malformed() -> None:
    data = proto(2) + global_op("builtins", "print") + b"Shello\n"
    assert "quoted" in only(scan(data), "pickle.malformed").details["reason"]


# Chunking ---------------------------------------------------------------------

HOSTILE_SAMPLES = [
    SYSTEM_P0,
    b"(S'id'\nios\nsystem\n.",
    proto(4)
    + short_unicode("os")
    + MEMOIZE
    + short_unicode("system")
    + MEMOIZE
    + STACK_GLOBAL
    + binunicode("id" * 40)
    + TUPLE1
    + REDUCE
    + STOP
    + proto(2)
    + global_op("builtins", "print")
    + EMPTY_TUPLE
    + REDUCE
    + STOP,
    proto(2) + b"\x82\x05" + EMPTY_TUPLE + REDUCE + STOP + b"tail",
    proto(2) + global_op("os", "system") + b"B\x10\x00\x00\x00short",
]


@pytest.mark.parametrize("data", HOSTILE_SAMPLES)
def test_byte_by_byte_equals_single_feed(data: bytes) -> None:
    whole = scan(data)
    assert whole.findings
    assert summary(scan(data, chunk=1)) == summary(whole)
    assert scan(data, chunk=1).facts == whole.facts


@pytest.mark.parametrize("data", HOSTILE_SAMPLES)
def test_every_split_point(data: bytes) -> None:
    whole = summary(scan(data))
    for cut in range(1, len(data)):
        ctx = ScanContext("model.pkl", len(data))
        scanner = PickleScanner(ctx, Format.PICKLE)
        scanner.feed(memoryview(data[:cut]))
        scanner.feed(memoryview(data[cut:]))
        assert summary(scanner.close()) == whole, cut


def test_long_string_not_buffered() -> None:
    limits = Limits(max_pickle_string=16)
    name = "x" * 5000
    data = proto(2) + global_op("os", "system") + binunicode(name) + TUPLE1 + REDUCE + STOP
    result = scan(data, chunk=7, limits=limits)
    assert only(result, "pickle.unsafe-global").details["called"] is True


def test_binunicode8_streamed() -> None:
    text = ("y" * 70_000).encode()
    data = proto(4) + b"\x8d" + struct.pack("<Q", len(text)) + text + b"0" + b"N" + STOP
    result = scan(data, chunk=1000, limits=Limits(max_pickle_string=32))
    assert result.findings == []
    assert result.facts["opcodes"] == 5


def test_long_bytes_streamed() -> None:
    data = pickle.dumps([b"\x00" * 300_000, "tail"], protocol=4)
    result = scan(data, chunk=4096, limits=Limits(max_pickle_string=64))
    assert result.findings == []
    assert result.facts["pickles"] == 1


# Limits -----------------------------------------------------------------------


def test_stack_limit_exceeded_quickly() -> None:
    data = proto(2) + b"N" * 200_000 + STOP
    started = time.monotonic()
    result = scan(data, limits=Limits(max_pickle_stack=100))
    assert time.monotonic() - started < 2.0
    finding = only(result, "pickle.limit-exceeded")
    assert finding.details["limit"] == "stack entries"


def test_memo_limit_exceeded() -> None:
    data = pickle.dumps([str(n) for n in range(5000)], protocol=4)
    result = scan(data, limits=Limits(max_pickle_memo=100))
    assert only(result, "pickle.limit-exceeded").details["limit"] == "memo entries"


def test_opcode_limit_keeps_findings() -> None:
    data = proto(2) + global_op("os", "system") + b"N0" * 1000 + STOP
    result = scan(data, limits=Limits(max_pickle_opcodes=50))
    assert rules(result) == {"pickle.unsafe-global", "pickle.limit-exceeded"}


def test_pickles_per_stream_limit() -> None:
    data = b"N." * 10
    result = scan(data, limits=Limits(max_pickles_per_stream=3))
    assert only(result, "pickle.limit-exceeded").details["limit"] == "pickles in one stream"


def test_deadline_expired() -> None:
    ctx = ScanContext("model.pkl", None, deadline=time.monotonic() - 1)
    scanner = PickleScanner(ctx, Format.PICKLE)
    scanner.feed(memoryview(pickle.dumps(list(range(100)))))
    assert only(scanner.close(), "pickle.limit-exceeded").details["limit"] == "seconds"


# Clean inputs -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(6))
def test_containers_clean(protocol: int) -> None:
    value = [
        {"a": 1, "b": (2.5, None, True)},
        {1, 2},
        frozenset([3]),
        b"",
        b"bytes",
        bytearray(b"x"),
        range(3),
        slice(1, 2),
        complex(1, 2),
        "text",
        10**40,
        ...,
        NotImplemented,
    ]
    data = pickle.dumps(value, protocol=protocol)
    fmt = Format.PICKLE if protocol >= 2 else Format.MAYBE_PICKLE
    result = scan(data, fmt)
    assert result.findings == []
    assert result.format is Format.PICKLE
    assert result.facts["pickles"] == 1


def test_numpy_array_clean() -> None:
    np = pytest.importorskip("numpy")
    result = scan(pickle.dumps(np.arange(10)))
    assert result.findings == []
    assert "numpy.ndarray" in result.facts["globals"]


@pytest.mark.parametrize("protocol", [2, 5])
def test_numpy_scalar_and_dtype_clean(protocol: int) -> None:
    np = pytest.importorskip("numpy")
    value = [np.float32(1.5), np.dtype("int64"), np.arange(4).reshape(2, 2)]
    assert scan(pickle.dumps(value, protocol=protocol)).findings == []


@pytest.mark.torch
def test_torch_zip_state_dict_clean() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = dict(model.state_dict())
    state["extra"] = {
        "bf16": torch.zeros(2, dtype=torch.bfloat16),
        "param": torch.nn.Parameter(torch.ones(2)),
        "device": torch.device("cpu"),
        "size": torch.Size([2]),
        "dtype": torch.float16,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as archive:
        member = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        data = archive.read(member)
    result = scan(data)
    assert result.findings == []
    assert "torch._utils._rebuild_tensor_v2" in result.facts["globals"]


@pytest.mark.torch
def test_torch_legacy_checkpoint_clean() -> None:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(4, 2).state_dict(), buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    result = scan(data, chunk=64)
    assert result.format is Format.PYTORCH_LEGACY
    assert result.findings == []
    assert result.facts["pickles"] == 5


@pytest.mark.torch
def test_torch_legacy_full_model_high() -> None:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(4, 2), buffer, _use_new_zipfile_serialization=False)
    result = scan(buffer.getvalue())
    finding = only(result, "pickle.unknown-global-call")
    assert finding.details["global"] == "torch.nn.modules.linear.Linear"


def test_legacy_truncated() -> None:
    magic = proto(2) + b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + STOP
    result = scan(magic + proto(2) + b"M\xe9\x03" + STOP)
    assert result.format is Format.PYTORCH_LEGACY
    assert "2 of its 5" in only(result, "pickle.truncated").message


def test_torchscript_types_in_container() -> None:
    data = proto(2) + global_op("__torch__", "Model") + EMPTY_TUPLE + NEWOBJ + STOP
    assert scan(data, container="torchscript").findings == []
    outside = only(scan(data), "pickle.unknown-global-call")
    assert outside.details["global"] == "__torch__.Model"


TEXT_SAMPLES = [
    b"import os\nos.system('id')\n",
    b"def load():\n    return 1\n",
    b"class Model:\n    pass\n",
    b'{"architectures": ["Bert"]}\n',
    b"[PAD]\n[unused0]\n[UNK]\n[CLS]\nthe\n",
    b"# Model card\n\nThis model is *great*.\n",
    b"N.B. read the license first.\n",
    b"cat\ndog\nbird\n",
    b"(see the notes)\n",
    b"Is this a pickle?\n",
]


@pytest.mark.parametrize("text", TEXT_SAMPLES)
def test_text_not_a_pickle(text: bytes) -> None:
    result = scan(text, Format.MAYBE_PICKLE)
    assert result.findings == []
    assert result.format is None


def test_scan_bytes_registry() -> None:
    fmt, result = scan_bytes(SYSTEM_P0, ScanContext("payload.pkl", len(SYSTEM_P0)))
    assert fmt is Format.MAYBE_PICKLE
    assert only(result, "pickle.unsafe-global").check == "pickle"


def test_facts_list_globals() -> None:
    data = proto(2) + global_op("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + STOP
    result = scan(data)
    assert result.facts == {
        "pickles": 1,
        "opcodes": 5,
        "protocols": [2],
        "globals": ["collections.OrderedDict"],
        "globals_truncated": False,
    }


def test_repeated_global_counted_once() -> None:
    call = global_op("builtins", "print") + EMPTY_TUPLE + REDUCE + b"0"
    data = proto(2) + call * 3 + b"N" + STOP
    finding = only(scan(data), "pickle.unknown-global-call")
    assert finding.details["occurrences"] == 3
    assert finding.offset == 19


# Classification -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch", "FloatStorage"),
        ("torch", "bfloat16"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("copy_reg", "_reconstructor"),
        ("__builtin__", "set"),
        ("_codecs", "encode"),
    ],
)
def test_allowlist(module: str, name: str) -> None:
    assert classify(module, name).kind is Kind.ALLOWED


def test_unknown_by_default() -> None:
    assert classify("sklearn.linear_model", "LogisticRegression").kind is Kind.UNKNOWN


# Fuzzing ------------------------------------------------------------------------

SEEDS = [
    SYSTEM_P0,
    pickle.dumps({"a": [1, 2.5, "x", (None, True)], "b": {1, 2}}, protocol=2),
    pickle.dumps([b"raw", "text", 10**20, frozenset([1])], protocol=5),
    HOSTILE_SAMPLES[2],
]


@st.composite
def mutated_pickles(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(max_size=8))
        elif position < len(data):
            del data[position]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(st.binary(max_size=512), mutated_pickles()),
    fmt=st.sampled_from([Format.PICKLE, Format.MAYBE_PICKLE]),
    chunk=st.integers(1, 64),
)
def test_fuzz_never_raises(data: bytes, fmt: Format, chunk: int) -> None:
    started = time.monotonic()
    result = scan(data, fmt, chunk=chunk)
    assert isinstance(result, ScanResult)
    assert time.monotonic() - started < 1.0
    assert all(finding.check == "pickle" for finding in result.findings)
    whole = scan(data, fmt)
    assert summary(result) == summary(whole)
    assert result.facts == whole.facts
