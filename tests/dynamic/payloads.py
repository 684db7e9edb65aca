"""Hostile pickles built opcode by opcode, whose payloads only touch canaries the tests own."""

from __future__ import annotations

import struct
from typing import Any


def encode(value: Any) -> bytes:
    """Return the protocol-2 opcodes that push ``value`` (str, int, bool, tuple or list)."""
    if isinstance(value, str):
        data = value.encode()
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)
    if isinstance(value, tuple):
        return b"(" + b"".join(encode(v) for v in value) + b"t"
    if isinstance(value, list):
        return b"](" + b"".join(encode(v) for v in value) + b"e"
    raise TypeError(f"cannot encode {type(value).__name__}")


def reduce_pickle(module: str, name: str, *args: Any) -> bytes:
    """Return a pickle whose load calls ``module.name(*args)``."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + encode(tuple(args)) + b"R."


def exec_pickle(source: str) -> bytes:
    """Return a pickle whose load runs ``source`` through builtins.exec."""
    return reduce_pickle("builtins", "exec", source)
