"""The rule catalogue: every rule id a check or the policy itself can emit.

A policy that maps a rule id found nowhere here gets a warning, since it most
likely names a rule that does not exist (a typo, or a rule from another
tool). ``tests/policy/test_catalogue.py`` scans the source tree for rule ids
and fails when one is missing here, so the catalogue follows the checks.

Each rule belongs to a category that the policy's ``outcomes`` can map as a
whole:

- ``insufficient-evidence``: evidence that is missing, unsigned or untrusted;
- ``check-error``: a check that failed to run; never maps to allow, and
  exceptions cannot waive it;
- ``dynamic-signal``: a behaviour that a dynamic plug-in or runtime monitor
  observed;
- ``finding``: everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FINDING = "finding"
INSUFFICIENT_EVIDENCE = "insufficient-evidence"
CHECK_ERROR = "check-error"
DYNAMIC_SIGNAL = "dynamic-signal"
CATEGORIES = (FINDING, INSUFFICIENT_EVIDENCE, CHECK_ERROR, DYNAMIC_SIGNAL)

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")

# Rules the policy itself reports.
REQUIRE_SIGNATURE = "policy.require.signature"
REQUIRE_TRAINING_CLAIM = "policy.require.training-claim"
REQUIRE_RELEASE_CLAIM = "policy.require.release-claim"
REQUIRE_SLSA_LEVEL = "policy.require.slsa-level"
REQUIRE_SLSA_BUILDER = "policy.require.slsa-builder"
FORMAT_DENIED = "policy.format-denied"
FORMAT_NOT_ALLOWED = "policy.format-not-allowed"
FORMAT_UNSIGNED = "policy.format-unsigned"
DEPLOYMENT_LIMIT = "policy.deployment-limit"
CUSTOM_RULE_ERROR = "policy.custom-rule-error"

# Rule ids by the check that emits them.
RULES: dict[str, tuple[str, ...]] = {
    "archive": (
        "archive.bomb",
        "archive.corrupt",
        "archive.encrypted",
        "archive.link",
        "archive.path-traversal",
        "archive.special-member",
        "archive.timeout",
        "archive.too-deep",
        "archive.too-many-members",
        "archive.trailing-data",
        "archive.truncated",
        "archive.unscanned",
        "archive.unsupported-compression",
    ),
    "binary": ("binary.java-class", "binary.native-executable"),
    "chat-template": (
        "chat-template.computed-attribute",
        "chat-template.dunder-access",
        "chat-template.gadget",
        "chat-template.include",
        "chat-template.limit-exceeded",
        "chat-template.obfuscated-name",
        "chat-template.private-attribute",
        "chat-template.unparseable",
    ),
    "check": ("check.failed",),
    "dataset": ("dataset.malformed",),
    "deps": (
        "deps.check-incomplete",
        "deps.config-invalid",
        "deps.direct-url",
        "deps.insecure-index",
        "deps.internal-name-public",
        "deps.known-malicious",
        "deps.known-vulnerable",
        "deps.malformed",
        "deps.missing-hash",
        "deps.multiple-indexes",
        "deps.native-in-pure-wheel",
        "deps.nested-requirements",
        "deps.pth-file",
        "deps.record-mismatch",
        "deps.too-large",
        "deps.trusted-host",
        "deps.typosquat",
        "deps.unpinned",
        "deps.vcs-requirement",
        "deps.vulnerability-unchecked",
        "deps.wheel-check-incomplete",
    ),
    "dynamic": (
        "dynamic.crashed",
        "dynamic.incomplete",
        "dynamic.timeout",
        "dynamic.unavailable",
        "dynamic.network.connect",
        "dynamic.dns.query",
        "dynamic.process.exec",
        "dynamic.file.write",
        "dynamic.file.read.sensitive",
        "dynamic.module.import",
        "dynamic.x-attestgate.code-exec",
        "dynamic.x-attestgate.native-code",
        "dynamic.x-attestgate.monitor-tamper",
        "dynamic.x-attestgate.tensor-mismatch",
        "dynamic.x-attestgate.pickle-global",
        "dynamic.x-attestgate.monitor-alert",
    ),
    "evidence": (
        "evidence.claim-contradicted",
        "evidence.digest-mismatch",
        "evidence.forged-provenance",
        "evidence.ignored-file",
        "evidence.invalid-signature",
        "evidence.limit-exceeded",
        "evidence.malformed",
        "evidence.missing-claim",
        "evidence.schema-invalid",
        "evidence.unknown-predicate",
        "evidence.unsigned",
        "evidence.unsigned-file",
        "evidence.untrusted-signer",
        "provenance.missing",
    ),
    "gguf": (
        "gguf.big-endian",
        "gguf.duplicate-key",
        "gguf.duplicate-tensor",
        "gguf.invalid-chat-template",
        "gguf.limit-exceeded",
        "gguf.malformed",
        "gguf.tensor-out-of-bounds",
        "gguf.tensor-overlap",
        "gguf.truncated",
        "gguf.unknown-tensor-type",
        "gguf.unsupported-version",
    ),
    "huggingface": (
        "hf.auto-map",
        "hf.auto-map-remote",
        "hf.config-unparsed",
        "hf.dangerous-call",
        "hf.embedded-code",
        "hf.invalid-chat-template",
        "hf.trust-remote-code",
    ),
    "identify": (
        "identify.directory-loop",
        "identify.empty",
        "identify.extension-mismatch",
        "identify.file-changed",
        "identify.special-file",
        "identify.symlink-dangling",
        "identify.symlink-directory",
        "identify.symlink-escape",
        "identify.too-deep",
        "identify.too-many-files",
        "identify.undecodable-name",
        "identify.unreadable",
        "identify.unscanned",
        "scan.timeout",
    ),
    "image": (
        "image.digest-mismatch",
        "image.empty",
        "image.limit-exceeded",
        "image.malformed",
        "image.malformed-layer",
        "image.malformed-whiteout",
        "image.missing-blob",
        "image.path-traversal",
        "image.trailing-data",
    ),
    "intake": (
        "intake.cache-link-escape",
        "intake.cache-unreadable",
        "intake.digest-mismatch",
        "intake.empty",
        "intake.history-unchecked",
        "intake.namespace-reuse",
        "intake.tag-moved",
        "intake.unpinned-revision",
        "intake.unpinned-tag",
    ),
    "keras": (
        "keras.config-too-deep",
        "keras.config-too-large",
        "keras.custom-module",
        "keras.dangerous-module",
        "keras.external-reference",
        "keras.external-vocabulary",
        "keras.h5-external-reference",
        "keras.h5-unreadable",
        "keras.invalid-config",
        "keras.lambda-function",
        "keras.lambda-layer",
        "keras.missing-config",
        "keras.scan-incomplete",
    ),
    "numpy": (
        "numpy.malformed-header",
        "numpy.object-array",
        "numpy.size-mismatch",
        "numpy.trailing-bytes",
        "numpy.unknown-dtype",
    ),
    "onnx": (
        "onnx.contrib-operator",
        "onnx.custom-operator",
        "onnx.external-data-escape",
        "onnx.external-data-invalid",
        "onnx.external-data-missing",
        "onnx.malformed",
        "onnx.scan-incomplete",
        "onnx.too-large-to-parse",
        "onnx.unknown-operator",
    ),
    "pickle": (
        "pickle.build-on-global",
        "pickle.extension-code",
        "pickle.limit-exceeded",
        "pickle.malformed",
        "pickle.trailing-data",
        "pickle.truncated",
        "pickle.unknown-global",
        "pickle.unknown-global-call",
        "pickle.unresolved-call",
        "pickle.unresolved-global",
        "pickle.unsafe-global",
    ),
    "policy": (
        REQUIRE_SIGNATURE,
        REQUIRE_TRAINING_CLAIM,
        REQUIRE_RELEASE_CLAIM,
        REQUIRE_SLSA_LEVEL,
        REQUIRE_SLSA_BUILDER,
        FORMAT_DENIED,
        FORMAT_NOT_ALLOWED,
        FORMAT_UNSIGNED,
        DEPLOYMENT_LIMIT,
        CUSTOM_RULE_ERROR,
    ),
    "safetensors": (
        "safetensors.gap",
        "safetensors.header-too-large",
        "safetensors.invalid-header",
        "safetensors.overlap",
        "safetensors.size-mismatch",
        "safetensors.too-many-tensors",
        "safetensors.trailing-bytes",
        "safetensors.truncated",
        "safetensors.unknown-dtype",
    ),
    "savedmodel": (
        "savedmodel.asset-path-escape",
        "savedmodel.custom-op",
        "savedmodel.filesystem-op",
        "savedmodel.malformed",
        "savedmodel.network-op",
        "savedmodel.python-op",
        "savedmodel.scan-incomplete",
        "savedmodel.too-large-to-parse",
    ),
    "secrets": ("secret.env-variable",),
    "zip": (
        "torchscript.embedded-code",
        "zip.appended",
        "zip.bomb",
        "zip.corrupt",
        "zip.duplicate-name",
        "zip.encrypted",
        "zip.header-mismatch",
        "zip.link",
        "zip.member-too-large",
        "zip.path-traversal",
        "zip.timeout",
        "zip.too-deep",
        "zip.too-many-members",
        "zip.unreadable",
        "zip.unsupported-compression",
    ),
}

# Prefixes under which rule ids are made from outside data: custom signal
# kinds of third-party plug-ins, rules of imported scanner reports, secret
# kinds, and the custom rules a policy defines.
FAMILIES: dict[str, str] = {
    "dynamic.x-": "custom signal kinds of dynamic plug-ins (dynamic.x-<vendor>.<name>)",
    "import.": "results of imported scanner reports (import.<tool>.<rule>)",
    "secret.": "secrets found in image layers (secret.<kind>)",
    "custom.": "custom rules defined in the policy itself",
}

_CATEGORY: dict[str, str] = {
    "provenance.missing": INSUFFICIENT_EVIDENCE,
    "evidence.missing-claim": INSUFFICIENT_EVIDENCE,
    "evidence.unsigned": INSUFFICIENT_EVIDENCE,
    "evidence.untrusted-signer": INSUFFICIENT_EVIDENCE,
    "dynamic.unavailable": INSUFFICIENT_EVIDENCE,
    "dynamic.incomplete": INSUFFICIENT_EVIDENCE,
    REQUIRE_SIGNATURE: INSUFFICIENT_EVIDENCE,
    REQUIRE_TRAINING_CLAIM: INSUFFICIENT_EVIDENCE,
    REQUIRE_RELEASE_CLAIM: INSUFFICIENT_EVIDENCE,
    REQUIRE_SLSA_LEVEL: INSUFFICIENT_EVIDENCE,
    REQUIRE_SLSA_BUILDER: INSUFFICIENT_EVIDENCE,
    FORMAT_UNSIGNED: INSUFFICIENT_EVIDENCE,
    "check.failed": CHECK_ERROR,
    "dynamic.crashed": CHECK_ERROR,
    "dynamic.timeout": CHECK_ERROR,
    CUSTOM_RULE_ERROR: CHECK_ERROR,
}

ALL_RULES: frozenset[str] = frozenset(rule for rules in RULES.values() for rule in rules)


@dataclass(frozen=True)
class RuleInfo:
    """The catalogue entry of one rule id: its check and category."""

    rule: str
    check: str
    category: str
    known: bool


def _check_of(rule: str) -> str:
    for check, rules in RULES.items():
        if rule in rules:
            return check
    return rule.split(".", 1)[0]


def category(rule: str) -> str:
    """Return the category of ``rule``; unknown rules are plain findings."""
    if rule in _CATEGORY:
        return _CATEGORY[rule]
    if rule.startswith("dynamic."):
        return DYNAMIC_SIGNAL
    return FINDING


def rules_in(wanted: str) -> list[str]:
    """Return the catalogued rule ids of category ``wanted``."""
    return sorted(rule for rule in ALL_RULES if category(rule) == wanted)


def is_known(rule: str) -> bool:
    """Return whether ``rule`` is in the catalogue or in one of its families."""
    return rule in ALL_RULES or any(rule.startswith(prefix) for prefix in FAMILIES)


def describe(rule: str) -> RuleInfo:
    return RuleInfo(rule, _check_of(rule), category(rule), is_known(rule))


def pattern_matches_known(pattern: str) -> bool:
    """Return whether a rule pattern (an id, or a prefix ending in ``.*``) matches any known id."""
    if not pattern.endswith(".*"):
        return is_known(pattern)
    prefix = pattern[:-1]
    if any(rule.startswith(prefix) for rule in ALL_RULES):
        return True
    return any(family.startswith(prefix) or prefix.startswith(family) for family in FAMILIES)


def rule_matches(pattern: str, rule: str) -> bool:
    """Return whether ``rule`` matches ``pattern``: equal, or under a ``prefix.*`` pattern."""
    if pattern.endswith(".*"):
        return rule.startswith(pattern[:-1])
    return pattern == rule
