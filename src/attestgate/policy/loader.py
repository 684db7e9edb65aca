"""Load and validate policy documents, naming the line and field of every problem.

Two versions load:

- ``attestgate/v2``: the current language, schema ``policy.v2.json``;
- ``attestgate/v1``: the first version (stages with ``severities`` and
  ``rules``), schema ``policy.v1.json``. Every version 1 document is also a
  version 2 document with the newer sections left out, and it is evaluated
  exactly as before. Changing its ``apiVersion`` line to ``attestgate/v2``
  is the whole migration, and makes the newer sections available.

Validation has three layers. YAML is checked for syntax, duplicate keys and
size. The document is validated against the JSON Schema of its version.
Then come the checks the schema cannot express: a check error mapped to
allow, regular expressions and CEL expressions that do not compile, and
trust material that cannot be read. Each problem is reported as
``SOURCE:LINE: FIELD: MESSAGE``. Rule ids that the rule
catalogue does not know are warnings, not errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from attestgate._jsonschema import jsonschema
from attestgate.errors import AttestgateError, PolicyError
from attestgate.policy import catalogue
from attestgate.policy.format_rules import expand
from attestgate.policy.model import API_V1, API_V2, DocPath, Policy, format_path
from attestgate.policy.profile import profile_sections
from attestgate.policy.yamlmarks import YamlLoadError, load_with_lines

logger = logging.getLogger(__name__)

MAX_POLICY_BYTES = 1024 * 1024
MAX_LISTED_ISSUES = 30
SCHEMAS = {API_V1: "policy.v1.json", API_V2: "policy.v2.json"}


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy document: its line (0 when unknown), field and message."""

    line: int
    field: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.field}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


