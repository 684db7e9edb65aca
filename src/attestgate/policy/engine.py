"""Load a policy document and map findings to a decision."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from attestgate._jsonschema import jsonschema
from attestgate.errors import PolicyError
from attestgate.findings import CHECK_FAILED, Finding, Severity

STAGES = ("training", "fine-tuning", "deployment")
MAX_POLICY_BYTES = 1024 * 1024


class Action(enum.IntEnum):
    """What the policy does with an artifact, ordered from least to most strict."""

    ALLOW = 0
    QUARANTINE = 1
    BLOCK = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Reason:
    """One finding that moved the decision away from allow, and the policy line that did it."""

    rule: str
    severity: Severity
    file: str
    action: Action
    policy_path: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.label,
            "file": self.file,
            "action": self.action.label,
            "policy_path": self.policy_path,
            "message": self.message,
        }


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[Reason, ...]
    summary: str


@dataclass(frozen=True)
class Policy:
    """A validated policy document and the digest of its source bytes."""

    name: str
    source: str
    sha256: str
    document: dict[str, Any]

    def stage(self, stage: str) -> dict[str, Any]:
        if stage not in STAGES:
            raise PolicyError(
                f"unknown stage {stage!r}",
                hint=f"use one of: {', '.join(STAGES)}",
            )
        section: dict[str, Any] = self.document["stages"][stage]
        return section


def _schema() -> dict[str, Any]:
    text = resources.files("attestgate.schemas").joinpath("policy.v1.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _field_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) or "(top level)"


def parse_policy(data: bytes, source: str) -> Policy:
    """Parse and validate a policy document from its bytes."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"policy {source} is {len(data)} bytes, more than the {MAX_POLICY_BYTES} allowed"
        )
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PolicyError(
            f"policy {source} is not valid YAML: {exc}",
            hint="fix the syntax at the line and column shown",
        ) from exc
    if not isinstance(document, dict):
        raise PolicyError(f"policy {source} must be a YAML mapping at the top level")
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_field_path(e)}: {e.message}" for e in errors[:20]]
        raise PolicyError(
            f"policy {source} is invalid:\n" + "\n".join(lines),
            hint="`attestgate policy default` prints a valid policy to start from",
        )
    for stage in STAGES:
        rules = document["stages"][stage].get("rules", {})
        if rules.get(CHECK_FAILED) == "allow":
            raise PolicyError(
                f"policy {source}: stages.{stage}.rules.{CHECK_FAILED} is allow, "
                "which would let an artifact through when a check crashes",
                hint="map check.failed to quarantine or block",
            )
    name = str(document.get("metadata", {}).get("name", source))
    return Policy(name, source, hashlib.sha256(data).hexdigest(), document)


def load_policy(path: Path) -> Policy:
    """Load and validate the policy file at ``path``."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(
            f"policy file {path} could not be read: {exc.strerror or exc}",
            hint="check the --policy path",
        ) from exc
    return parse_policy(data, str(path))


def default_policy_bytes() -> bytes:
    return resources.files("attestgate.policy").joinpath("default.yaml").read_bytes()


def load_default_policy() -> Policy:
    return parse_policy(default_policy_bytes(), "builtin:default")


def evaluate(policy: Policy, stage: str, findings: list[Finding]) -> Decision:
    """Map every finding to an action and return the strictest, with its reasons."""
    section = policy.stage(stage)
    severities: dict[str, str] = section["severities"]
    rules: dict[str, str] = section.get("rules", {})
    reasons: list[Reason] = []
    action = Action.ALLOW
    for finding in findings:
        if finding.rule in rules:
            finding_action = Action[rules[finding.rule].upper()]
            path = f"stages.{stage}.rules[{finding.rule}]"
        else:
            finding_action = Action[severities[finding.severity.label].upper()]
            path = f"stages.{stage}.severities.{finding.severity.label}"
        if finding.rule == CHECK_FAILED:
            # Enforced here as well as on load: a failed check never allows.
            finding_action = max(finding_action, Action.QUARANTINE)
        if finding_action is Action.ALLOW:
            continue
        action = max(action, finding_action)
        reasons.append(
            Reason(
                finding.rule,
                finding.severity,
                finding.file,
                finding_action,
                path,
                finding.message,
            )
        )
    reasons.sort(key=lambda r: (-r.action, -r.severity, r.rule, r.file))
    if action is Action.ALLOW:
        summary = (
            f"no finding maps to quarantine or block under policy {policy.name} for stage {stage}"
        )
    else:
        worst = [r for r in reasons if r.action is action]
        rules_hit = sorted({r.rule for r in worst})
        summary = (
            f"{action.label}: {len(worst)} finding(s) map to {action.label} "
            f"under policy {policy.name} for stage {stage} ({', '.join(rules_hit[:5])}"
            f"{', ...' if len(rules_hit) > 5 else ''})"
        )
    return Decision(action, tuple(reasons), summary)
