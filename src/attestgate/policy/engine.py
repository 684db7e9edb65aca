"""Evaluate a policy: map findings and evidence to one decision, with every reason."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from attestgate.errors import PolicyError
from attestgate.findings import Finding, Severity
from attestgate.policy import catalogue
from attestgate.policy.deployment import check_deployment
from attestgate.policy.facts import PolicyFact, policy_finding, summarize_evidence
from attestgate.policy.format_rules import check_formats
from attestgate.policy.loader import (
    MAX_POLICY_BYTES,
    default_policy_bytes,
    load_default_policy,
    load_policy,
    parse_policy,
)
from attestgate.policy.model import (
    AUDIT,
    BY_CUSTOM,
    BY_OUTCOME,
    BY_RULE,
    BY_SEVERITY,
    TIERS,
    Action,
    Decision,
    DocPath,
    Policy,
    Reason,
    TierChoice,
    format_path,
)
from attestgate.policy.profile import Profile, effective_profile
from attestgate.policy.requirements import check_requirements
from attestgate.stages import STAGES

if TYPE_CHECKING:
    from attestgate.policy.exceptions import PolicyException

__all__ = [
    "MAX_POLICY_BYTES",
    "STAGES",
    "Action",
    "Decision",
    "Policy",
    "Reason",
    "default_policy_bytes",
    "evaluate",
    "load_default_policy",
    "load_policy",
    "parse_policy",
]

logger = logging.getLogger(__name__)


def _reason(
    policy: Policy,
    finding: Finding,
    action: Action,
    path: DocPath,
    source: str,
) -> Reason:
    return Reason(
        finding.rule,
        finding.severity,
        finding.file,
        action,
        format_path(path),
        finding.message,
        source,
        policy.line(path),
        finding.remediation,
    )


def map_finding(policy: Policy, profile: Profile, finding: Finding) -> Reason | None:
    """Map one finding: the rules table, then its category's outcome, then its severity.

    A check-error rule never maps below quarantine, whatever the policy
    maps it to, so a check that failed to run never lets an artifact through.
    Returns None when the finding maps to allow.
    """
    category = catalogue.category(finding.rule)
    ruled = profile.rule_action(finding.rule)
    if ruled is not None:
        action, path = ruled
        source = BY_RULE
    else:
        outcome = profile.outcome(category)
        info_signal = category == catalogue.DYNAMIC_SIGNAL and finding.severity is Severity.INFO
        if outcome is not None and not info_signal:
            action, path, source = Action.parse(outcome.value), outcome.path, BY_OUTCOME
        else:
            action, path = profile.severity_action(finding.severity.label)
            source = BY_SEVERITY
    if category == catalogue.CHECK_ERROR:
        action = max(action, Action.QUARANTINE)
    if action is Action.ALLOW:
        return None
    return _reason(policy, finding, action, path, source)


def _map_fact(policy: Policy, profile: Profile, fact: PolicyFact) -> Reason | None:
    if fact.action is None:
        mapped = map_finding(policy, profile, fact.finding)
        if mapped is None:
            return None
        return replace(
            mapped,
            policy_path=format_path(fact.path),
            source=fact.source,
            line=policy.line(fact.path),
            mapped_by=mapped.policy_path,
        )
    action = Action.parse(fact.action)
    if action is Action.ALLOW:
        return None
    return _reason(policy, fact.finding, action, fact.path, fact.source)


def _tier_choice(policy: Policy, tier: TierChoice | str | None) -> TierChoice:
    if isinstance(tier, TierChoice):
        choice = tier
    elif tier is not None:
        choice = TierChoice(tier, "option")
    else:
        choice = TierChoice(policy.default_tier, "policy")
    if choice.name not in TIERS:
        raise PolicyError(f"unknown tier {choice.name!r}", hint=f"use one of: {', '.join(TIERS)}")
    return choice


def _custom_facts(
    profile: Profile, inputs: Mapping[str, Any], where: str
) -> tuple[list[PolicyFact], list[dict[str, Any]]]:
    from attestgate.policy.cel_rules import CelRuleError, compile_expression, evaluate_expression

    facts: list[PolicyFact] = []
    results: list[dict[str, Any]] = []
    for setting in profile.custom:
        rule = setting.value
        rule_id = str(rule["id"])
        try:
            fired = evaluate_expression(compile_expression(str(rule["expression"])), inputs)
        except CelRuleError as exc:
            logger.warning("custom rule %s failed: %s", rule_id, exc)
            results.append({"id": rule_id, "result": "error", "error": str(exc)})
            finding = policy_finding(
                catalogue.CUSTOM_RULE_ERROR,
                Severity.HIGH,
                where,
                f"custom rule {rule_id} could not be evaluated: {exc}",
                "Fix the rule's expression in the policy (guard optional fields with has(), and "
                "check values for null), then admit the artifact again.",
                custom_rule=rule_id,
            )
            facts.append(PolicyFact(finding, (*setting.path, "expression"), BY_CUSTOM))
            continue
        results.append({"id": rule_id, "result": fired})
        if not fired:
            continue
        message = str(rule.get("message") or f"custom rule {rule_id} matched: {rule['expression']}")
        remediation = str(
            rule.get("remediation")
            or "Ask the policy owners what this custom rule guards against and how to meet it."
        )
        severity = Severity.parse(str(rule.get("severity", "medium")))
        finding = policy_finding(rule_id, severity, where, message, remediation)
        facts.append(PolicyFact(finding, setting.path, BY_CUSTOM, str(rule["action"])))
    return facts, results


def _summary(
    policy: Policy,
    stage: str,
    tier: str,
    decided: Action,
    reasons: Sequence[Reason],
    waived: int,
    mode: str,
) -> str:
    scope = f"under policy {policy.name} for stage {stage} (tier {tier})"
    if decided is Action.ALLOW:
        text = f"no finding maps to quarantine or block {scope}"
    else:
        worst = [r for r in reasons if r.action is decided]
        rules_hit = sorted({r.rule for r in worst})
        more = ", ..." if len(rules_hit) > 5 else ""
        text = (
            f"{decided.label}: {len(worst)} finding(s) map to {decided.label} {scope} "
            f"({', '.join(rules_hit[:5])}{more})"
        )
    if waived:
        text += f"; {waived} reason(s) waived by exceptions"
    if mode == AUDIT and decided is not Action.ALLOW:
        text = f"audit mode, reported as allow; the policy decided {text}"
    return text


def evaluate(
    policy: Policy,
    stage: str,
    findings: Sequence[Finding],
    *,
    tier: TierChoice | str | None = None,
    evidence: Mapping[str, Any] | None = None,
    artifact: Mapping[str, Any] | None = None,
    exceptions: Sequence[PolicyException] = (),
    now: datetime | None = None,
) -> Decision:
    """Decide one admission.

    1. Take the settings of ``stage`` with ``tier``'s overrides.
    2. Map every finding through the rules table, the outcomes and the severities.
    3. Check the evidence requirements, the formats and the deployment limits
       against the record's ``evidence`` and ``artifact`` sections.
    4. Run the custom rules.
    5. Waive the reasons that the artifact's active exceptions cover.
    6. Take the strictest remaining action; audit mode reports it as allow.
    """
    if stage not in STAGES:
        raise PolicyError(f"unknown stage {stage!r}", hint=f"use one of: {', '.join(STAGES)}")
    choice = _tier_choice(policy, tier)
    profile = effective_profile(policy.document, stage, choice.name)
    path = str((artifact or {}).get("path", "")) or "artifact"
    where = PurePath(path).name or path
    digest = str(((artifact or {}).get("digest") or {}).get("sha256", ""))

    reasons = [r for f in findings if (r := map_finding(policy, profile, f)) is not None]

    slsa = profile.require.get("slsa")
    builders = (slsa.value or {}).get("builders", []) if slsa is not None else []
    summary = summarize_evidence(evidence, builders)
    facts = check_requirements(profile, summary, where, digest)
    facts.extend(check_formats(profile, artifact, summary.signed))
    deployment = check_deployment(profile, evidence, where)
    facts.extend(deployment.facts)
    custom_results: list[dict[str, Any]] = []
    if profile.custom:
        from attestgate.policy.cel_rules import build_inputs

        inputs = build_inputs(
            stage=stage,
            tier=choice.name,
            artifact=artifact,
            labels=choice.labels,
            summary=summary.to_json(),
            evidence=evidence,
            findings=findings,
            deployment=deployment.declared.to_json() if deployment.declared else None,
        )
        custom, custom_results = _custom_facts(profile, inputs, where)
        facts.extend(custom)
    reasons.extend(r for fact in facts if (r := _map_fact(policy, profile, fact)) is not None)

    # Imported here: the exception store pulls in SQLAlchemy, which
    # `attestgate policy check` and other light commands do not need.
    from attestgate.policy.exceptions import apply_exceptions

    moment = now or datetime.now(UTC)
    outcome = apply_exceptions(reasons, exceptions, policy.document.get("exceptions") or {}, moment)
    effective = sorted(outcome.effective, key=lambda r: (-r.action, -r.severity, r.rule, r.file))
    decided = max((r.action for r in effective), default=Action.ALLOW)
    mode = policy.mode
    reported = Action.ALLOW if mode == AUDIT else decided
    waived_rules = outcome.waived_rules

    evaluation: dict[str, Any] = {
        "api_version": policy.api_version,
        "tier": choice.to_json(),
        "enforcement": {"mode": mode, "decision": decided.label, "reported": reported.label},
        "evidence": summary.to_json(),
        "requirements": {key: s.value for key, s in profile.require.items()},
        "deployment": deployment.to_json(waived=catalogue.DEPLOYMENT_LIMIT in waived_rules),
        "exceptions": {
            **outcome.report,
            "waived": [{**r.to_json(), "exception": eid} for r, eid in outcome.waived],
        },
    }
    if custom_results:
        evaluation["custom"] = custom_results
    return Decision(
        action=reported,
        reasons=tuple(effective),
        summary=_summary(policy, stage, choice.name, decided, effective, len(outcome.waived), mode),
        policy_action=decided,
        mode=mode,
        waived=tuple(outcome.waived),
        evaluation=evaluation,
        policy_findings=tuple(fact.finding for fact in facts),
    )


def annotate_record(record: dict[str, Any], decision: Decision) -> None:
    """Add the policy's evaluation to a decision record and mark the waived findings."""
    if decision.evaluation:
        record["evaluation"] = decision.evaluation
    waived = {reason.rule: exception_id for reason, exception_id in decision.waived}
    for finding in record.get("findings", []):
        exception_id = waived.get(finding.get("rule", ""))
        if exception_id:
            finding["waived"] = {"exception": exception_id}
