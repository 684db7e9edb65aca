"""The contract between the gate and its dynamic-evidence plug-ins.

A dynamic plug-in observes the artifact while something loads it and
reports :class:`Signal` values. The built-in sandbox loads the artifact
itself, and the importers read what a runtime monitor saw elsewhere. Signals
never decide anything: :func:`signals_to_findings` turns them into findings,
and the policy maps those to a decision like any scanner's.

Signal kinds are dotted lowercase strings. The standard kinds are listed in
:data:`STANDARD_KINDS`. A plug-in that needs another kind uses its own
namespace, ``x-<vendor>.<name>`` (for example ``x-acme.gpu-driver-call``),
and declares its severity in :attr:`DynamicPlugin.kinds`; an undeclared
custom kind maps to a medium finding, so that a reviewer sees it. Each kind
``K`` becomes the finding rule ``dynamic.K``, which a policy can map by rule id.
"""

from __future__ import annotations

import abc
import fnmatch
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format

CHECK = "dynamic"

NETWORK_CONNECT = "network.connect"
DNS_QUERY = "dns.query"
PROCESS_EXEC = "process.exec"
FILE_WRITE = "file.write"
FILE_READ_SENSITIVE = "file.read.sensitive"
MODULE_IMPORT = "module.import"

# Kinds the built-in plug-ins add in their own namespace.
CODE_EXEC = "x-attestgate.code-exec"
NATIVE_CODE = "x-attestgate.native-code"
MONITOR_TAMPER = "x-attestgate.monitor-tamper"
TENSOR_MISMATCH = "x-attestgate.tensor-mismatch"
PICKLE_GLOBAL = "x-attestgate.pickle-global"
MONITOR_ALERT = "x-attestgate.monitor-alert"

# Rule ids for evidence a plug-in could not give. The default policy
# quarantines medium findings, so missing evidence never becomes an allow
# that the evidence might have prevented.
UNAVAILABLE = "dynamic.unavailable"
TIMEOUT = "dynamic.timeout"
CRASHED = "dynamic.crashed"
INCOMPLETE = "dynamic.incomplete"

_KIND = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+$")
_CUSTOM_KIND = re.compile(r"^x-[a-z0-9]+(?:-[a-z0-9]+)*\.[a-z0-9]+(?:[.-][a-z0-9]+)*$")

# Bounds on what one signal may carry into the decision record.
MAX_DETAIL_STRING = 512
MAX_DETAIL_ITEMS = 32
MAX_DETAIL_KEYS = 16


@dataclass(frozen=True)
class KindSpec:
    """The default severity of a signal kind and the remediation its findings carry."""

    severity: Severity
    remediation: str


_DO_NOT_LOAD = (
    "Do not load this artifact in a trusted environment. Obtain the weights in a format "
    "that cannot run code (safetensors) or from a producer whose signed provenance you "
    "trust, and have a reviewer inspect the payload that caused this behaviour."
)

STANDARD_KINDS: Mapping[str, KindSpec] = {
    NETWORK_CONNECT: KindSpec(
        Severity.CRITICAL,
        "A model or data file has no reason to open network connections while it loads. "
        + _DO_NOT_LOAD,
    ),
    DNS_QUERY: KindSpec(
        Severity.HIGH,
        "A model or data file has no reason to resolve host names while it loads. " + _DO_NOT_LOAD,
    ),
    PROCESS_EXEC: KindSpec(
        Severity.CRITICAL,
        "Loading a model or data file must not start processes. " + _DO_NOT_LOAD,
    ),
    FILE_WRITE: KindSpec(
        Severity.HIGH,
        "Loading a model or data file must not write outside its scratch directory. "
        + _DO_NOT_LOAD,
    ),
    FILE_READ_SENSITIVE: KindSpec(
        Severity.HIGH,
        "Loading a model or data file must not read credentials or keys. Rotate every "
        "credential that a host which loaded this artifact could read. " + _DO_NOT_LOAD,
    ),
    MODULE_IMPORT: KindSpec(
        Severity.INFO,
        "No action is needed for ordinary modules. Review imports of network, process or "
        "native-code modules: a weights file has no reason to need them.",
    ),
}

