"""The rule catalogue covers every rule id the source tree can emit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attestgate.dynamic.interface import BUILTIN_KINDS, STANDARD_KINDS
from attestgate.evidence import mlbom, training
from attestgate.policy import catalogue
from attestgate.policy.requirements import RELEASE_CLAIMS, TRAINING_CLAIMS

SRC = Path(__file__).resolve().parents[2] / "src" / "attestgate"

# A quoted dotted id: the shape every rule id has.
LITERAL = re.compile(r"""["']([a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+)["']""")
# The first argument of a finding constructor, or a rule= keyword, whatever its prefix.
CONSTRUCTED = re.compile(
    r"""(?:\b(?:finding|Finding|_finding)\(\s*|\brule\s*=\s*)["']([a-z0-9][a-z0-9.-]*)["']"""
)
# Rule ids built from a prefix and a value: rule=f"secret.{kind}".
FAMILY = re.compile(r"""\brule\s*=\s*f["']([a-z0-9-]+\.)[^"']*\{""")

# Quoted dotted names under a check's prefix that are module or loader
# names, not rule ids.
NOT_RULES = {
    "gguf.constants",
    "numpy.core",
    "numpy.dtype",
    "numpy.ndarray",
    "pickle.load",
    "pickle.loads",
}


# The policy reads rule ids and the evaluation corpus writes module names
# into hostile fixtures; neither emits findings.
NOT_EMITTERS = {"policy", "evaluation"}


def _sources() -> list[tuple[Path, str]]:
    return [
        (path, path.read_text("utf-8"))
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] not in NOT_EMITTERS
    ]


def _prefixes() -> set[str]:
    return {rule.split(".", 1)[0] for rule in catalogue.ALL_RULES} | {"import", "secret"}


def test_literal_rule_ids_catalogued():
    prefixes = _prefixes()
    missing = set()
    for path, text in _sources():
        for match in LITERAL.finditer(text):
            rule = match.group(1)
            candidate = rule.split(".", 1)[0] in prefixes and rule not in NOT_RULES
            if candidate and not catalogue.is_known(rule):
                missing.add(f"{rule} ({path.relative_to(SRC)})")
    assert sorted(missing) == []


def test_constructed_rule_ids_catalogued():
    missing = set()
    for path, text in _sources():
        for match in CONSTRUCTED.finditer(text):
            rule = match.group(1)
            if "." in rule and not catalogue.is_known(rule):
                missing.add(f"{rule} ({path.relative_to(SRC)})")
    assert sorted(missing) == []


def test_rule_families_catalogued():
    families = set()
    for _, text in _sources():
        families.update(FAMILY.findall(text))
    # dynamic.<kind> is covered kind by kind below and by the x- family.
    families.discard("dynamic.")
    assert families
    for prefix in sorted(families):
        assert any(prefix.startswith(f) or f.startswith(prefix) for f in catalogue.FAMILIES), prefix


@pytest.mark.parametrize("kind", sorted({*STANDARD_KINDS, *BUILTIN_KINDS}))
def test_signal_kinds_catalogued(kind):
    assert f"dynamic.{kind}" in catalogue.ALL_RULES


def test_catalogue_ids_exist_in_source():
    text = "\n".join(t for _, t in _sources())
    dynamic_kinds = {f"dynamic.{k}" for k in (*STANDARD_KINDS, *BUILTIN_KINDS)}
    stale = [
        rule
        for rule in catalogue.ALL_RULES
        if not rule.startswith("policy.") and rule not in dynamic_kinds and f'"{rule}"' not in text
    ]
    assert stale == []


def test_catalogue_ids_well_formed():
    assert all(catalogue.RULE_ID.match(rule) for rule in catalogue.ALL_RULES)


def test_claim_lists_match_evidence():
    assert tuple(training.REQUIRED) == TRAINING_CLAIMS
    assert tuple(mlbom.REQUIRED) == RELEASE_CLAIMS


def test_categories():
    assert catalogue.category("check.failed") == catalogue.CHECK_ERROR
    assert catalogue.category("provenance.missing") == catalogue.INSUFFICIENT_EVIDENCE
    assert catalogue.category("dynamic.network.connect") == catalogue.DYNAMIC_SIGNAL
    assert catalogue.category("dynamic.timeout") == catalogue.CHECK_ERROR
    assert catalogue.category("pickle.unsafe-global") == catalogue.FINDING


def test_pattern_matching():
    assert catalogue.pattern_matches_known("pickle.*")
    assert catalogue.pattern_matches_known("import.trivy.*")
    assert not catalogue.pattern_matches_known("pikle.*")
    assert catalogue.rule_matches("deps.*", "deps.unpinned")
    assert not catalogue.rule_matches("deps.*", "depsx.unpinned")
