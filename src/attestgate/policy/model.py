"""Value types of the policy: actions, reasons, decisions and the loaded policy document."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attestgate.errors import PolicyError
from attestgate.findings import Finding, Severity
from attestgate.stages import STAGES

TIERS = ("low", "standard", "critical")
DEFAULT_TIER = "standard"
API_V1 = "attestgate/v1"
API_V2 = "attestgate/v2"
ENFORCE = "enforce"
AUDIT = "audit"

# A location in a policy document: mapping keys and sequence indexes.
DocPath = tuple[str | int, ...]

# The kind of policy entry that produced a reason.
BY_RULE = "rule"
BY_SEVERITY = "severity"
BY_OUTCOME = "outcome"
BY_REQUIREMENT = "requirement"
BY_FORMAT = "format"
BY_LIMIT = "limit"
BY_CUSTOM = "custom"


class Action(enum.IntEnum):
    """The action the policy takes on an artifact, ordered from least to most strict."""

    ALLOW = 0
    QUARANTINE = 1
    BLOCK = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Action:
        return cls[text.strip().upper()]


def tier_rank(tier: str) -> int:
    """Return the tier's place from least (low) to most (critical) scrutiny."""
    return TIERS.index(tier)


def format_path(path: DocPath) -> str:
    """Write a document path the way messages name fields: ``stages.training.rules[x.y]``.

    A key that contains a dot (a rule id) is written in brackets, so the
    path can be read back unambiguously.
    """
    out = ""
    for part in path:
        if isinstance(part, int) or "." in part:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


@dataclass(frozen=True)
class Reason:
    """One fact that moved the decision away from allow, and the policy entry that did it.

    ``source`` names the kind of entry (``rule``, ``severity``, ``outcome``,
    ``requirement``, ``format``, ``limit`` or ``custom``) and ``line`` its
    line in the policy file, when known. When the entry that asked for the
    fact (a requirement, say) is not the one that chose its action (the
    ``insufficientEvidence`` outcome), ``mapped_by`` names the latter.
    """

    rule: str
    severity: Severity
    file: str
    action: Action
    policy_path: str
    message: str
    source: str = BY_SEVERITY
    line: int | None = None
    remediation: str = ""
    mapped_by: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity.label,
            "file": self.file,
            "action": self.action.label,
            "policy_path": self.policy_path,
            "message": self.message,
            "source": self.source,
        }
        if self.line is not None:
            out["policy_line"] = self.line
        if self.remediation:
            out["remediation"] = self.remediation
        if self.mapped_by:
            out["mapped_by"] = self.mapped_by
        return out


@dataclass(frozen=True)
class TierChoice:
    """The criticality tier of one admission and where it came from.

    ``source`` is ``option`` (``admit --tier``), ``label`` (the artifact's
    label file) or ``policy`` (the policy's ``defaultTier``).
    """

    name: str
    source: str = "policy"
    labels: Mapping[str, str] = field(default_factory=dict)
    label_file: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "source": self.source}
        if self.label_file:
            out["label_file"] = self.label_file
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Decision:
    """The policy's decision on one admission.

    ``action`` is what the gate reports and acts on. ``policy_action`` is what
    the policy decided; the two differ only in audit mode, where every
    decision is reported as allow. ``evaluation`` is the record section that
    explains the decision (tier, enforcement, requirements, deployment
    constraints, exceptions), and ``policy_findings`` are the facts the
    policy itself established (unmet requirements, denied formats, exceeded
    limits, custom rules).
    """

    action: Action
    reasons: tuple[Reason, ...]
    summary: str
    policy_action: Action | None = None
    mode: str = ENFORCE
    waived: tuple[tuple[Reason, str], ...] = ()
    evaluation: dict[str, Any] = field(default_factory=dict)
    policy_findings: tuple[Finding, ...] = ()

    @property
    def decided(self) -> Action:
        """Return the policy's own decision, before audit mode reports it as allow."""
        return self.action if self.policy_action is None else self.policy_action


@dataclass(frozen=True)
class Policy:
    """A validated policy document, the digest of its source bytes and its line numbers.

    ``document`` is the parsed YAML. ``lines`` maps document paths to the
    line in the source where each value starts, for messages and ``policy
    explain``. ``warnings`` lists what is legal but probably wrong, such as
    a rule id that no check emits.
    """

    name: str
    source: str
    sha256: str
    document: dict[str, Any]
    lines: Mapping[DocPath, int] = field(default_factory=dict, compare=False, repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return str(self.document.get("apiVersion", API_V1))

    @property
    def mode(self) -> str:
        return str(self.document.get("enforcement", ENFORCE))

    @property
    def default_tier(self) -> str:
        return str(self.document.get("defaultTier", DEFAULT_TIER))

    def line(self, path: DocPath) -> int | None:
        """Return the line of ``path`` in the source, or of its nearest enclosing entry."""
        current = tuple(path)
        while current:
            if current in self.lines:
                return self.lines[current]
            current = current[:-1]
        return None

    def stage(self, stage: str) -> dict[str, Any]:
        if stage not in STAGES:
            raise PolicyError(
                f"unknown stage {stage!r}",
                hint=f"use one of: {', '.join(STAGES)}",
            )
        section: dict[str, Any] = self.document["stages"][stage]
        return section