BUILTIN_KINDS: Mapping[str, KindSpec] = {
    CODE_EXEC: KindSpec(
        Severity.HIGH,
        "Loading the file ran code built at load time (exec, eval or a constructed "
        "function), which weights never need. " + _DO_NOT_LOAD,
    ),
    NATIVE_CODE: KindSpec(
        Severity.HIGH,
        "Loading the file loaded or called native code through ctypes or a database "
        "extension. " + _DO_NOT_LOAD,
    ),
    MONITOR_TAMPER: KindSpec(
        Severity.HIGH,
        "Something inside the sandbox interfered with the event monitor, so the recorded "
        "signals may be incomplete. Treat the artifact as hostile and have a reviewer "
        "inspect it before any load.",
    ),
    TENSOR_MISMATCH: KindSpec(
        Severity.HIGH,
        "Tensors changed between the bytes stored in the file and the loaded objects, "
        "which means code ran during the load and altered weights. " + _DO_NOT_LOAD,
    ),
    PICKLE_GLOBAL: KindSpec(
        Severity.INFO,
        "No action is needed; the list records which Python objects the unpickler "
        "resolved while loading.",
    ),
    MONITOR_ALERT: KindSpec(
        Severity.MEDIUM,
        "A runtime monitor raised an alert while the artifact was loaded. Have a reviewer "
        "read the alert and decide whether it concerns the artifact.",
    ),
}

# Modules whose import during a load means the payload reached for the
# network, for processes or for native code. Any other import is ordinary.
RISKY_MODULES = frozenset(
    {
        "asyncio.subprocess",
        "ctypes",
        "ftplib",
        "http.client",
        "httpx",
        "imaplib",
        "multiprocessing",
        "paramiko",
        "poplib",
        "pty",
        "requests",
        "smtplib",
        "socket",
        "ssl",
        "subprocess",
        "telnetlib",
        "urllib.request",
        "urllib3",
        "webbrowser",
    }
)

# Paths whose reading during a load means the payload went after
# credentials. The patterns are fnmatch patterns over absolute paths, where
# "*" also matches "/".
SENSITIVE_PATH_PATTERNS = (
    "*/.ssh/*",
    "*/.aws/*",
    "*/.netrc",
    "*/.git-credentials",
    "*/.pypirc",
    "*/.docker/config.json",
    "*/.kube/config",
    "*/.config/gcloud/*",
    "*/.azure/*",
    "*/.gnupg/*",
    "*/.cache/huggingface/token",
    "*/.huggingface/token",
    "*/.env",
    "*/.env.*",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/ssl/private/*",
    "/proc/*/environ",
    "/run/secrets/*",
    "/var/run/secrets/*",
)


