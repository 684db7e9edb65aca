"""Compare a new observation of a remote name with the earlier ones: namespace reuse.

A name is reused when an account or repository is deleted and someone else
registers the same name, then serves different content under it. Three
signals show it, in the order they are checked:

1. The hub reports a different owner or repository id for the name than an
   earlier admission recorded.
2. A tag, which should never move, resolves to a different commit or digest.
3. A branch's current history no longer contains a commit an earlier
   admission resolved it to, so the history was rewritten or replaced.
"""

from __future__ import annotations

from collections.abc import Callable

from attestgate.findings import Finding, Severity
from attestgate.intake.identity import intake_finding
from attestgate.intake.refstore import Observation

NAMESPACE_REUSE = "intake.namespace-reuse"
# Earlier branch commits checked against the current history, most recent first.
MAX_HISTORY_CHECKS = 5

HistoryContains = Callable[[str], bool | None]


def namespace_findings(
    current: Observation,
    earlier: list[Observation],
    uri: str,
    *,
    tag_severity: Severity = Severity.HIGH,
    history_contains: HistoryContains | None = None,
) -> list[Finding]:
    """Return the findings that ``current`` raises against ``earlier`` observations."""
    findings: list[Finding] = []
    owner_change = _owner_change(current, earlier)
    if owner_change is not None:
        findings.append(_owner_finding(current, owner_change, uri))
    if current.revision_kind == "tag":
        moved = [
            o for o in earlier if o.revision == current.revision and o.resolved != current.resolved
        ]
        if moved:
            findings.append(_tag_finding(current, moved[-1], uri, tag_severity))
    if current.revision_kind == "branch" and history_contains is not None:
        findings.extend(_history_findings(current, earlier, uri, history_contains))
    return findings


def _owner_change(current: Observation, earlier: list[Observation]) -> Observation | None:
    for observation in earlier:
        if current.owner_id and observation.owner_id and observation.owner_id != current.owner_id:
            return observation
        if (
            current.owner
            and observation.owner
            and observation.owner.lower() != current.owner.lower()
        ):
            return observation
    return None


def _owner_finding(current: Observation, before: Observation, uri: str) -> Finding:
    return intake_finding(
        NAMESPACE_REUSE,
        Severity.HIGH,
        uri,
        f"{current.name} now belongs to owner {current.owner or '?'} "
        f"(id {current.owner_id or '?'}), "
        f"but an admission on {before.observed_at} recorded owner {before.owner or '?'} "
        f"(id {before.owner_id or '?'}); the name was probably deleted and registered again "
        "by someone else",
        "Do not use this repository until its new owner is confirmed as the publisher you "
        "trust. Pin the commit you admitted before, or mirror that content internally.",
        previous=before.to_json(),
        current=current.to_json(),
    )


def _tag_finding(
    current: Observation, before: Observation, uri: str, severity: Severity
) -> Finding:
    return intake_finding(
        NAMESPACE_REUSE if severity >= Severity.HIGH else "intake.tag-moved",
        severity,
        uri,
        f"tag {current.revision} of {current.name} now resolves to {current.resolved}, but an "
        f"admission on {before.observed_at} recorded {before.resolved}; the tag was moved",
        f"Pin the reference to {before.resolved} if that is the content you reviewed, or "
        "confirm with the publisher why the tag moved before admitting the new target.",
        previous=before.to_json(),
        current=current.to_json(),
    )


def _history_findings(
    current: Observation, earlier: list[Observation], uri: str, contains: HistoryContains
) -> list[Finding]:
    previous: list[Observation] = []
    for observation in reversed(earlier):
        same_branch = observation.revision == current.revision
        if same_branch and observation.resolved != current.resolved and observation not in previous:
            previous.append(observation)
    findings: list[Finding] = []
    for observation in previous[:MAX_HISTORY_CHECKS]:
        answer = contains(observation.resolved)
        if answer is False:
            findings.append(
                intake_finding(
                    NAMESPACE_REUSE,
                    Severity.HIGH,
                    uri,
                    f"branch {current.revision} of {current.name} no longer contains commit "
                    f"{observation.resolved}, which an admission on {observation.observed_at} "
                    "resolved it to; the branch's history was rewritten or the repository "
                    "was replaced",
                    f"Pin the reference to {observation.resolved} if it still exists, and ask "
                    "the publisher why the history changed before admitting the new commit.",
                    previous=observation.to_json(),
                    current=current.to_json(),
                )
            )
            break
        if answer is None:
            findings.append(
                intake_finding(
                    "intake.history-unchecked",
                    Severity.LOW,
                    uri,
                    f"the gate could not confirm that branch {current.revision} of "
                    f"{current.name} still contains commit {observation.resolved}, because "
                    "its history is too long or the hub did not list it",
                    "Pin the reference to a commit hash so that the question does not arise.",
                )
            )
            break
    return findings
