"""The settings that apply to one stage and tier, each with the document path it came from.

A stage's settings are the base; ``stages.<stage>.tiers.<tier>`` lays its
own over them. Maps (``severities``, ``rules``, ``outcomes``, ``require``,
``formats``, ``limits``) are overlaid key by key, ``signers`` is replaced
as a whole, and ``custom`` rules add to the stage's. A version 1 document
has no tiers, outcomes or other version 2 sections, so its settings apply
to every tier unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attestgate.policy import catalogue
from attestgate.policy.model import Action, DocPath

OUTCOME_KEYS = {
    "insufficientEvidence": catalogue.INSUFFICIENT_EVIDENCE,
    "checkError": catalogue.CHECK_ERROR,
    "dynamicSignal": catalogue.DYNAMIC_SIGNAL,
}
SEVERITY_OUTCOME = "severity"


@dataclass(frozen=True)
class Setting:
    """One policy value and where it is written."""

    value: Any
    path: DocPath


@dataclass
class Profile:
    """Every setting in force for one stage and tier."""

    stage: str
    tier: str
    severities: dict[str, Setting] = field(default_factory=dict)
    rules: dict[str, Setting] = field(default_factory=dict)
    outcomes: dict[str, Setting] = field(default_factory=dict)
    require: dict[str, Setting] = field(default_factory=dict)
    signers: Setting | None = None
    formats: dict[str, Setting] = field(default_factory=dict)
    limits: dict[str, Setting] = field(default_factory=dict)
    custom: list[Setting] = field(default_factory=list)

    def rule_action(self, rule: str) -> tuple[Action, DocPath] | None:
        """Return the rules-table action for ``rule``: an exact entry, else the longest prefix."""
        exact = self.rules.get(rule)
        if exact is not None:
            return Action.parse(exact.value), exact.path
        best: tuple[int, Setting] | None = None
        for pattern, setting in self.rules.items():
            longer = best is None or len(pattern) > best[0]
            if pattern.endswith(".*") and catalogue.rule_matches(pattern, rule) and longer:
                best = (len(pattern), setting)
        if best is None:
            return None
        return Action.parse(best[1].value), best[1].path

    def outcome(self, category: str) -> Setting | None:
        """Return the outcome set for ``category``, or None when it maps by severity."""
        for key, mapped in OUTCOME_KEYS.items():
            if mapped == category and key in self.outcomes:
                setting = self.outcomes[key]
                return None if setting.value == SEVERITY_OUTCOME else setting
        return None

    def severity_action(self, label: str) -> tuple[Action, DocPath]:
        setting = self.severities[label]
        return Action.parse(setting.value), setting.path


def _overlay(target: dict[str, Setting], section: Any, path: DocPath) -> None:
    if isinstance(section, dict):
        for key, value in section.items():
            target[str(key)] = Setting(value, (*path, str(key)))


def _apply(profile: Profile, section: dict[str, Any], path: DocPath) -> None:
    _overlay(profile.severities, section.get("severities"), (*path, "severities"))
    _overlay(profile.rules, section.get("rules"), (*path, "rules"))
    _overlay(profile.outcomes, section.get("outcomes"), (*path, "outcomes"))
    _overlay(profile.require, section.get("require"), (*path, "require"))
    _overlay(profile.formats, section.get("formats"), (*path, "formats"))
    _overlay(profile.limits, section.get("limits"), (*path, "limits"))
    if isinstance(section.get("signers"), dict):
        profile.signers = Setting(section["signers"], (*path, "signers"))
    for index, rule in enumerate(section.get("custom") or []):
        profile.custom.append(Setting(rule, (*path, "custom", index)))


def effective_profile(document: dict[str, Any], stage: str, tier: str) -> Profile:
    """Return the settings of ``stage`` with ``tier``'s overrides laid over them."""
    profile = Profile(stage, tier)
    section = document["stages"][stage]
    base: DocPath = ("stages", stage)
    _apply(profile, section, base)
    tiers = section.get("tiers")
    if isinstance(tiers, dict) and isinstance(tiers.get(tier), dict):
        _apply(profile, tiers[tier], (*base, "tiers", tier))
    return profile


def profile_sections(document: dict[str, Any]) -> list[tuple[DocPath, dict[str, Any]]]:
    """Return every stage and tier section with its path, for checks that look at each one."""
    out: list[tuple[DocPath, dict[str, Any]]] = []
    for stage, section in (document.get("stages") or {}).items():
        if not isinstance(section, dict):
            continue
        out.append((("stages", stage), section))
        for tier, overlay in (section.get("tiers") or {}).items():
            if isinstance(overlay, dict):
                out.append((("stages", stage, "tiers", tier), overlay))
    return out