def is_sensitive_path(path: str) -> bool:
    """Return whether ``path`` (absolute) matches :data:`SENSITIVE_PATH_PATTERNS`."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SENSITIVE_PATH_PATTERNS)


def is_valid_kind(kind: str) -> bool:
    """Return whether ``kind`` is a standard kind or a custom ``x-<vendor>.`` kind."""
    if kind in STANDARD_KINDS:
        return True
    return bool(_CUSTOM_KIND.match(kind)) and bool(_KIND.match(kind))


def utc_now() -> str:
    """Return the current time as an RFC 3339 UTC timestamp with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def bound_details(value: Any, depth: int = 0) -> Any:
    """Return a JSON-safe copy of ``value`` cut to the detail bounds.

    Strings are cut to :data:`MAX_DETAIL_STRING` characters, lists to
    :data:`MAX_DETAIL_ITEMS` items and mappings to :data:`MAX_DETAIL_KEYS`
    keys, three levels deep. Anything else becomes its ``repr``, cut the same way.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_DETAIL_STRING]
    if isinstance(value, bytes):
        return value[:MAX_DETAIL_STRING].decode("utf-8", "replace")
    if depth >= 3:
        return repr(value)[:MAX_DETAIL_STRING]
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_DETAIL_KEYS]
        return {str(k)[:64]: bound_details(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [bound_details(v, depth + 1) for v in value[:MAX_DETAIL_ITEMS]]
    return repr(value)[:MAX_DETAIL_STRING]


@dataclass(frozen=True)
class Signal:
    """One observed behaviour, standardised across plug-ins.

    ``details`` names what was touched (destination, binary, path, module)
    and is cut to the detail bounds on construction. ``time`` is an RFC 3339
    timestamp. ``file`` is the artifact file the behaviour is attributed to,
    relative to the artifact root, or empty when the source cannot tell.
    ``count`` is how many identical observations this signal stands for.
    Construction raises ``ValueError`` for a kind that is neither standard nor
    in an ``x-<vendor>.`` namespace.
    """

    kind: str
    details: dict[str, Any]
    time: str
    source: str
    source_version: str
    file: str = ""
    count: int = 1

    def __post_init__(self) -> None:
        if not is_valid_kind(self.kind):
            raise ValueError(
                f"signal kind {self.kind!r} is neither a standard kind nor a custom kind "
                "of the form x-<vendor>.<name>"
            )
        if self.count < 1:
            raise ValueError(f"signal count must be at least 1, not {self.count}")
        object.__setattr__(self, "details", bound_details(dict(self.details)))

    def key(self) -> tuple[str, str, str, str]:
        """Return what makes two signals the same observation, for merging repeats."""
        return (self.kind, self.file, self.source, repr(sorted(self.details.items())))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "details": self.details,
            "time": self.time,
            "source": self.source,
            "source_version": self.source_version,
        }
        if self.file:
            out["file"] = self.file
        if self.count != 1:
            out["count"] = self.count
        return out


def merge_signals(signals: Iterable[Signal]) -> list[Signal]:
    """Merge repeated observations into one signal each, adding up their counts."""
    merged: dict[tuple[str, str, str, str], Signal] = {}
    for signal in signals:
        key = signal.key()
        seen = merged.get(key)
        if seen is None:
            merged[key] = signal
        else:
            merged[key] = Signal(
                seen.kind,
                seen.details,
                seen.time,
                seen.source,
                seen.source_version,
                seen.file,
                seen.count + signal.count,
            )
    return list(merged.values())


@dataclass(frozen=True)
class ArtifactFile:
    """One file of the artifact as the identify step saw it."""

    path: str  # relative to the artifact root, "/"-separated
    location: Path  # where to open it
    format: Format
    size: int
    sha256: str


@dataclass(frozen=True)
class ArtifactInput:
    """The artifact as plug-ins receive it: its path, digest and detected formats."""

    path: Path
    kind: str  # "file" or "directory"
    sha256: str
    files: tuple[ArtifactFile, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def formats(self) -> frozenset[Format]:
        return frozenset(f.format for f in self.files)


@dataclass(frozen=True)
class Budget:
    """How much a plug-in may spend on one artifact.

    ``seconds`` is wall-clock time for the whole plug-in run. ``max_signals``
    caps the distinct signals the gate keeps from it.
    """

    seconds: float = 600.0
    max_signals: int = 10_000
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@dataclass
class PluginResult:
    """What one plug-in run produced.

    ``findings`` contains problems with the evidence itself (unavailable,
    timed out, crashed); signals become findings through
    :func:`signals_to_findings`. ``runs`` describes each load or import for
    the decision record. ``status`` is one of ``ok``, ``partial``,
    ``unavailable``, ``timeout``, ``crashed`` or ``not-applicable``.
    """

    signals: list[Signal] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"


class DynamicPlugin(abc.ABC):
    """A source of dynamic evidence, discovered through the ``attestgate.dynamic`` entry points.

    A subclass sets ``name`` and ``version``, declares any custom signal kinds
    in ``kinds``, and is constructed without arguments by the registry.
    ``run`` must return within the budget and report its own failures as
    findings; an exception it raises becomes a ``dynamic.crashed`` finding.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    kinds: ClassVar[Mapping[str, KindSpec]] = {}

    def applies_to(self, formats: frozenset[Format], stage: str, tier: str | None) -> bool:
        """Return whether the plug-in has anything to observe for these formats, stage and tier."""
        return True

    @abc.abstractmethod
    def run(self, artifact: ArtifactInput, budget: Budget) -> PluginResult: ...


