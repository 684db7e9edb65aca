"""The state one corpus build shares between families: folder, keys, scenarios and cases."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attestgate.errors import AttestgateError
from attestgate.evaluation.scenario import Case, Scenario
from attestgate.stages import STAGES

if TYPE_CHECKING:
    from attestgate.evaluation.corpus.signing import CorpusKeys

logger = logging.getLogger(__name__)

ALLOW = "allow"
QUARANTINE = "quarantine"
BLOCK = "block"

# The deployment stage of the corpus policy requires signed provenance from a
# trusted key; training and fine-tuning do not.
UNSIGNED_CLEAN = {"training": ALLOW, "fine-tuning": ALLOW, "deployment": QUARANTINE}
UNSIGNED_NOTE = (
    "Clean content without evidence: training and fine-tuning allow it, and deployment "
    "quarantines it because the corpus policy requires signed SLSA provenance there."
)
SIGNED_NOTE = (
    "Clean content with SLSA provenance signed by the trusted producer key, bound to "
    "the artifact's digest: every stage allows it."
)


class CorpusBuildError(AttestgateError):
    """The corpus could not be generated."""


def every_stage(action: str) -> dict[str, str]:
    """Return the same expected action for every stage."""
    return dict.fromkeys(STAGES, action)


@dataclass
class Build:
    """One corpus being written: its folder, size mode, keys and manifest entries."""

    root: Path
    quick: bool
    keys: CorpusKeys
    progress: Callable[[str], None] | None = None
    scenarios: list[Scenario] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)

    def folder(self, *parts: str) -> Path:
        """Return (and create) the folder ``root/parts``."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        """Return ``path`` as a corpus path (relative, with forward slashes)."""
        return path.relative_to(self.root).as_posix()

    def report(self, message: str) -> None:
        logger.info("%s", message)
        if self.progress is not None:
            self.progress(message)

    def scenario(self, id: str, family: str, title: str, steps: Sequence[str]) -> Scenario:
        scenario = Scenario(id, family, title, tuple(steps))
        self.scenarios.append(scenario)
        return scenario

    def case(
        self,
        scenario: Scenario,
        id: str,
        artifact: Path,
        expected: Mapping[str, str],
        *,
        step: str | None = None,
        twin: str | None = None,
        evidence: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        notes: str = "",
    ) -> Case:
        """Add a case; it is hostile exactly when it names an attacker step."""
        if step is not None and step not in scenario.steps:
            raise CorpusBuildError(f"case {id!r} names step {step!r}, not one of {scenario.id}")
        env = dict(env or {})
        case = Case(
            id=id,
            scenario=scenario.id,
            family=scenario.family,
            artifact=self.relative(artifact),
            expected=dict(expected),
            hostile=step is not None,
            step=step,
            twin=twin,
            evidence=tuple(self.relative(path) for path in evidence),
            env=env,
            env_paths=tuple(sorted(env)),
            tags=tuple(tags),
            notes=notes,
        )
        self.cases.append(case)
        return case
