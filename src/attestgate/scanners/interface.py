"""The contract between the streaming pass and the format scanners.

The identify step reads every file exactly once, in order, in chunks. Each
chunk goes to the hash and to the scanner chosen for the file's format, so
hashing and scanning cost one read. A scanner therefore never seeks: it
parses incrementally and keeps only the bytes it still needs.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format

# Reads ``length`` bytes at ``offset`` of the stream that was just fed, from
# the same open file. Containers whose members cannot be delimited while
# streaming (zip members with data descriptors, as PyTorch writes them) use
# it to read their small metadata members again after the pass.
ReadAt = Callable[[int, int], bytes]

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Bounds that keep every parser finite on hostile input."""

    # Pickle: opcodes per stream, memo entries, simulated stack depth, and
    # the longest string kept for resolving module and attribute names.
    max_pickle_opcodes: int = 50_000_000
    max_pickle_memo: int = 10_000_000
    max_pickle_stack: int = 1_000_000
    max_pickle_string: int = 64 * 1024
    # Pickles scanned in one stream, one after another.
    max_pickles_per_stream: int = 64
    # safetensors: the safetensors library itself rejects headers over 100 MB.
    max_safetensors_header: int = 100_000_000
    max_safetensors_tensors: int = 1_000_000
    # Containers: members per archive, bytes expanded from compressed
    # members in one file, nesting depth of containers inside containers.
    max_archive_members: int = 100_000
    max_expanded_bytes: int = 64 * GiB
    max_compression_ratio: int = 200
    max_nesting_depth: int = 4
    # JSON and text files that a scanner parses in memory.
    max_json_bytes: int = 64 * MiB
    # Wall-clock budget for scanning one file, in seconds.
    file_time_budget: float = 600.0


@dataclass
class ScanContext:
    """The facts a scanner is given about the stream it is about to read."""

    file: str
    size: int | None
    limits: Limits = field(default_factory=Limits)
    depth: int = 0
    deadline: float = field(default=0.0)
    # The container a member came from, such as "torchscript", when it
    # changes how the member is read.
    container: str = ""

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.limits.file_time_budget

    def member(self, name: str, size: int | None, container: str = "") -> ScanContext:
        """Return the context for a member nested one level deeper."""
        return ScanContext(
            file=f"{self.file}:{name}",
            size=size,
            limits=self.limits,
            depth=self.depth + 1,
            deadline=self.deadline,
            container=container or self.container,
        )

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


@dataclass
class ScanResult:
    """The findings, refined format and facts of one scanner over one stream.

    ``format`` refines the sniffed format when the scanner learns more (a
    pickle that turns out to be a legacy PyTorch checkpoint, say). ``facts``
    contains inventory for the decision record, such as tensor counts.
    """

    findings: list[Finding] = field(default_factory=list)
    format: Format | None = None
    facts: dict[str, Any] = field(default_factory=dict)


class Scanner(abc.ABC):
    """Reads one stream incrementally and reports findings.

    ``feed`` receives the stream's bytes in order. The buffer may be reused
    after the call returns, so a scanner copies whatever it keeps. ``close``
    marks the end of the stream and returns the result; it must report a
    stream that ended early as a finding rather than raise. ``read_at`` is
    given for a whole file on disk and for in-memory members, never for a
    stream that cannot be read twice. A scanner that needs it reports its
    absence as a finding.

    A scanner raises only for its own bugs. The driver turns any exception
    into a ``check.failed`` finding, which the policy never allows.
    """

    check: str
    version: str = "1"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        self.ctx = ctx
        self.format = fmt

    @abc.abstractmethod
    def feed(self, chunk: memoryview) -> None: ...

    @abc.abstractmethod
    def close(self, read_at: ReadAt | None = None) -> ScanResult: ...

    def partial_findings(self) -> list[Finding]:
        """Return what the scanner found before it failed, for the guard to keep.

        Without this, a scanner bug triggered after a critical finding would
        replace a block with the check failure's quarantine.
        """
        return []

    def finding(
        self,
        rule: str,
        severity: Severity,
        message: str,
        remediation: str,
        *,
        offset: int | None = None,
        file: str | None = None,
        **details: Any,
    ) -> Finding:
        """Build a finding located in this scanner's stream."""
        return Finding(
            rule=rule,
            severity=severity,
            file=self.ctx.file if file is None else file,
            message=message,
            remediation=remediation,
            check=self.check,
            offset=offset,
            details=details,
        )


class BufferingScanner(Scanner):
    """A scanner for formats that must be parsed whole, up to ``max_model_bytes``.

    ``feed`` keeps the stream in ``_buffer`` and counts it in ``_size``. Past
    the limit it drops the buffer, and ``close`` reports the file as too
    large to parse by comparing ``_size`` with the limit.
    """

    max_model_bytes: int

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._buffer = bytearray()
        self._size = 0

    def feed(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        if self._size > self.max_model_bytes:
            # Too large to parse: stop buffering and free what was kept.
            self._buffer = bytearray()
            return
        self._buffer += chunk
