"""The dynamic stage of an admission: select plug-ins, run them within budget, import signal files.

Plug-ins run when the caller names them (``attestgate admit --dynamic
NAME``) or when the policy's ``dynamic`` section selects them for the
stage, criticality tier and formats at hand. Each runs on its own thread
with a wall-clock limit of its budget plus a grace period, so a plug-in
that hangs costs a ``dynamic.timeout`` finding instead of the admission.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestgate.dynamic.importers import import_signal_file
from attestgate.dynamic.interface import (
    CRASHED,
    INCOMPLETE,
    TIMEOUT,
    UNAVAILABLE,
    ArtifactFile,
    ArtifactInput,
    Budget,
    DynamicPlugin,
    KindSpec,
    PluginResult,
    Signal,
    evidence_finding,
    merge_signals,
    signals_to_findings,
)
from attestgate.dynamic.registry import PluginLoadError, load_plugin
from attestgate.errors import PolicyError
from attestgate.findings import Finding
from attestgate.record import ArtifactIdentity, CheckRun

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_SECONDS = 600.0
# Time a plug-in gets beyond its budget before the stage gives up on it.
GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class PluginSelection:
    """When a plug-in runs: for which stages, tiers and formats, and with what budget.

    A field left as None places no restriction. An admission without a tier
    matches every tier list, so that an unknown tier gets more evidence,
    not less.
    """

    name: str
    stages: frozenset[str] | None = None
    tiers: frozenset[str] | None = None
    formats: frozenset[str] | None = None
    budget_seconds: float | None = None

    def selects(self, stage: str, tier: str | None, formats: Iterable[str]) -> bool:
        if self.stages is not None and stage not in self.stages:
            return False
        if self.tiers is not None and tier is not None and tier not in self.tiers:
            return False
        return self.formats is None or bool(self.formats & set(formats))


def selections_from_policy(document: Mapping[str, Any]) -> list[PluginSelection]:
    """Read the policy's ``dynamic.plugins`` list.

    Each entry is a mapping with ``name`` and optional ``stages``, ``tiers``,
    ``formats`` (lists of strings) and ``budget_seconds`` (a positive number).
    Raises :class:`PolicyError` for an entry of another shape.
    """
    section = document.get("dynamic")
    if section is None:
        return []
    entries = section.get("plugins", []) if isinstance(section, Mapping) else None
    if not isinstance(entries, list):
        raise PolicyError(
            "policy field dynamic.plugins must be a list of plug-in entries",
            hint="see the dynamic evidence section of the policy documentation",
        )
    return [_selection(entry, index) for index, entry in enumerate(entries)]


def _selection(entry: Any, index: int) -> PluginSelection:
    where = f"dynamic.plugins[{index}]"
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise PolicyError(f"policy field {where} must be a mapping with a string name")
    lists: dict[str, frozenset[str] | None] = {}
    for key in ("stages", "tiers", "formats"):
        value = entry.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise PolicyError(f"policy field {where}.{key} must be a list of strings")
        lists[key] = frozenset(value) if value is not None else None
    budget = entry.get("budget_seconds")
    if budget is not None and (not isinstance(budget, int | float) or budget <= 0):
        raise PolicyError(f"policy field {where}.budget_seconds must be a positive number")
    return PluginSelection(
        entry["name"],
        lists["stages"],
        lists["tiers"],
        lists["formats"],
        float(budget) if budget is not None else None,
    )


@dataclass
class DynamicReport:
    """The dynamic stage's contribution to the decision record and to the findings."""

    plugins: list[dict[str, Any]] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    checks: list[CheckRun] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return bool(self.plugins)

    def to_json(self) -> dict[str, Any]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for signal in self.signals:
            grouped.setdefault(signal.kind, []).append(signal.to_json())
        return {"plugins": self.plugins, "signals": dict(sorted(grouped.items()))}


def artifact_input(identity: ArtifactIdentity) -> ArtifactInput:
    """Describe the identified artifact for plug-ins, leaving out files that could not be read."""
    root = Path(identity.path)
    files = tuple(
        ArtifactFile(
            path=report.path,
            location=root if identity.kind == "file" else root.joinpath(*report.path.split("/")),
            format=report.format,
            size=report.size,
            sha256=report.sha256,
        )
        for report in identity.files
        if report.complete
    )
    return ArtifactInput(root, identity.kind, identity.sha256, files)


