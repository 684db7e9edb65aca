"""The gate's side of a sandbox session: start the child and read its event stream with bounds.

The child's messages are length-prefixed JSON objects. Once the child
starts loading, a process that may run hostile code writes them, so the
reader trusts only what it can bound and check. Each message is at most
``max_message`` bytes, there are at most ``max_messages`` of them, and the
session ends at a wall-clock deadline. The first framing error stops parsing
for good, because a stream that lost its framing cannot be resynchronised
safely. The child's stdout and stderr are kept only as a short tail for
diagnostics.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
READ_SIZE = 65536
# Time allowed for the killed process group to be reaped.
REAP_SECONDS = 10.0


class StreamError(Exception):
    """The event stream broke its framing or its bounds."""


class StreamLimitError(StreamError):
    """The event stream held more messages than the bound allows."""


class FrameReader:
    """Splits the event pipe's bytes into messages, enforcing size and count bounds."""

    def __init__(self, max_message: int, max_messages: int) -> None:
        self.max_message = max_message
        self.max_messages = max_messages
        self.count = 0
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Return the complete messages in ``data`` and what was buffered before it.

        Raises :class:`StreamError` for a frame over the size bound, a body
        that is not a JSON object with a string ``t`` field, or a message
        beyond the count bound.
        """
        self.buffer += data
        messages: list[dict[str, Any]] = []
        while len(self.buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buffer)
            if length == 0 or length + HEADER.size > self.max_message:
                raise StreamError(
                    f"a message announced {length} bytes, outside 1 to "
                    f"{self.max_message - HEADER.size}"
                )
            end = HEADER.size + length
            if len(self.buffer) < end:
                break
            body = bytes(self.buffer[HEADER.size : end])
            del self.buffer[:end]
            self.count += 1
            if self.count > self.max_messages:
                raise StreamLimitError(f"the child sent more than {self.max_messages} messages")
            messages.append(_decode(body))
        return messages


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise StreamError(f"a message is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise StreamError("a message is not a JSON object with a string field t")
    return message


@dataclass
class Received:
    """One message and when the gate received it (``time.time()`` seconds)."""

    at: float
    message: dict[str, Any]


@dataclass
class SessionOutput:
    """Everything the gate observed from one child process tree."""

    messages: list[Received] = field(default_factory=list)
    output_tail: str = ""
    # Why the gate stopped the session early, if it did: "deadline",
    # "no-hello" or "rejected-hello".
    stopped: str = ""
    stream_error: str = ""
    # True when the stream broke only its message-count bound, not its framing.
    stream_over_limit: bool = False
    hello_error: str = ""
    returncode: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class SessionSpec:
    """How to start one session's child and how long to let it run."""

    argv: Sequence[str]
    env: dict[str, str]
    cwd: Path
    pass_fds: tuple[int, ...]
    preexec: Callable[[], None]
    deadline: float  # time.monotonic() value
    hello_seconds: float
    max_message: int
    max_messages: int
    max_output: int


def run_session(
    spec: SessionSpec,
    event_read: int,
    event_write: int,
    check_hello: Callable[[dict[str, Any]], str],
) -> SessionOutput:
    """Run the child to completion, the deadline or a rejected ``hello``, and collect its stream.

    ``check_hello`` returns an empty string when the child's first message
    proves the isolation the gate asked for, and the reason otherwise. The
    whole process group is killed before this returns.
    """
    started = time.monotonic()
    out = SessionOutput()
    reader = FrameReader(spec.max_message, spec.max_messages)
    # preexec_fn runs Python between fork and exec, where a lock held by
    # another thread at fork time could deadlock the child. The function
    # passed here only calls resource.setrlimit, which takes no such lock.
    proc = subprocess.Popen(
        list(spec.argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=spec.cwd,
        env=spec.env,
        pass_fds=(event_write, *spec.pass_fds),
        start_new_session=True,
        preexec_fn=spec.preexec,  # noqa: PLW1509
    )
    os.close(event_write)
    assert proc.stdout is not None
    tail = bytearray()
    selector = selectors.DefaultSelector()
    selector.register(event_read, selectors.EVENT_READ, "events")
    selector.register(proc.stdout, selectors.EVENT_READ, "output")
    hello_seen = False
    try:
        while selector.get_map():
            limit = (
                spec.deadline if hello_seen else min(spec.deadline, started + spec.hello_seconds)
            )
            remaining = limit - time.monotonic()
            if remaining <= 0:
                out.stopped = "deadline" if hello_seen else "no-hello"
                break
            for key, _ in selector.select(timeout=min(remaining, 0.5)):
                data = os.read(key.fd, READ_SIZE)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                if key.data == "output":
                    tail += data
                    del tail[: max(0, len(tail) - spec.max_output)]
                    continue
                if out.stream_error:
                    continue
                try:
                    messages = reader.feed(data)
                except StreamError as exc:
                    out.stream_error = str(exc)
                    out.stream_over_limit = isinstance(exc, StreamLimitError)
                    continue
                now = time.time()
                for message in messages:
                    if not hello_seen:
                        hello_seen = True
                        out.hello_error = check_hello(message)
                    out.messages.append(Received(now, message))
                if out.hello_error:
                    out.stopped = "rejected-hello"
                    break
            if out.stopped:
                break
    finally:
        _kill_group(proc)
        selector.close()
        os.close(event_read)
        out.output_tail = _drain(proc, tail, spec.max_output)
        out.returncode = proc.returncode
        out.seconds = time.monotonic() - started
    return out


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The child leads its own process group (start_new_session), and the
    # PID namespace's first process dies with it, which takes the rest of
    # the namespace along.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        logger.warning("could not kill the sandbox process group %d", proc.pid)
    try:
        proc.wait(timeout=REAP_SECONDS)
    except subprocess.TimeoutExpired:
        logger.warning("sandbox process %d did not exit after SIGKILL", proc.pid)


def _drain(proc: subprocess.Popen[bytes], tail: bytearray, limit: int) -> str:
    if proc.stdout is not None:
        try:
            os.set_blocking(proc.stdout.fileno(), False)
            while True:
                data = os.read(proc.stdout.fileno(), READ_SIZE)
                if not data:
                    break
                tail += data
                del tail[: max(0, len(tail) - limit)]
        except (BlockingIOError, OSError):
            pass
        proc.stdout.close()
    return tail.decode("utf-8", "replace")
