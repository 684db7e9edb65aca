"""Read an HDF5 file's metadata with h5py in a disposable child process.

libhdf5 is a C parser with a history of memory-safety bugs. A crafted file
can also make it loop forever without reading anything: libhdf5 2.0.0, which
h5py 3.16 bundles, does so when a global heap object's size field grows by
eight. So h5py never runs in the gate's process:

1. A helper interpreter (the zygote) starts once, imports h5py and waits.
   It never reads artifact bytes.
2. For each file the gate creates a socket pair and passes one end to the
   zygote (SCM_RIGHTS), which forks a child for that file alone.
3. The child limits its own lifetime, CPU time and address space, opens
   the file through a file object whose reads are requests over the
   socket, and sends back the attributes it was asked for and a JSON report.
4. The gate serves reads from ``read_at``, stops waiting at the deadline,
   and accepts only framed bytes and JSON, never pickles.

A child that hangs is ended by its own alarm shortly after the gate stops
waiting; one that crashes only closes its socket. The zygote exits when the
gate closes the control socket. This needs ``os.fork`` and
``socket.send_fds`` (Linux and other POSIX systems); elsewhere
:func:`probe_hdf5` reports that it could not run.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import logging
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from attestgate.scanners.interface import GiB, MiB, ReadAt

logger = logging.getLogger(__name__)

# Root attributes read as text: Keras 2 writes these into a whole-model file.
CONFIG_ATTRIBUTES = ("model_config", "training_config")
INFO_ATTRIBUTES = ("keras_version", "backend")
_MAX_INFO_BYTES = 1024
_MAX_ATTRIBUTE_NAMES = 640
# Links visited in one file when looking for external links and storage.
MAX_H5_LINKS = 100_000
# External references one child reports.
_MAX_EXTERNAL = 100
# Wall-clock limit for one file, also bounded by the file's deadline.
PROBE_SECONDS = 120.0
# Address-space limit of a child, so that a file that makes libhdf5
# allocate without bound fails there instead of in the gate.
PROBE_MEMORY_BYTES = 2 * GiB
# Largest block served per read request.
_MAX_READ = 4 * MiB
_MAX_TEXT_ERROR = 500

# Frame: one kind byte and an 8-byte little-endian payload length.
_FRAME = struct.Struct("<cQ")
# Zygote request: file size, maximum config text, seconds the child may live.
_REQUEST = struct.Struct("<QQd")
_READ = struct.Struct("<QQ")

_ZYGOTE_CODE = (
    "import sys; from attestgate.scanners.hdf5_probe import _zygote_main; "
    "_zygote_main(int(sys.argv[1]))"
)


class ProtocolError(OSError):
    """A message over the probe socket was malformed or too long."""


@dataclass
class ProbeResult:
    """What the child returned, or why it returned nothing usable.

    ``report`` contains ``attribute_names``, ``invalid`` (text attributes that
    are not a single string within the limit), ``external`` (entries with
    ``kind``, ``object``, ``target``, ``inner``), ``links``, ``datasets``,
    ``stopped`` and ``error``. ``texts`` maps attribute names from
    ``CONFIG_ATTRIBUTES`` and ``INFO_ATTRIBUTES`` to their bytes.
    """

    report: dict[str, Any] | None = None
    texts: dict[str, bytes] = field(default_factory=dict)
    failure: str = ""
    timed_out: bool = False


def probe_hdf5(source: ReadAt, size: int, *, max_text: int, deadline: float) -> ProbeResult:
    """Probe the HDF5 file that ``source`` reads, in a child process.

    ``max_text`` bounds each config attribute in bytes; ``deadline`` is a
    ``time.monotonic()`` value after which the gate stops waiting.
    """
    timeout = min(PROBE_SECONDS, deadline - time.monotonic())
    if timeout <= 0:
        return ProbeResult(
            failure="the time budget for this file ran out before the HDF5 file was opened",
            timed_out=True,
        )
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return ProbeResult(failure="HDF5 files can be checked only on POSIX systems")

    ours, theirs = socket.socketpair()
    try:
        request = _REQUEST.pack(size, max_text, timeout + 1.0)
        _ZYGOTE.start_child(request, theirs.fileno())
    except OSError as exc:
        ours.close()
        return ProbeResult(failure=f"the HDF5 reader process could not be started: {exc}")
    finally:
        theirs.close()

    with ours:
        return _serve(ours, source, size, max_text, time.monotonic() + timeout)


def _serve(
    sock: socket.socket, source: ReadAt, size: int, max_text: int, deadline: float
) -> ProbeResult:
    """Serve the child's read requests until it sends its report, dies or times out."""
    result = ProbeResult()
    max_payload = max(max_text, _MAX_READ) + 256
    try:
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            kind, payload = _receive(sock, max_payload)
            if kind == b"R" and len(payload) == _READ.size:
                offset, length = _READ.unpack(payload)
                length = min(length, _MAX_READ, max(0, size - offset))
                try:
                    data = source(offset, length) if length else b""
                except OSError as exc:
                    result.failure = f"reading the HDF5 file failed: {exc}"
                    return result
                _send(sock, b"D", data)
            elif kind == b"T" and b"\x00" in payload:
                name, _, text = payload.partition(b"\x00")
                result.texts[name.decode("utf-8", "replace")] = text
            elif kind == b"J":
                result.report = _parse_report(payload)
                if result.report is None:
                    result.failure = "the HDF5 reader process returned an invalid report"
                return result
            else:
                result.failure = "the HDF5 reader process sent an invalid message"
                return result
    except TimeoutError:
        result.failure = (
            "reading the HDF5 file did not finish within the time budget, so the reader "
            "was stopped and the file was not checked"
        )
        result.timed_out = True
    except EOFError:
        result.failure = "the HDF5 reader process ended before returning a report"
    except OSError as exc:
        result.failure = f"the HDF5 reader process failed: {exc}"
    return result


