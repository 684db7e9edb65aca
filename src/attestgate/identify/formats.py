"""Detect a file's format from its leading bytes, never from its name."""

from __future__ import annotations

import enum
import json
import struct


class Format(enum.StrEnum):
    """A serialization format the gate recognises by its bytes."""

    EMPTY = "empty"
    SAFETENSORS = "safetensors"
    PICKLE = "pickle"
    # A pickle-like first byte without a protocol header (protocols 0 and 1).
    # The pickle scanner decides whether the bytes really form a pickle.
    MAYBE_PICKLE = "maybe-pickle"
    PYTORCH_LEGACY = "pytorch-legacy"
    PYTORCH_ZIP = "pytorch-zip"
    TORCHSCRIPT = "torchscript"
    ZIP = "zip"
    # Refined by the zip scanner from the members it lists.
    KERAS = "keras"
    NUMPY_NPZ = "npz"
    WHEEL = "wheel"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"
    # Other single compressed streams joblib writes: zlib, LZMA-alone, lz4
    # frames and joblib's old "ZF" files. The archive scanner picks the codec.
    COMPRESSED = "compressed"
    TAR = "tar"
    SEVENZIP = "7z"
    GGUF = "gguf"
    NUMPY = "numpy"
    HDF5 = "hdf5"
    ONNX = "onnx"
    TF_SAVEDMODEL = "tf-savedmodel"
    PARQUET = "parquet"
    ARROW = "arrow"
    NATIVE_EXECUTABLE = "native-executable"
    JSON = "json"
    JSON_LINES = "jsonl"
    PYTHON = "python"
    TEXT = "text"
    UNKNOWN = "unknown"


# Enough bytes to recognise every format below; a tar header's "ustar"
# magic sits at offset 257.
SNIFF_BYTES = 512

# ONNX ModelProto starts with ir_version (field 1, varint; 3 to 15 in every
# released ONNX version so far) followed by another top-level field such as
# producer_name, domain, graph or opset_import.
_ONNX_NEXT_FIELDS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x4A, 0x72})

# Opcodes that CPython's unpickler runs on an empty stack, so a pickle
# without a PROTO header can start with any of them. They are MARK, GLOBAL,
# the empty containers and every opcode that pushes a constant, including the
# binary ones of protocols 1 to 5, because the unpickler checks no protocol
# before it runs an opcode. PROTO itself is handled apart. PERSID is left
# out, because plain pickle.load fails on it without a persistent_load.
PICKLE_STARTS = frozenset(b"(c)]}NIJKLMFGSTUVXBC\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x95\x96")
# DICT and INST need a MARK first, but text that starts with them is cheap to
# rule out and has been sniffed as maybe-pickle since the first release.
_MAYBE_PICKLE_STARTS = PICKLE_STARTS | frozenset(b"di")

_PYTHON_SUFFIXES = (".py", ".pyw", ".pyi")