def evidence_finding(
    rule: str, source: str, file: str, message: str, remediation: str, **details: Any
) -> Finding:
    """Build a finding about missing or partial evidence from plug-in ``source``."""
    return Finding(
        rule=rule,
        severity=Severity.MEDIUM,
        file=file,
        message=message,
        remediation=remediation,
        check=CHECK,
        details={"source": source, **details},
    )


def kind_spec(kind: str, extra: Mapping[str, KindSpec] | None = None) -> KindSpec:
    """Return the severity and remediation for ``kind``, medium for an undeclared custom kind."""
    if kind in STANDARD_KINDS:
        return STANDARD_KINDS[kind]
    if extra and kind in extra:
        return extra[kind]
    if kind in BUILTIN_KINDS:
        return BUILTIN_KINDS[kind]
    return KindSpec(
        Severity.MEDIUM,
        f"The plug-in reported the signal kind {kind}, which this gate does not know. Have a "
        "reviewer read the signal's details, and map the rule in the policy once its meaning "
        "is settled.",
    )


# Findings per signal kind and file before the rest are summarised in one.
MAX_FINDINGS_PER_KIND = 20
MAX_LISTED_NAMES = 50


def _destination(details: Mapping[str, Any]) -> str:
    if details.get("url"):
        return str(details["url"])
    host = details.get("host") or details.get("address")
    port = details.get("port")
    if host and port is not None:
        return f"{host}:{port}"
    if host:
        return str(host)
    if details.get("path"):
        return str(details["path"])
    return "an unknown destination"


def _command(details: Mapping[str, Any]) -> str:
    if details.get("command"):
        return str(details["command"])
    argv = details.get("argv")
    if isinstance(argv, list) and argv:
        return " ".join(str(a) for a in argv)
    if details.get("binary"):
        return str(details["binary"])
    return f"a child process ({details.get('call', 'fork')})"


def _behaviour(signal: Signal) -> str:
    d = signal.details
    kind = signal.kind
    if kind == NETWORK_CONNECT:
        return f"tried to connect to {_destination(d)}"
    if kind == DNS_QUERY:
        return f"looked up the host name {d.get('host') or d.get('address') or '(unknown)'}"
    if kind == PROCESS_EXEC:
        return f"started a process: {_command(d)}"
    if kind == FILE_WRITE:
        return f"wrote to {d.get('path', '(unknown path)')} outside its scratch directory"
    if kind == FILE_READ_SENSITIVE:
        return f"read the sensitive file {d.get('path', '(unknown path)')}"
    if kind == CODE_EXEC:
        return f"ran code created at load time ({d.get('call', 'exec')} of {d.get('code', '?')})"
    if kind == NATIVE_CODE:
        return f"reached native code through {d.get('call', '?')} ({d.get('target', '?')})"
    if kind == MONITOR_TAMPER:
        return f"interfered with the event monitor: {d.get('reason', d.get('call', '?'))}"
    if kind == TENSOR_MISMATCH:
        return (
            f"produced {d.get('mismatched', '?')} of {d.get('storages', '?')} tensor storages "
            "whose bytes differ from every tensor stored in the file"
        )
    if kind == MONITOR_ALERT:
        output = d.get("output")
        return f"triggered the alert {d.get('rule', '?')}" + (f": {output}" if output else "")
    listed = ", ".join(f"{k}={v}" for k, v in list(d.items())[:6])
    return f"reported {kind} ({listed})"


def _subject(signal: Signal, where: str) -> str:
    loader = signal.details.get("loader")
    if loader:
        return f"loading {where} with {loader} in the sandbox"
    process = signal.details.get("process")
    if process:
        return f"the process {process}, seen by {signal.source},"
    return f"the load seen by {signal.source}"


