"""The labelled scenario corpus: what each case is, what an attacker did, what the gate should do.

A corpus is a folder with a ``corpus.json`` manifest. A *scenario* is one
attack (or one clean baseline), described as a sequence of attacker steps.
Each step, and each clean artifact, is a *case*: one artifact to admit, with
the decision the gate should reach for every stage. The labels come from the
threat model of the scenario, never from running the gate.

All paths in the manifest are relative to the corpus folder, so a corpus can
be moved or archived as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attestgate.stages import STAGES

MANIFEST = "corpus.json"
MANIFEST_VERSION = 1

DEPENDENCY_CONFUSION = "dependency-confusion"
MALICIOUS_HUB = "malicious-hub"
BACKDOOR_PROVENANCE = "backdoor-provenance"
CLEAN_BASELINE = "clean-baseline"
FAMILIES = (DEPENDENCY_CONFUSION, MALICIOUS_HUB, BACKDOOR_PROVENANCE, CLEAN_BASELINE)

ACTIONS = ("allow", "quarantine", "block")


class CorpusError(ValueError):
    """A manifest that is missing, malformed or names files outside its corpus."""


@dataclass(frozen=True)
class Scenario:
    """One attack, or one group of clean artifacts, described as the attacker's steps."""

    id: str
    family: str
    title: str
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """One artifact to admit, with the decision expected at each stage.

    ``hostile`` cases realise one attacker step (``step``); clean ones have
    ``step`` ``None``. ``twin`` names the case that differs only in the
    hostile part. ``evidence``, ``trust_keys`` and ``policy`` are corpus
    paths passed to the admission. ``env`` contains environment variables for
    the dependency checks, whose values are corpus paths when
    ``env_paths`` lists their names. ``notes`` says what the label rests
    on, for instance what a correct signature can and cannot prove.
    """

    id: str
    scenario: str
    family: str
    artifact: str
    expected: Mapping[str, str]
    hostile: bool
    step: str | None = None
    twin: str | None = None
    evidence: tuple[str, ...] = ()
    trust_keys: tuple[str, ...] = ()
    policy: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    env_paths: tuple[str, ...] = ()
    tier: str | None = None
    dynamic: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    notes: str = ""

    def path(self, root: Path) -> Path:
        return inside(root, self.artifact)

    def environment(self, root: Path) -> dict[str, str]:
        """Return ``env`` with the values named in ``env_paths`` resolved against ``root``."""
        return {
            name: str(inside(root, value)) if name in self.env_paths else value
            for name, value in self.env.items()
        }


@dataclass
class Corpus:
    """A generated corpus: its folder, scenarios and cases."""

    root: Path
    scenarios: list[Scenario]
    cases: list[Case]
    generator: dict[str, Any] = field(default_factory=dict)

    def family(self, name: str) -> list[Case]:
        return [case for case in self.cases if case.family == name]

    def write(self) -> Path:
        """Write the manifest into the corpus folder and return its path."""
        validate(self.scenarios, self.cases)
        document = {
            "version": MANIFEST_VERSION,
            "generator": self.generator,
            "scenarios": [asdict(s) for s in self.scenarios],
            "cases": [_case_json(c) for c in self.cases],
        }
        target = self.root / MANIFEST
        target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return target


def _case_json(case: Case) -> dict[str, Any]:
    document = asdict(case)
    document["expected"] = dict(case.expected)
    document["env"] = dict(case.env)
    return document


class CorpusPathError(CorpusError):
    """A manifest path that is absolute, climbs out with ``..`` or resolves outside the corpus."""


def inside(root: Path, relative: str) -> Path:
    """Join a manifest path to ``root``, rejecting one that leaves the corpus.

    The path must be relative, without ``..``, and its real path (every
    symbolic link resolved) must lie inside the real path of ``root``. The
    joined path is returned unresolved, so that the gate admits a link
    itself where the corpus has one.
    """
    if not isinstance(relative, str):
        raise CorpusPathError(f"corpus path {relative!r} is not a string")
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise CorpusPathError(
            f"corpus path {relative!r} must be relative and stay inside the corpus {root}"
        )
    joined = root / candidate
    try:
        real_root = root.resolve()
        real = joined.resolve()
    except (OSError, RuntimeError) as exc:
        # Python 3.11 raises RuntimeError for a loop of symbolic links.
        raise CorpusPathError(f"corpus path {relative!r} cannot be resolved: {exc}") from None
    if not real.is_relative_to(real_root):
        raise CorpusPathError(
            f"corpus path {relative!r} resolves to {real}, outside the corpus {real_root}"
        )
    return joined