def _send(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(_FRAME.pack(kind, len(payload)) + payload)


def _receive(sock: socket.socket, max_payload: int) -> tuple[bytes, bytes]:
    kind, length = _FRAME.unpack(_receive_exact(sock, _FRAME.size))
    if length > max_payload:
        raise ProtocolError(f"a {length}-byte message exceeds the {max_payload}-byte limit")
    return kind, _receive_exact(sock, length)


def _receive_exact(sock: socket.socket, length: int) -> bytes:
    parts: list[bytes] = []
    remaining = length
    while remaining:
        part = sock.recv(min(remaining, 1 << 20))
        if not part:
            raise EOFError("the socket closed mid-message")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _parse_report(payload: bytes) -> dict[str, Any] | None:
    """Parse the child's JSON report, or return None when its shape is wrong."""
    try:
        report = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(report, dict):
        return None
    kinds = {
        "attribute_names": list,
        "invalid": list,
        "external": list,
        "links": int,
        "datasets": int,
        "stopped": bool,
    }
    if not all(isinstance(report.get(key), kind) for key, kind in kinds.items()):
        return None
    if not isinstance(report.get("error"), str | None):
        return None
    names = [*report["attribute_names"], *report["invalid"]]
    if not all(isinstance(name, str) for name in names):
        return None
    keys = ("kind", "object", "target", "inner")
    for entry in report["external"]:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in keys):
            return None
    return report


# --- The zygote ------------------------------------------------------------------


