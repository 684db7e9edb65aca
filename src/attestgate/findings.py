"""Findings: the facts that checks report and that the policy weighs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """How much a finding matters, ordered so that ``max()`` picks the worst."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r}; expected one of {names}") from None


@dataclass(frozen=True)
class Finding:
    """One fact worth a policy's attention.

    ``file`` is the path relative to the artifact root; a member inside a
    container is appended after a colon (``pytorch_model.bin:archive/data.pkl``).
    ``offset`` is a byte offset within that file or member, when known.
    """

    rule: str
    severity: Severity
    file: str
    message: str
    remediation: str
    check: str = ""
    offset: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity.label,
            "file": self.file,
            "message": self.message,
            "remediation": self.remediation,
            "check": self.check,
        }
        if self.offset is not None:
            out["offset"] = self.offset
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(
            rule=data["rule"],
            severity=Severity.parse(data["severity"]),
            file=data["file"],
            message=data["message"],
            remediation=data["remediation"],
            check=data.get("check", ""),
            offset=data.get("offset"),
            details=dict(data.get("details", {})),
        )


# Rule id that every check failure carries. The policy maps it to an action
# that can never be "allow", so a check that crashes never lets an artifact in.
CHECK_FAILED = "check.failed"