def manifest_paths(case: Case) -> list[tuple[str, str]]:
    """Return every corpus path the case names, as (field, path) pairs."""
    paths = [("artifact", case.artifact)]
    paths += [("evidence", item) for item in case.evidence]
    paths += [("trust_keys", item) for item in case.trust_keys]
    if case.policy is not None:
        paths.append(("policy", case.policy))
    paths += [(f"env.{name}", case.env[name]) for name in case.env_paths if name in case.env]
    return paths


def check_paths(root: Path, cases: Iterable[Case]) -> None:
    """Raise :class:`CorpusPathError` for the first case path that leaves ``root``."""
    for case in cases:
        for name, value in manifest_paths(case):
            try:
                inside(root, value)
            except CorpusPathError as exc:
                raise CorpusPathError(f"case {case.id!r}, {name}: {exc}") from None


def validate(scenarios: Iterable[Scenario], cases: Iterable[Case]) -> None:
    """Raise :class:`CorpusError` unless every label, family and reference is known."""
    by_id = {s.id: s for s in scenarios}
    seen: set[str] = set()
    cases = list(cases)
    ids = {c.id for c in cases}
    for case in cases:
        where = f"case {case.id!r}"
        if case.id in seen:
            raise CorpusError(f"{where} appears twice")
        seen.add(case.id)
        scenario = by_id.get(case.scenario)
        if scenario is None:
            raise CorpusError(f"{where} names unknown scenario {case.scenario!r}")
        if case.family != scenario.family or case.family not in FAMILIES:
            raise CorpusError(
                f"{where} has family {case.family!r} and its scenario {scenario.family!r}"
            )
        unknown = set(case.expected) - set(STAGES)
        if unknown or not case.expected:
            raise CorpusError(f"{where} labels stages {sorted(unknown)}; use {', '.join(STAGES)}")
        bad = {v for v in case.expected.values() if v not in ACTIONS}
        if bad:
            raise CorpusError(f"{where} expects {sorted(bad)}; use {', '.join(ACTIONS)}")
        if case.hostile and not case.step:
            raise CorpusError(f"{where} is hostile but names no attacker step")
        if case.twin is not None and case.twin not in ids:
            raise CorpusError(f"{where} names unknown twin {case.twin!r}")
        for name in case.env_paths:
            if name not in case.env:
                raise CorpusError(f"{where} lists {name!r} in env_paths but not in env")


def load(root: Path) -> Corpus:
    """Read and validate the manifest in ``root``.

    The returned corpus has the absolute, resolved ``root``. Every path a
    case names must lie inside it (:func:`check_paths`), so a manifest that
    points outside its corpus fails here, before anything is admitted.
    """
    path = root / MANIFEST
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path} does not exist; generate a corpus first") from None
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path} cannot be read: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise CorpusError(f"{path} is not a version {MANIFEST_VERSION} corpus manifest")
    try:
        scenarios = [
            Scenario(s["id"], s["family"], s["title"], tuple(s.get("steps", ())))
            for s in document["scenarios"]
        ]
        cases = [_case(item) for item in document["cases"]]
    except (KeyError, TypeError) as exc:
        raise CorpusError(f"{path} has a malformed entry: {exc!r}") from None
    validate(scenarios, cases)
    root = root.resolve()
    check_paths(root, cases)
    return Corpus(root, scenarios, cases, dict(document.get("generator") or {}))


def _case(item: Mapping[str, Any]) -> Case:
    return Case(
        id=item["id"],
        scenario=item["scenario"],
        family=item["family"],
        artifact=item["artifact"],
        expected=dict(item["expected"]),
        hostile=bool(item["hostile"]),
        step=item.get("step"),
        twin=item.get("twin"),
        evidence=tuple(item.get("evidence", ())),
        trust_keys=tuple(item.get("trust_keys", ())),
        policy=item.get("policy"),
        env=dict(item.get("env", {})),
        env_paths=tuple(item.get("env_paths", ())),
        tier=item.get("tier"),
        dynamic=tuple(item.get("dynamic", ())),
        tags=tuple(item.get("tags", ())),
        notes=item.get("notes", ""),
    )