def run_dynamic(
    identity: ArtifactIdentity,
    *,
    stage: str,
    plugins: Sequence[str] = (),
    signal_files: Sequence[Path] = (),
    policy_document: Mapping[str, Any] | None = None,
    tier: str | None = None,
    budget_seconds: float | None = None,
) -> DynamicReport:
    """Run the requested and policy-selected plug-ins and import the signal files.

    A plug-in named in ``plugins`` that no installed package registers raises
    :class:`~attestgate.errors.UsageError`; one the policy selects but that
    is missing becomes a ``dynamic.unavailable`` finding.
    """
    report = DynamicReport()
    artifact = artifact_input(identity)
    formats = {f.value for f in artifact.formats}
    selections: dict[str, tuple[PluginSelection, bool]] = {
        name: (PluginSelection(name, budget_seconds=budget_seconds), True) for name in plugins
    }
    for selection in selections_from_policy(policy_document or {}):
        if selection.name not in selections and selection.selects(stage, tier, formats):
            selections[selection.name] = (selection, False)

    kinds: dict[str, KindSpec] = {}
    collected: list[Signal] = []
    for selection, forced in selections.values():
        plugin = _load(selection.name, forced, artifact, report)
        if plugin is None:
            continue
        kinds.update(plugin.kinds)
        seconds = selection.budget_seconds or budget_seconds or DEFAULT_BUDGET_SECONDS
        collected.extend(_run_plugin(plugin, artifact, stage, tier, Budget(seconds), report))

    for path in signal_files:
        imported = import_signal_file(path, artifact.name)
        report.plugins.append(imported.entry)
        report.findings.extend(imported.findings)
        collected.extend(imported.signals)

    report.signals = merge_signals(collected)
    report.findings.extend(signals_to_findings(report.signals, kinds, artifact.name))
    return report


def _load(
    name: str, forced: bool, artifact: ArtifactInput, report: DynamicReport
) -> DynamicPlugin | None:
    try:
        return load_plugin(name)
    except PluginLoadError as exc:
        reason = exc.message
    except Exception as exc:
        if forced:
            raise
        reason = str(exc)
    report.plugins.append({"name": name, "version": "", "status": "unavailable", "reason": reason})
    report.findings.append(
        evidence_finding(
            UNAVAILABLE,
            name,
            artifact.name,
            f"the dynamic plug-in {name} is not available, so it gave no evidence: {reason}",
            f"Install the package that provides the dynamic plug-in {name}, or change the "
            "policy's dynamic section, and admit the artifact again.",
        )
    )
    return None


def _run_plugin(
    plugin: DynamicPlugin,
    artifact: ArtifactInput,
    stage: str,
    tier: str | None,
    budget: Budget,
    report: DynamicReport,
) -> list[Signal]:
    entry: dict[str, Any] = {"name": plugin.name, "version": plugin.version}
    report.plugins.append(entry)
    if not plugin.applies_to(artifact.formats, stage, tier):
        entry["status"] = "not-applicable"
        return []

    started = time.monotonic()
    result = _call(plugin, artifact, budget, report)
    seconds = time.monotonic() - started
    entry.update(status=result.status, seconds=round(seconds, 6), runs=result.runs)
    report.findings.extend(result.findings)
    files = len({run.get("file") for run in result.runs}) or 1
    report.checks.append(CheckRun(f"dynamic.{plugin.name}", plugin.version, files, seconds))

    signals = merge_signals(result.signals)
    if len(signals) > budget.max_signals:
        dropped = len(signals) - budget.max_signals
        entry["dropped_signals"] = dropped
        signals = signals[: budget.max_signals]
        report.findings.append(
            evidence_finding(
                INCOMPLETE,
                plugin.name,
                artifact.name,
                f"the dynamic plug-in {plugin.name} reported {dropped} more distinct signals "
                f"than the {budget.max_signals} the gate keeps, and those were dropped",
                "Have a reviewer inspect the artifact: a legitimate load does not produce that "
                "many distinct signals.",
            )
        )
    entry["signals"] = len(signals)
    return signals


def _call(
    plugin: DynamicPlugin, artifact: ArtifactInput, budget: Budget, report: DynamicReport
) -> PluginResult:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = plugin.run(artifact, budget)
        except Exception as exc:  # a plug-in's bug becomes a finding, never a crash
            logger.exception("dynamic plug-in %s failed", plugin.name)
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"attestgate-dynamic-{plugin.name}", daemon=True)
    thread.start()
    thread.join(budget.seconds + GRACE_SECONDS)
    if thread.is_alive():
        logger.error("dynamic plug-in %s did not return within its budget", plugin.name)
        report.findings.append(
            evidence_finding(
                TIMEOUT,
                plugin.name,
                artifact.name,
                f"the dynamic plug-in {plugin.name} did not return within its budget of "
                f"{budget.seconds:g} s, so its evidence is missing",
                "Have a reviewer inspect the artifact, and report the hang to the plug-in's "
                "maintainers.",
            )
        )
        return PluginResult(status="timeout")
    result = outcome.get("result")
    if isinstance(result, PluginResult):
        return result
    error = outcome.get("error")
    reason = (
        f"{type(error).__name__}: {error}"
        if error is not None
        else f"it returned {type(result).__name__}, not a PluginResult"
    )
    report.findings.append(
        evidence_finding(
            CRASHED,
            plugin.name,
            artifact.name,
            f"the dynamic plug-in {plugin.name} failed, so its evidence is missing: {reason}",
            "Have a reviewer inspect the artifact, and report the failure to the plug-in's "
            "maintainers.",
        )
    )
    return PluginResult(status="crashed")