def _signal_finding(signal: Signal, where: str, spec: KindSpec) -> Finding:
    times = f" ({signal.count} times)" if signal.count > 1 else ""
    return Finding(
        rule=f"dynamic.{signal.kind}",
        severity=spec.severity,
        file=where,
        message=f"{_subject(signal, where)} {_behaviour(signal)}{times}",
        remediation=spec.remediation,
        check=CHECK,
        details={"signal": signal.to_json()},
    )


def _is_risky_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in RISKY_MODULES)


def _name_list_finding(
    kind: str, severity: Severity, where: str, group: list[Signal], names: list[str], noun: str
) -> Finding:
    spec = kind_spec(kind)
    sources = ", ".join(sorted({s.source for s in group}))
    listed = ", ".join(names[:MAX_LISTED_NAMES])
    more = f" and {len(names) - MAX_LISTED_NAMES} more" if len(names) > MAX_LISTED_NAMES else ""
    return Finding(
        rule=f"dynamic.{kind}",
        severity=severity,
        file=where,
        message=f"while {where} was loaded, {sources} recorded {len(names)} {noun}: {listed}{more}",
        remediation=spec.remediation,
        check=CHECK,
        details={"names": names[: MAX_LISTED_NAMES * 4]},
    )


def _import_findings(group: list[Signal], where: str) -> list[Finding]:
    modules = sorted({str(s.details.get("module", "?")) for s in group})
    risky = [m for m in modules if _is_risky_module(m)]
    ordinary = [m for m in modules if not _is_risky_module(m)]
    out = []
    if risky:
        noun = "import(s) of network, process or native-code modules"
        out.append(_name_list_finding(MODULE_IMPORT, Severity.MEDIUM, where, group, risky, noun))
    if ordinary:
        noun = "module import(s)"
        out.append(_name_list_finding(MODULE_IMPORT, Severity.INFO, where, group, ordinary, noun))
    return out


def signals_to_findings(
    signals: Iterable[Signal],
    kinds: Mapping[str, KindSpec] | None = None,
    artifact_name: str = "",
) -> list[Finding]:
    """Turn signals into findings with rule ids ``dynamic.<kind>``.

    Severities come from :data:`STANDARD_KINDS`, then ``kinds`` (custom kinds
    declared by the plug-ins that ran), then the built-in custom kinds; any
    other kind is medium. Module imports and resolved pickle globals become
    one listing finding per file instead of one finding each, and an import
    of a network, process or native-code module is medium rather than info.
    A signal without a file is located at ``artifact_name``.
    """
    groups: dict[tuple[str, str], list[Signal]] = {}
    for signal in merge_signals(signals):
        groups.setdefault((signal.kind, signal.file), []).append(signal)

    findings: list[Finding] = []
    for (kind, file), group in sorted(groups.items()):
        where = file or artifact_name
        if kind == MODULE_IMPORT:
            findings.extend(_import_findings(group, where))
            continue
        spec = kind_spec(kind, kinds)
        if kind == PICKLE_GLOBAL:
            names = sorted({f"{s.details.get('module')}.{s.details.get('name')}" for s in group})
            noun = "pickle global(s) resolved by the unpickler"
            findings.append(_name_list_finding(kind, spec.severity, where, group, names, noun))
            continue
        for signal in group[:MAX_FINDINGS_PER_KIND]:
            findings.append(_signal_finding(signal, where, spec))
        if len(group) > MAX_FINDINGS_PER_KIND:
            rest = len(group) - MAX_FINDINGS_PER_KIND
            findings.append(
                Finding(
                    rule=f"dynamic.{kind}",
                    severity=spec.severity,
                    file=where,
                    message=f"{rest} more distinct {kind} signals for {where} are in the "
                    "decision record's dynamic section",
                    remediation=spec.remediation,
                    check=CHECK,
                    details={"omitted": rest},
                )
            )
    return findings