class PolicyValidationError(PolicyError):
    """A policy document is invalid; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[PolicyIssue]) -> None:
        shown = [f"  {issue.render(source)}" for issue in issues[:MAX_LISTED_ISSUES]]
        if len(issues) > MAX_LISTED_ISSUES:
            shown.append(f"  ... and {len(issues) - MAX_LISTED_ISSUES} more")
        super().__init__(
            f"policy {source} is invalid:\n" + "\n".join(shown),
            hint="`attestgate policy default` prints a valid policy to start from; "
            "`attestgate policy check FILE` checks a policy without admitting anything",
        )
        self.source = source
        self.issues = issues


@cache
def schema(api_version: str) -> dict[str, Any]:
    name = SCHEMAS[api_version]
    text = resources.files("attestgate.schemas").joinpath(name).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(api_version: str) -> Any:
    return jsonschema.Draft202012Validator(schema(api_version))


def _line(lines: dict[DocPath, int], path: DocPath) -> int:
    current = tuple(path)
    while current:
        if current in lines:
            return lines[current]
        current = current[:-1]
    return lines.get((), 0)


def _deepest(error: Any) -> Any:
    # For oneOf/anyOf, the sub-error that got furthest is the most useful one to show.
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None and len(best.absolute_path) >= len(error.absolute_path):
            return best
    return error


def _schema_issues(document: dict[str, Any], lines: dict[DocPath, int]) -> list[PolicyIssue]:
    api_version = str(document.get("apiVersion", ""))
    issues: list[PolicyIssue] = []
    for raw in _validator(api_version).iter_errors(document):
        error = _deepest(raw)
        path: DocPath = tuple(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(str(k) for k in error.instance if str(k) not in allowed):
                child = (*path, key)
                issues.append(
                    PolicyIssue(
                        _line(lines, child),
                        format_path(child),
                        f"unknown field {key!r}; expected one of: {', '.join(sorted(allowed))}",
                    )
                )
            continue
        if error.validator == "propertyNames":
            child = (*path, str(error.instance))
            issues.append(PolicyIssue(_line(lines, child), format_path(child), message))
            continue
        issues.append(PolicyIssue(_line(lines, path), format_path(path), message))
    return sorted(set(issues), key=lambda i: (i.line, i.field))


def _check_error_rules(section: dict[str, Any], base: DocPath) -> list[tuple[DocPath, str]]:
    problems = []
    for pattern, action in (section.get("rules") or {}).items():
        if action != "allow":
            continue
        hits = [
            rule
            for rule in catalogue.rules_in(catalogue.CHECK_ERROR)
            if catalogue.rule_matches(str(pattern), rule)
        ]
        if hits:
            problems.append(
                (
                    (*base, "rules", str(pattern)),
                    f"maps {', '.join(sorted(hits))} to allow, which would let an artifact "
                    "through when a check fails to run; map it to quarantine or block",
                )
            )
    outcomes = section.get("outcomes") or {}
    if outcomes.get("checkError") == "allow":
        problems.append(
            (
                (*base, "outcomes", "checkError"),
                "is allow, which would let an artifact through when a check fails to run; "
                "use quarantine, block or severity",
            )
        )
    return problems


def _regexp_problem(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"regular expression {pattern!r} is invalid: {exc}"
    return ""


def _section_issues(
    section: dict[str, Any], base: DocPath
) -> tuple[list[tuple[DocPath, str]], list[tuple[DocPath, str]]]:
    """Return (errors, warnings) for one stage or tier section."""
    from attestgate.policy.cel_rules import check_expression

    errors = _check_error_rules(section, base)
    warnings: list[tuple[DocPath, str]] = []

    for pattern in section.get("rules") or {}:
        if not catalogue.pattern_matches_known(str(pattern)):
            warnings.append(
                (
                    (*base, "rules", str(pattern)),
                    f"rule {pattern} is not in the rule catalogue, so no check reports it; "
                    "check its spelling",
                )
            )

    signers = section.get("signers") or {}
    for index, identity in enumerate(signers.get("identities") or []):
        for key in ("subjectRegExp", "issuerRegExp"):
            problem = _regexp_problem(str(identity.get(key, ""))) if key in identity else ""
            if problem:
                errors.append(((*base, "signers", "identities", index, key), problem))

    slsa = (section.get("require") or {}).get("slsa") or {}
    for index, matcher in enumerate(slsa.get("builders") or []):
        if isinstance(matcher, dict):
            problem = _regexp_problem(str(matcher.get("regexp", "")))
            if problem:
                errors.append(((*base, "require", "slsa", "builders", index, "regexp"), problem))
    if slsa.get("level") == 3 and not slsa.get("builders"):
        errors.append(
            (
                (*base, "require", "slsa", "level"),
                "level 3 needs require.slsa.builders: a verifier cannot observe how hardened "
                "a build platform is, so the policy must name the builders it vouches for",
            )
        )

    formats = section.get("formats") or {}
    deny = expand(formats.get("deny") or [])
    for key in ("allow", "signed"):
        overlap = sorted(deny & expand(formats.get(key) or []))
        if overlap:
            errors.append(
                (
                    (*base, "formats", key),
                    f"lists {', '.join(overlap)}, which formats.deny also lists",
                )
            )

    seen_ids: set[str] = set()
    for index, rule in enumerate(section.get("custom") or []):
        where = (*base, "custom", index)
        rule_id = str(rule.get("id", ""))
        if rule_id in seen_ids:
            errors.append(((*where, "id"), f"custom rule id {rule_id} is used twice"))
        seen_ids.add(rule_id)
        error, warning = check_expression(str(rule.get("expression", "")))
        if error:
            errors.append(((*where, "expression"), error))
        if warning:
            warnings.append(((*where, "expression"), warning))
    return errors, warnings


def _trust_issues(document: dict[str, Any], source: str) -> list[tuple[DocPath, str]]:
    # Loading the trust material here reports an unreadable key with its line
    # instead of failing in the middle of an admission.
    from attestgate.evidence import TrustConfig

    base = _base_dir(source)
    sections: list[tuple[DocPath, Any]] = [(("trust",), document.get("trust"))]
    for path, section in profile_sections(document):
        sections.append(((*path, "signers"), section.get("signers")))
    problems = []
    for path, section in sections:
        if not isinstance(section, dict):
            continue
        try:
            TrustConfig.from_mapping(section, base)
        except AttestgateError as exc:
            problems.append((path, exc.message))
    return problems


def _base_dir(source: str) -> Path:
    return Path.cwd() if source.startswith("builtin:") else Path(source).parent


def _semantic_issues(
    document: dict[str, Any], lines: dict[DocPath, int], source: str
) -> tuple[list[PolicyIssue], list[PolicyIssue]]:
    errors: list[tuple[DocPath, str]] = []
    warnings: list[tuple[DocPath, str]] = []
    for path, section in profile_sections(document):
        found_errors, found_warnings = _section_issues(section, path)
        errors.extend(found_errors)
        warnings.extend(found_warnings)
    two = (document.get("exceptions") or {}).get("twoApprovers") or {}
    for index, pattern in enumerate(two.get("rules") or []):
        if not catalogue.pattern_matches_known(str(pattern)):
            where = ("exceptions", "twoApprovers", "rules", index)
            warnings.append((where, f"rule {pattern} is not in the rule catalogue"))
    # A signers section with a bad regular expression is already reported
    # field by field; loading its trust material would report it again.
    for path, message in _trust_issues(document, source):
        if not any(found[: len(path)] == path for found, _ in errors):
            errors.append((path, message))

    def issues(items: list[tuple[DocPath, str]]) -> list[PolicyIssue]:
        unique = {(p, m) for p, m in items}
        return sorted(
            (PolicyIssue(_line(lines, p), format_path(p), m) for p, m in unique),
            key=lambda i: (i.line, i.field),
        )

    return issues(errors), issues(warnings)


def parse_policy(data: bytes, source: str) -> Policy:
    """Parse and validate a policy document from its bytes.

    Raises :class:`PolicyValidationError` (a :class:`PolicyError`) listing
    every problem with its line and field.
    """
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"policy {source} is {len(data)} bytes, more than the {MAX_POLICY_BYTES} allowed"
        )
    try:
        document, lines = load_with_lines(data)
    except YamlLoadError as exc:
        message = f"not valid YAML: {exc.problem.message}"
        raise PolicyValidationError(
            source, [PolicyIssue(exc.problem.line, "(document)", message)]
        ) from exc
    if not isinstance(document, dict):
        raise PolicyError(f"policy {source} must be a YAML mapping at the top level")

    api_version = document.get("apiVersion")
    if api_version not in SCHEMAS:
        issue = PolicyIssue(
            _line(lines, ("apiVersion",)),
            "apiVersion",
            f"{api_version!r} is not a supported version; use {API_V2} ({API_V1} still loads)",
        )
        raise PolicyValidationError(source, [issue])
    issues = _schema_issues(document, lines)
    if issues:
        raise PolicyValidationError(source, issues)
    errors, warnings = _semantic_issues(document, lines, source)
    if errors:
        raise PolicyValidationError(source, errors)

    rendered = tuple(w.render(source) for w in warnings)
    for warning in rendered:
        logger.warning("policy warning: %s", warning)
    name = str((document.get("metadata") or {}).get("name", source))
    return Policy(name, source, hashlib.sha256(data).hexdigest(), document, lines, rendered)


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
