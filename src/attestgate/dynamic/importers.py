"""Importers for runtime-monitor event files: Falco JSON output and Tetragon JSON export.

A runtime monitor watched the artifact being loaded somewhere else, such as
a staging cluster or a CI runner. Its event file is attached to an admission
with ``attestgate admit --signals FILE``. Both formats are JSON Lines, one
event per line. The reader also accepts a JSON array of events, pretty-printed
objects one after another (``tetra getevents -o json | jq .``), and syslog
lines whose JSON object follows a prefix.

- Falco (``json_output: true``): an alert has ``rule``, ``priority``,
  ``output``, ``time`` and ``output_fields``; the event type
  (``evt.type``), file or connection (``fd.name``, ``fd.sip``,
  ``fd.sport``) and process (``proc.cmdline``, ``proc.exepath``) come from
  ``output_fields``, which hold only the fields the rule's output names.
  An alert the importer cannot place under a standard kind becomes
  ``x-attestgate.monitor-alert``.
- Tetragon: each event has one ``process_*`` key and a ``time``.
  ``process_exec`` is a process start; ``process_kprobe`` (and
  ``process_lsm``, ``process_tracepoint``) carries ``function_name`` and
  typed ``args``: ``sock_arg`` or ``sockaddr_arg`` for connections,
  ``file_arg`` or ``path_arg`` for files, with ``int_arg`` 2 (MAY_WRITE) on
  ``security_file_permission`` for a write. ``process_exit`` carries no
  signal.

Every file is read with bounds on its size, its number of events and the
time spent, and an event that cannot be read is counted and reported.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestgate.dynamic.interface import (
    DNS_QUERY,
    FILE_READ_SENSITIVE,
    FILE_WRITE,
    INCOMPLETE,
    MONITOR_ALERT,
    NETWORK_CONNECT,
    PROCESS_EXEC,
    UNAVAILABLE,
    Signal,
    evidence_finding,
    is_sensitive_path,
    utc_now,
)
from attestgate.errors import UsageError
from attestgate.findings import Finding
from attestgate.scanners.interface import MiB

logger = logging.getLogger(__name__)

VERSION = "1"
FALCO = "falco-import"
TETRAGON = "tetragon-import"


@dataclass(frozen=True)
class ImportLimits:
    """Bounds on one event file: bytes, events and seconds spent parsing it."""

    max_file_bytes: int = 64 * MiB
    max_events: int = 100_000
    max_seconds: float = 60.0


@dataclass
class ImportResult:
    """The signals read from one event file, and what could not be read."""

    signals: list[Signal] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    entry: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Counts:
    events: int = 0
    falco: int = 0
    tetragon: int = 0
    ignored: int = 0
    invalid: int = 0
    first_error: str = ""


def import_signal_file(
    path: Path, artifact_name: str, limits: ImportLimits | None = None
) -> ImportResult:
    """Read a Falco or Tetragon event file and map its events to signals.

    Raises :class:`UsageError` when ``path`` does not exist. A file that
    cannot be read or parsed yields a ``dynamic.unavailable`` finding, and
    events that cannot be read yield a ``dynamic.incomplete`` finding.
    """
    limits = limits or ImportLimits()
    result = ImportResult()
    name = str(path)
    if not path.exists():
        raise UsageError(
            f"signal file {path} does not exist",
            hint="pass a Falco JSON output file or a Tetragon JSON export to --signals",
        )
    try:
        text = _read_text(path, limits)
    except _ImportFailure as exc:
        result.findings.append(_unavailable(name, artifact_name, str(exc)))
        result.entry = _entry("signals-import", name, "unavailable", _Counts(), 0)
        return result

    counts = _Counts()
    started = time.monotonic()
    for value, error in _json_values(text):
        if counts.events >= limits.max_events:
            counts.first_error = counts.first_error or f"more than {limits.max_events} events"
            counts.invalid += 1
            break
        if time.monotonic() - started > limits.max_seconds:
            counts.first_error = counts.first_error or f"parsing took over {limits.max_seconds} s"
            counts.invalid += 1
            break
        counts.events += 1
        if error is not None:
            counts.invalid += 1
            counts.first_error = counts.first_error or error
            continue
        result.signals.extend(_event_signals(value, counts))

    source = _source_name(counts)
    status = "ok"
    if counts.events and not (counts.falco or counts.tetragon):
        status = "unavailable"
        reason = "it holds no Falco alerts or Tetragon events"
        if counts.invalid:
            reason = f"{reason}; {counts.invalid} event(s) could not be read ({counts.first_error})"
        result.findings.append(_unavailable(name, artifact_name, reason))
    elif counts.invalid:
        result.findings.append(
            evidence_finding(
                INCOMPLETE,
                source,
                artifact_name,
                f"{counts.invalid} event(s) in the signal file {name} could not be read "
                f"({counts.first_error}), so signals they held are missing",
                "Export the monitor's events again as JSON Lines (one event per line) and "
                "attach the complete file.",
                signal_file=name,
            )
        )
    result.entry = _entry(source, name, status, counts, len(result.signals))
    return result


class _ImportFailure(Exception):
    pass


def _read_text(path: Path, limits: ImportLimits) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise _ImportFailure(f"it could not be read: {exc.strerror or exc}") from exc
    if len(data) > limits.max_file_bytes:
        raise _ImportFailure(f"it is larger than {limits.max_file_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _ImportFailure(f"it is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _json_values(text: str) -> Iterator[tuple[Any, str | None]]:
    """Yield each JSON value in ``text`` with None, or None with the reason it is unreadable."""
    decoder = json.JSONDecoder()
    pos = 0
    size = len(text)
    while pos < size:
        while pos < size and text[pos] in " \t\r\n\ufeff":
            pos += 1
        if pos >= size:
            return
        line_end = text.find("\n", pos)
        line_end = size if line_end < 0 else line_end
        if text[pos] not in "{[":
            # A syslog line carries the JSON object after a prefix.
            brace = text.find("{", pos, line_end)
            if brace < 0:
                yield None, f"a line holds no JSON object: {text[pos : min(line_end, pos + 60)]!r}"
                pos = line_end + 1
                continue
            pos = brace
        try:
            value, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            yield None, f"invalid JSON ({type(exc).__name__}: {str(exc)[:120]})"
            pos = line_end + 1
            continue
        pos = end
        if isinstance(value, list):
            for item in value:
                yield item, None
        else:
            yield value, None


def _event_signals(value: Any, counts: _Counts) -> list[Signal]:
    if not isinstance(value, dict):
        counts.ignored += 1
        return []
    if "rule" in value and ("output" in value or "output_fields" in value):
        counts.falco += 1
        return [falco_signal(value)]
    if any(isinstance(key, str) and key.startswith("process_") for key in value):
        counts.tetragon += 1
        found = tetragon_signal(value)
        if found is None:
            counts.ignored += 1
            return []
        return [found]
    counts.ignored += 1
    return []


# Falco: https://falco.org/docs/reference/rules/supported-fields/ names the
# output fields read here.
_FALCO_CONNECT = frozenset({"connect", "sendto", "sendmsg", "sendmmsg"})
_FALCO_EXEC = frozenset({"execve", "execveat"})
_FALCO_OPEN = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})
_FALCO_WRITE = frozenset(
    {
        "chmod",
        "fchmod",
        "fchmodat",
        "link",
        "linkat",
        "mkdir",
        "mkdirat",
        "rename",
        "renameat",
        "renameat2",
        "rmdir",
        "symlink",
        "symlinkat",
        "unlink",
        "unlinkat",
        "write",
        "pwrite",
    }
)
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def falco_signal(event: Mapping[str, Any]) -> Signal:
    """Map one Falco alert to a signal; an alert of no standard kind is a monitor alert."""
    fields = event.get("output_fields")
    fields = fields if isinstance(fields, dict) else {}
    rule = str(event.get("rule", ""))
    tags = [str(t) for t in event.get("tags", []) if isinstance(t, str | int)]
    process = fields.get("proc.cmdline") or fields.get("proc.exepath") or fields.get("proc.name")
    base: dict[str, Any] = {"rule": rule, "priority": event.get("priority")}
    if process:
        base["process"] = process
    kind, details = _falco_kind(fields, rule, tags)
    if kind == MONITOR_ALERT:
        details["output"] = event.get("output")
    when = event.get("time") or fields.get("evt.time")
    return Signal(kind, {**base, **details}, _time_text(when), FALCO, VERSION)


def _falco_kind(
    fields: Mapping[str, Any], rule: str, tags: list[str]
) -> tuple[str, dict[str, Any]]:
    evt_type = str(fields.get("evt.type", ""))
    fd_name = fields.get("fd.name")
    path = str(fd_name) if fd_name else ""
    lowered = rule.lower()
    if evt_type in _FALCO_CONNECT or (not evt_type and "network" in tags):
        host, port = _falco_destination(fields)
        kind = DNS_QUERY if port == 53 else NETWORK_CONNECT
        return kind, {"host": host, "port": port, "call": evt_type or "connect"}
    if evt_type in _FALCO_EXEC or (not evt_type and "process" in tags):
        return PROCESS_EXEC, {
            "command": fields.get("proc.cmdline"),
            "binary": fields.get("proc.exepath") or fields.get("proc.name"),
        }
    if evt_type in _FALCO_OPEN:
        flags = str(fields.get("evt.arg.flags", ""))
        writing = (
            fields.get("evt.is_open_write") in (True, "true")
            or evt_type == "creat"
            or any(flag in flags for flag in _WRITE_FLAGS)
        )
        if writing:
            return FILE_WRITE, {"path": path, "call": evt_type}
        if (path and is_sensitive_path(path)) or "mitre_credential_access" in tags:
            return FILE_READ_SENSITIVE, {"path": path, "call": evt_type}
    if evt_type in _FALCO_WRITE or (not evt_type and "filesystem" in tags and "write" in lowered):
        return FILE_WRITE, {"path": path, "call": evt_type or "write"}
    credential_rule = "sensitive" in lowered or "mitre_credential_access" in tags
    if not evt_type and path and (credential_rule or is_sensitive_path(path)):
        return FILE_READ_SENSITIVE, {"path": path}
    return MONITOR_ALERT, {"event_type": evt_type or None, "path": path or None}


def _falco_destination(fields: Mapping[str, Any]) -> tuple[Any, Any]:
    host = fields.get("fd.sip") or fields.get("fd.rip")
    port = fields.get("fd.sport") or fields.get("fd.rport")
    name = str(fields.get("fd.name") or "")
    if (host is None or port is None) and "->" in name:
        # fd.name of a socket is "client:port->server:port".
        server = name.rsplit("->", 1)[1]
        server_host, _, server_port = server.rpartition(":")
        host = host or server_host.strip("[]")
        port = port if port is not None else server_port
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    return host or name or None, port


# Tetragon: the JSON export mirrors the gRPC API's events
# (https://tetragon.io/docs/reference/grpc-api/).
_TETRAGON_PROBES = ("process_kprobe", "process_lsm", "process_tracepoint", "process_uprobe")
_TETRAGON_NET = frozenset(
    {
        "__sys_connect",
        "__x64_sys_connect",
        "inet_stream_connect",
        "ip4_datagram_connect",
        "ip6_datagram_connect",
        "security_socket_connect",
        "sys_connect",
        "tcp_connect",
        "tcp_sendmsg",
        "tcp_v4_connect",
        "tcp_v6_connect",
        "udp_sendmsg",
        "udpv6_sendmsg",
    }
)
_TETRAGON_QUIET = frozenset({"tcp_close", "security_socket_accept", "inet_csk_accept"})
_TETRAGON_WRITE = frozenset(
    {
        "__x64_sys_write",
        "security_inode_rename",
        "security_inode_unlink",
        "security_path_chmod",
        "security_path_mkdir",
        "security_path_rename",
        "security_path_truncate",
        "security_path_unlink",
        "vfs_write",
    }
)
_TETRAGON_EXEC = frozenset({"security_bprm_check", "security_bprm_creds_for_exec"})
MAY_WRITE = 2


def tetragon_signal(event: Mapping[str, Any]) -> Signal | None:
    """Map one Tetragon event to a signal, or None for events that carry none."""
    when = _time_text(event.get("time"))
    if isinstance(event.get("process_exec"), dict):
        process = _process(event["process_exec"])
        details = {
            "binary": process.get("binary"),
            "arguments": process.get("arguments"),
            "pid": process.get("pid"),
        }
        return Signal(PROCESS_EXEC, details, when, TETRAGON, VERSION)
    for key in _TETRAGON_PROBES:
        body = event.get(key)
        if isinstance(body, dict):
            return _probe_signal(key, body, when)
    return None


def _process(body: Mapping[str, Any]) -> dict[str, Any]:
    process = body.get("process")
    return process if isinstance(process, dict) else {}


def _process_text(process: Mapping[str, Any]) -> str:
    return f"{process.get('binary', '')} {process.get('arguments', '')}".strip()


def _probe_signal(key: str, body: Mapping[str, Any], when: str) -> Signal | None:
    function = str(body.get("function_name") or f"{body.get('subsys', '')}/{body.get('event', '')}")
    args = [a for a in body.get("args", []) if isinstance(a, dict)]
    base = {"process": _process_text(_process(body)), "call": function}
    if body.get("policy_name"):
        base["policy"] = body["policy_name"]
    if function in _TETRAGON_QUIET:
        return None
    sock = _first_arg(args, "sock_arg", "sockaddr_arg", "skb_arg")
    if function in _TETRAGON_NET or sock is not None:
        sock = sock or {}
        host = sock.get("daddr") or sock.get("addr")
        port = sock.get("dport") or sock.get("port")
        kind = DNS_QUERY if port == 53 else NETWORK_CONNECT
        details = {"host": host, "port": port, "protocol": sock.get("protocol")}
        return Signal(kind, {**base, **details}, when, TETRAGON, VERSION)
    binprm = _first_arg(args, "linux_binprm_arg")
    if function in _TETRAGON_EXEC or binprm is not None:
        path = (binprm or _first_arg(args, "file_arg") or {}).get("path")
        return Signal(PROCESS_EXEC, {**base, "binary": path}, when, TETRAGON, VERSION)
    file = _first_arg(args, "file_arg", "path_arg")
    if file is not None:
        return _file_signal(function, file, args, base, when)
    return Signal(MONITOR_ALERT, {**base, "rule": function}, when, TETRAGON, VERSION)


def _file_signal(
    function: str,
    file: Mapping[str, Any],
    args: list[dict[str, Any]],
    base: dict[str, Any],
    when: str,
) -> Signal | None:
    path = str(file.get("path", ""))
    flags = str(file.get("flags", ""))
    ints = [a.get("int_arg") for a in args if "int_arg" in a]
    writing = (
        function in _TETRAGON_WRITE
        or (function == "security_file_permission" and MAY_WRITE in ints)
        or any(flag in flags for flag in _WRITE_FLAGS)
    )
    if writing:
        return Signal(FILE_WRITE, {**base, "path": path}, when, TETRAGON, VERSION)
    if path and is_sensitive_path(path):
        return Signal(FILE_READ_SENSITIVE, {**base, "path": path}, when, TETRAGON, VERSION)
    # Reading an ordinary file is what loading does; it is not a signal.
    return None


def _first_arg(args: list[dict[str, Any]], *names: str) -> dict[str, Any] | None:
    for arg in args:
        for name in names:
            value = arg.get(name)
            if isinstance(value, dict):
                return value
    return None


def _time_text(value: Any) -> str:
    if isinstance(value, str) and value:
        return value[:64]
    if isinstance(value, int) and value > 10**15:
        # Falco's evt.time is nanoseconds since the epoch.
        stamp = datetime.fromtimestamp(value / 1e9, UTC).isoformat(timespec="microseconds")
        return stamp.replace("+00:00", "Z")
    return utc_now()


def _source_name(counts: _Counts) -> str:
    if counts.falco and not counts.tetragon:
        return FALCO
    if counts.tetragon and not counts.falco:
        return TETRAGON
    return "signals-import"


def _entry(source: str, name: str, status: str, counts: _Counts, signals: int) -> dict[str, Any]:
    return {
        "name": source,
        "version": VERSION,
        "status": status,
        "file": name,
        "events": counts.events,
        "signals": signals,
        "ignored": counts.ignored,
        "invalid": counts.invalid,
    }


def _unavailable(name: str, artifact_name: str, reason: str) -> Finding:
    return evidence_finding(
        UNAVAILABLE,
        "signals-import",
        artifact_name,
        f"the signal file {name} gave no evidence because {reason}",
        "Attach the monitor's events as Falco JSON output (json_output: true) or a "
        "Tetragon JSON export, one event per line.",
        signal_file=name,
    )
