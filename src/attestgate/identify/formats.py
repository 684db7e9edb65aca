"""Detect a file's format from its leading bytes, never from its name."""

from __future__ import annotations

import enum
import struct


class Format(enum.StrEnum):
    """A serialization format the gate knows by its bytes."""

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
    GZIP = "gzip"
    GGUF = "gguf"
    NUMPY = "numpy"
    HDF5 = "hdf5"
    ONNX = "onnx"
    JSON = "json"
    PYTHON = "python"
    TEXT = "text"
    UNKNOWN = "unknown"


# Enough bytes to recognise every format below.
SNIFF_BYTES = 64

# First opcodes with which protocol 0 and 1 pickles usually start: MARK,
# GLOBAL, INST, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE and the scalar opcodes.
_PROTO0_STARTS = frozenset(b"(cdi}])IJKLFSVNGTUXM")

_PYTHON_SUFFIXES = (".py", ".pyw", ".pyi")


def sniff(head: bytes, size: int, name: str = "") -> Format:
    """Return the format of a file whose first bytes are ``head``.

    ``size`` is the file's full length. ``name`` is consulted only to mark
    Python source, because plain text cannot be told from code by its bytes
    and treating a ``.py`` file as code errs on the side of caution.
    """
    if size == 0:
        return Format.EMPTY
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return Format.ZIP
    if head[:2] == b"\x1f\x8b":
        return Format.GZIP
    if head[:4] == b"GGUF":
        return Format.GGUF
    if head[:6] == b"\x93NUMPY":
        return Format.NUMPY
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return Format.HDF5
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return Format.PICKLE
    if _looks_like_safetensors(head, size):
        return Format.SAFETENSORS
    if name.endswith(_PYTHON_SUFFIXES) or (head.startswith(b"#!") and b"python" in head):
        return Format.PYTHON
    if _looks_like_json(head):
        return Format.JSON
    if head[0] in _PROTO0_STARTS:
        return Format.MAYBE_PICKLE
    if _looks_like_text(head):
        return Format.TEXT
    return Format.UNKNOWN


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # An 8-byte little-endian header length, then a JSON object.
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _looks_like_json(head: bytes) -> bool:
    # Neither "{" nor "[" is a pickle opcode, so this never hides a pickle.
    text = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if text[:1] == b"[":
        # "[PAD]" starts a vocabulary file; a JSON array starts with a value.
        inner = text[1:].lstrip(b" \t\r\n")
        if inner and inner[:1] not in b'{["-0123456789tfn]':
            return False
    return text[:1] in (b"{", b"[") and _looks_like_text(head)


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is still text.
        if exc.start < len(head) - 3:
            return False
    return not any(b < 0x09 or 0x0E <= b < 0x20 for b in head if b != 0x1B)