def sniff(head: bytes, size: int, name: str = "") -> Format:
    """Return the format of a file whose first bytes are ``head``.

    ``size`` is the file's full length. ``name`` is consulted only to mark
    Python source, because plain text cannot be distinguished from code by its bytes
    and treating a ``.py`` file as code errs on the side of caution.
    """
    if size == 0:
        return Format.EMPTY
    if not head:
        # A stream that declared bytes but delivered none (a truncated member).
        return Format.UNKNOWN
    # A safetensors header length is any number, so its first bytes can be a
    # short magic: 376 starts with the zlib bytes 0x78 0x01 and 640 with
    # PROTO 2. The length must also fit the file and be followed by "{", which
    # no other format's first bytes do, so this structure is tested first.
    # The streaming pass also scans any file that could start a pickle.
    if _looks_like_safetensors(head, size):
        return Format.SAFETENSORS
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return Format.ZIP
    if head[:2] == b"\x1f\x8b":
        return Format.GZIP
    if head[:3] == b"BZh":
        return Format.BZIP2
    if head[:6] == b"\xfd7zXZ\x00":
        return Format.XZ
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return Format.ZSTD
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return Format.SEVENZIP
    if _looks_like_joblib_compression(head):
        return Format.COMPRESSED
    if len(head) >= 262 and head[257:262] == b"ustar":
        return Format.TAR
    if head[:4] == b"GGUF":
        return Format.GGUF
    if head[:6] == b"\x93NUMPY":
        return Format.NUMPY
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return Format.HDF5
    if head[:4] == b"PAR1":
        return Format.PARQUET
    if head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff":
        return Format.ARROW
    if head[:4] in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return Format.NATIVE_EXECUTABLE
    if head[:2] == b"MZ" and b"This program cannot be run in DOS mode" in head:
        return Format.NATIVE_EXECUTABLE
    if len(head) >= 3 and head[0] == 0x08 and 3 <= head[1] <= 15 and head[2] in _ONNX_NEXT_FIELDS:
        return Format.ONNX
    if head[:3] == b"\x08\x01\x12":
        # SavedModel: saved_model_schema_version 1, then meta_graphs.
        return Format.TF_SAVEDMODEL
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return Format.PICKLE
    if name.endswith(_PYTHON_SUFFIXES) or (head.startswith(b"#!") and b"python" in head):
        return Format.PYTHON
    if _looks_like_json(head):
        return Format.JSON_LINES if _looks_like_json_lines(head) else Format.JSON
    if head[0] in _MAYBE_PICKLE_STARTS or could_start_pickle(head):
        # PROTO 0 and 1 are valid, and random binary data starts with the
        # binary opcodes too: the pickle scanner decides.
        return Format.MAYBE_PICKLE
    if _looks_like_text(head):
        return Format.TEXT
    return Format.UNKNOWN


def could_start_pickle(head: bytes) -> bool:
    """Return whether CPython's unpickler would run the first opcode of ``head``.

    A file whose bytes also form another format (a tar header, a GGUF or
    bzip2 magic) can still be a pickle that pickle.load or torch.load runs.
    """
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) < 2 or head[1] <= 5
    return head[0] in PICKLE_STARTS


def _looks_like_joblib_compression(head: bytes) -> bool:
    if head[:4] == b"\x04\x22\x4d\x18":  # lz4 frame
        return True
    if head[:2] == b"ZF" and is_zfile_length(head[2:21]):  # joblib before 0.10
        return True
    if head[:2] == b"\x5d\x00":
        # LZMA-alone, by the two bytes that joblib.load checks. "]" is also
        # EMPTY_LIST, but a pickle cannot continue with a zero byte, so no
        # loadable pickle is taken for LZMA here.
        return True
    # zlib with the default 32 KiB window, as zlib.compress writes it at any
    # level. Only 0x78 is accepted as the first byte: other window sizes
    # start with bytes such as "(" that protocol 0 pickles also start with.
    return head[:1] == b"\x78" and head[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda")


def is_zfile_length(field: bytes) -> bool:
    """Tell whether joblib's read_zfile parses ``field`` as a length: int(field, 16)."""
    try:
        int(field, 16)
    except ValueError:
        return False
    return True


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # An 8-byte little-endian header length, then a JSON object.
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _looks_like_json(head: bytes) -> bool:
    # Neither "{" nor "[" is a pickle opcode, so this never hides a pickle.
    text = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if not text:
        # Whitespace fills the whole head of a longer file: json.load skips
        # any amount of it, so the document may start further on. The JSON
        # scanner decides.
        return len(head) >= SNIFF_BYTES
    if text[:1] == b"[":
        # "[PAD]" starts a vocabulary file; a JSON array starts with a value.
        inner = text[1:].lstrip(b" \t\r\n")
        if inner and inner[:1] not in b'{["-0123456789tfn]':
            return False
    return text[:1] in (b"{", b"[") and _looks_like_text(head)


def _looks_like_json_lines(head: bytes) -> bool:
    # A complete first line that parses as one JSON value, followed by
    # another line that starts a JSON object.
    first, sep, rest = head.lstrip().partition(b"\n")
    if not sep or rest.lstrip()[:1] != b"{":
        return False
    try:
        json.loads(first)
    except ValueError:
        return False
    return True


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is still text.
        if exc.start < len(head) - 3:
            return False
    return not any(b < 0x09 or 0x0E <= b < 0x20 for b in head if b != 0x1B)