class _Zygote:
    """Starts the zygote on first use and hands it one socket per file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        # The process that started the zygote. A forked copy of the gate
        # starts its own, so that two processes never share one socket.
        self._owner = 0

    def start_child(self, request: bytes, fd: int) -> None:
        with self._lock:
            for attempt in range(2):
                if self._owner != os.getpid():
                    self._process, self._control = None, None
                if (
                    self._control is None
                    or self._process is None
                    or self._process.poll() is not None
                ):
                    self._spawn()
                assert self._control is not None
                try:
                    socket.send_fds(self._control, [request], [fd])
                    return
                except OSError:
                    # A zygote that died since the last file is started again once.
                    logger.debug("HDF5 zygote unavailable (attempt %d)", attempt + 1, exc_info=True)
                    self._stop()
            raise OSError("the HDF5 zygote process exited")

    def _spawn(self) -> None:
        self._stop()
        ours, theirs = socket.socketpair()
        # One BLAS thread keeps the zygote single-threaded, so forking it is safe.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE_CODE, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._control = ours
        if self._owner != os.getpid():
            atexit.register(self.close)
        self._owner = os.getpid()
        logger.debug("started HDF5 zygote process %d", self._process.pid)

    def close(self) -> None:
        """Stop the zygote: it exits when its control socket closes."""
        with self._lock:
            if self._owner == os.getpid():
                self._stop(grace=2.0)

    def _stop(self, grace: float = 0.0) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(grace)
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None


_ZYGOTE = _Zygote()


def _zygote_main(control_fd: int) -> None:
    """Run in the zygote: fork one child per request until the gate goes away."""
    # Imported once here so that every forked child starts ready. When h5py
    # is missing, each child reports the ImportError to the gate instead.
    with contextlib.suppress(ImportError):
        import h5py  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    control = socket.socket(fileno=control_fd)
    while True:
        try:
            request, fds, _flags, _address = socket.recv_fds(control, _REQUEST.size, 1)
        except OSError:
            return
        if not request:
            return
        if len(fds) != 1 or len(request) != _REQUEST.size:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            # os._exit in the finally clause keeps the child out of this loop,
            # even when _child_main raises.
            code = 1
            try:
                control.close()
                code = _child_main(fds[0], request)
            finally:
                os._exit(code)
        os.close(fds[0])


# --- The child ---------------------------------------------------------------------


class _SocketFile(io.RawIOBase):
    """A read-only, seekable file whose bytes come from the gate over a socket.

    libhdf5 pulls only the blocks it needs through ``readinto``, so opening a
    large weight file reads its metadata and leaves the weights on disk.
    """

    def __init__(self, sock: socket.socket, size: int) -> None:
        super().__init__()
        self._sock = sock
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        requested = max(0, min(len(view), self._size - self._position))
        filled = 0
        while filled < requested:
            request = min(requested - filled, _MAX_READ)
            _send(self._sock, b"R", _READ.pack(self._position + filled, request))
            _kind, data = _receive(self._sock, _MAX_READ)
            if not data:
                break
            view[filled : filled + len(data)] = data
            filled += len(data)
        self._position += filled
        return filled

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise OSError(f"seek to {position}, before the start of the file")
        self._position = position
        return position

    def tell(self) -> int:
        return self._position


def _child_main(fd: int, request: bytes) -> int:
    size, max_text, seconds = _REQUEST.unpack(request)
    _limit_resources(seconds)
    sock = socket.socket(fileno=fd)
    try:
        report = _probe_file(_SocketFile(sock, size), sock, max_text)
        payload = json.dumps(report).encode()
    except Exception as exc:  # noqa: BLE001 - every failure goes to the gate as a finding
        report = _empty_report()
        report["error"] = _as_text(f"{type(exc).__name__}: {exc}")[:_MAX_TEXT_ERROR]
        payload = json.dumps(report).encode()
    try:
        _send(sock, b"J", payload)
    except OSError:
        return 1
    return 0


def _limit_resources(seconds: float) -> None:
    """Bound the child's lifetime, CPU time and address space.

    SIGALRM keeps its default action, which ends the process even while
    libhdf5 loops in C code; the CPU limit backs it up.
    """
    import resource

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    limits = (
        (resource.RLIMIT_AS, PROBE_MEMORY_BYTES),
        (resource.RLIMIT_CPU, math.ceil(seconds) + 1),
        (resource.RLIMIT_CORE, 0),
    )
    for limit, value in limits:
        _soft, hard = resource.getrlimit(limit)
        capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (capped, capped))


def _empty_report() -> dict[str, Any]:
    return {
        "attribute_names": [],
        "invalid": [],
        "external": [],
        "links": 0,
        "datasets": 0,
        "stopped": False,
        "error": None,
    }


def _probe_file(file: _SocketFile, sock: socket.socket, max_text: int) -> dict[str, Any]:
    import h5py

    report = _empty_report()
    with h5py.File(file, "r") as h5:
        names = _attribute_names(h5)
        report["attribute_names"] = names
        for name in INFO_ATTRIBUTES + CONFIG_ATTRIBUTES:
            if name not in names:
                continue
            limit = _MAX_INFO_BYTES if name in INFO_ATTRIBUTES else max_text
            text = _read_text_attribute(h5, name, limit)
            if text is None:
                report["invalid"].append(name)
            else:
                _send(sock, b"T", name.encode() + b"\x00" + text)
        _visit_links(h5, report)
    return report


def _visit_links(h5: Any, report: dict[str, Any]) -> None:
    import h5py

    def visit(name: str, link: Any) -> bool | None:
        report["links"] += 1
        if report["links"] > MAX_H5_LINKS:
            report["stopped"] = True
            return True
        # h5py turns an exception raised in this callback into a
        # SystemError, so errors are recorded here and stop the visit.
        try:
            if isinstance(link, h5py.ExternalLink):
                _add_external(report, "link", name, link.filename, link.path)
            elif isinstance(link, h5py.HardLink):
                obj = h5.get(name)
                if isinstance(obj, h5py.Dataset):
                    report["datasets"] += 1
                    _check_dataset(obj, name, report)
        except Exception as exc:  # noqa: BLE001 - reported to the gate as a finding
            report["error"] = _as_text(f"{type(exc).__name__}: {exc}")[:_MAX_TEXT_ERROR]
            return True
        return None

    # visititems_links passes each link without resolving it and descends
    # only through hard links, so no other file is opened.
    h5.visititems_links(visit)
    report["links"] = min(report["links"], MAX_H5_LINKS)


def _check_dataset(dataset: Any, name: str, report: dict[str, Any]) -> None:
    plist = dataset.id.get_create_plist()
    for index in range(min(plist.get_external_count(), _MAX_EXTERNAL)):
        _add_external(report, "storage", name, plist.get_external(index)[0], "")
    if dataset.is_virtual:
        for source in dataset.virtual_sources()[:_MAX_EXTERNAL]:
            if source.file_name != ".":
                _add_external(report, "virtual", name, source.file_name, source.dset_name)


def _add_external(report: dict[str, Any], kind: str, name: Any, target: Any, inner: Any) -> None:
    if len(report["external"]) < _MAX_EXTERNAL:
        entry = {
            "kind": kind,
            "object": _as_text(name)[:1024],
            "target": _as_text(target)[:1024],
            "inner": _as_text(inner)[:1024],
        }
        report["external"].append(entry)


def _as_text(value: Any) -> str:
    """Return text that JSON and UTF-8 accept, whatever type h5py handed over."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.encode("utf-8", "replace").decode("utf-8")


def _attribute_names(h5: Any) -> list[str]:
    names: list[str] = []
    for name in h5.attrs:
        names.append(_as_text(name))
        if len(names) >= _MAX_ATTRIBUTE_NAMES:
            break
    return names


def _read_text_attribute(h5: Any, name: str, max_bytes: int) -> bytes | None:
    """Read a scalar string attribute as bytes, or return None when it is anything else.

    The shape and fixed size are checked before reading, because a
    variable-length string array of a billion elements all pointing at one
    heap object takes a few bytes in the file and gigabytes in memory.
    """
    import h5py
    import numpy as np

    try:
        attr_id = h5py.h5a.open(h5.id, name.encode("utf-8"))
        count = 1
        for dim in attr_id.shape:
            count *= dim
        if count != 1 or attr_id.get_storage_size() > max_bytes:
            return None
        value = h5.attrs[name]
    except (OSError, ValueError, KeyError, TypeError, UnicodeError):
        return None
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, np.bytes_ | bytes) and len(value) <= max_bytes:
        return bytes(value)
    return None
