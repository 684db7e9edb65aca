"""Metrics over the case results: coverage, decisions against labels, remediation, latency.

Every function takes the :class:`~attestgate.evaluation.runner.CaseResult`
list of one run and returns JSON-ready data. An ``error`` result (an
admission that raised) never counts as an allow: it is a false positive on
a clean case, a wrong decision against every label and no coverage.
:func:`failures` lists those admissions. A share whose denominator is zero
is ``None``, so that "nothing to count" never reads as 0 %.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attestgate.evaluation.runner import ERROR, CaseResult
from attestgate.evaluation.scenario import ACTIONS, CLEAN_BASELINE, FAMILIES, MALICIOUS_HUB
from attestgate.stages import STAGES

ACTUALS = (*ACTIONS, ERROR)

# Pipeline steps whose record timings the latency table reports, in order.
LATENCY_STEPS = ("intake", "identify", "scan", "evidence", "dynamic", "policy", "record")

# Upper bounds (exclusive) of the artifact size buckets, in bytes.
KIB = 1024
MIB = 1024 * KIB
SIZE_BUCKETS = (
    ("< 64 KiB", 64 * KIB),
    ("64 KiB to 1 MiB", MIB),
    ("1 to 16 MiB", 16 * MIB),
    ("16 to 256 MiB", 256 * MIB),
    (">= 256 MiB", math.inf),
)

# The stage at which "detected" is judged when comparing with other scanners.
# The corpus policy requires no provenance in training, so the decision there
# rests on the artifact's content alone, which is all the other scanners see.
PEER_STAGE = "training"

# Decisions named per non-actionable remediation text; the rest are counted.
EXAMPLE_CASES = 5


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _failed(result: CaseResult) -> bool:
    return any(stage.action == ERROR for stage in result.stages.values())


def coverage(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Return the share of hostile cases at which a policy reason fired at any stage.

    Each hostile case realises one attacker step. A step whose admission
    failed at some stage has ``error`` true in ``missed``, and ``errors``
    counts those steps. ``twin_specific`` is over the *paired* steps, the
    hostile cases with a clean twin. It counts a step only when a reason
    fired that its twin did not trigger at the same stage, so reasons that
    every artifact gets (such as missing provenance) do not count as
    detecting the attack. ``unpaired`` counts the steps without a twin and
    ``unpaired_cases`` names them.
    """
    hostile = [r for r in results if r.case.hostile]
    fired = [r for r in hostile if _fired(r)]
    families: dict[str, float | None] = {}
    counts: dict[str, dict[str, int]] = {}
    for family in FAMILIES:
        members = [r for r in hostile if r.case.family == family]
        if not members:
            continue
        hits = sum(1 for r in members if _fired(r))
        families[family] = _share(hits, len(members))
        counts[family] = {"steps": len(members), "fired": hits}
    twins = _clean_twins(results)
    paired = [r for r in hostile if r.case.id in twins]
    specific = [r for r in paired if _fired_beyond(r, twins[r.case.id])]
    return {
        "overall": _share(len(fired), len(hostile)),
        "families": families,
        "family_counts": counts,
        "steps": len(hostile),
        "fired": len(fired),
        "missed": [
            {"case": r.case.id, "family": r.case.family, "step": r.case.step, "error": _failed(r)}
            for r in hostile
            if not _fired(r)
        ],
        "errors": sum(1 for r in hostile if _failed(r)),
        "twin_specific": {
            "overall": _share(len(specific), len(paired)),
            "steps": len(paired),
            "fired": len(specific),
            "unpaired": len(hostile) - len(paired),
            "unpaired_cases": [r.case.id for r in hostile if r.case.id not in twins],
        },
    }


def _fired(result: CaseResult) -> bool:
    return any(stage.reasons for stage in result.stages.values())


def _clean_twins(results: Sequence[CaseResult]) -> dict[str, CaseResult]:
    """Map each hostile case id to its clean twin, whichever side names the other."""
    by_id = {r.case.id: r for r in results}
    twins: dict[str, CaseResult] = {}
    for result in results:
        other = by_id.get(result.case.twin or "")
        if other is None or result.case.hostile == other.case.hostile:
            continue
        hostile, clean = (result, other) if result.case.hostile else (other, result)
        twins.setdefault(hostile.case.id, clean)
    return twins


def _fired_beyond(hostile: CaseResult, clean: CaseResult) -> bool:
    # At a stage the twin was not admitted for, its reasons at any stage count.
    anywhere = {rule for result in clean.stages.values() for rule in result.reason_rules}
    for stage, result in hostile.stages.items():
        twin = clean.stages.get(stage)
        baseline = set(twin.reason_rules) if twin is not None else anywhere
        if set(result.reason_rules) - baseline:
            return True
    return False


def confusion(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Return the expected-by-actual counts per stage, accuracy and lenient decisions.

    A decision is *lenient* when it is less strict than its label (an allow
    where a quarantine was expected, say) and *strict* when it is stricter.
    An ``error`` is neither: it is counted apart.
    """
    table = {
        stage: {expected: dict.fromkeys(ACTUALS, 0) for expected in ACTIONS} for stage in STAGES
    }
    correct_by_stage = dict.fromkeys(STAGES, 0)
    total_by_stage = dict.fromkeys(STAGES, 0)
    by_family: dict[str, list[int]] = {}
    lenient: list[dict[str, str]] = []
    strict = errors = 0
    for result in results:
        for stage, outcome in result.stages.items():
            expected = result.case.expected[stage]
            actual = outcome.action
            table[stage][expected][actual] = table[stage][expected].get(actual, 0) + 1
            total_by_stage[stage] += 1
            hit = int(actual == expected)
            correct_by_stage[stage] += hit
            family = by_family.setdefault(result.case.family, [0, 0])
            family[0] += hit
            family[1] += 1
            if actual == ERROR:
                errors += 1
            elif ACTIONS.index(actual) < ACTIONS.index(expected):
                lenient.append(
                    {"case": result.case.id, "stage": stage, "expected": expected, "actual": actual}
                )
            elif ACTIONS.index(actual) > ACTIONS.index(expected):
                strict += 1
    correct = sum(correct_by_stage.values())
    total = sum(total_by_stage.values())
    return {
        "table": {stage: rows for stage, rows in table.items() if total_by_stage[stage]},
        "accuracy": _share(correct, total),
        "correct": correct,
        "decisions": total,
        "accuracy_by_stage": {
            stage: _share(correct_by_stage[stage], total_by_stage[stage])
            for stage in STAGES
            if total_by_stage[stage]
        },
        "accuracy_by_family": {
            family: _share(hits, count) for family, (hits, count) in sorted(by_family.items())
        },
        "lenient": lenient,
        "strict": strict,
        "errors": errors,
    }


def false_positives(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Return the clean cases that were not allowed at a stage whose label is allow.

    Clean cases are the clean baseline and the clean twins of attacks, that
    is every case that is not hostile. ``total`` counts the clean cases with
    at least one allow label, and ``decisions`` the same at the level of
    single (case, stage) admissions. Admissions of clean cases labelled
    quarantine or block are left out, because the label expects the gate to
    stop them. ``excluded`` counts them per label and stage. ``errors``
    counts the listed cases with a failed admission at an allow-labelled stage.
    """
    listed: list[dict[str, Any]] = []
    total = pairs = wrong_pairs = 0
    excluded: dict[str, dict[str, int]] = {}
    for result in results:
        if result.case.hostile:
            continue
        for stage_name in result.stages:
            label = result.case.expected[stage_name]
            if label != "allow":
                by_stage = excluded.setdefault(label, {})
                by_stage[stage_name] = by_stage.get(stage_name, 0) + 1
        allow_stages = [s for s in result.stages if result.case.expected[s] == "allow"]
        if not allow_stages:
            continue
        total += 1
        pairs += len(allow_stages)
        wrong = {s: result.stages[s] for s in allow_stages if result.stages[s].action != "allow"}
        wrong_pairs += len(wrong)
        if wrong:
            listed.append(
                {
                    "case": result.case.id,
                    "family": result.case.family,
                    "kind": "baseline" if result.case.family == CLEAN_BASELINE else "twin",
                    "tags": list(result.case.tags),
                    "stages": {s: r.action for s, r in wrong.items()},
                    "reasons": sorted({rule for r in wrong.values() for rule in r.reason_rules}),
                    "errors": {s: r.error for s, r in wrong.items() if r.error},
                }
            )
    return {
        "count": len(listed),
        "total": total,
        "rate": _share(len(listed), total),
        "decisions": {"count": wrong_pairs, "total": pairs, "rate": _share(wrong_pairs, pairs)},
        "errors": sum(1 for item in listed if item["errors"]),
        "excluded": {
            label: {stage: by_stage[stage] for stage in STAGES if stage in by_stage}
            for label, by_stage in sorted(excluded.items())
        },
        "cases": listed,
    }


def labels(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Return how the labels split between hostile and clean admissions.

    Labels come from each scenario's threat model: a hostile case that no
    check can tell apart from a clean one (a backdoor built and signed by
    the trusted pipeline, say) is labelled allow, and allowing it counts as
    correct. ``hostile_allow`` lists those admissions and what the gate did.
    """
    counts = {kind: dict.fromkeys(ACTIONS, 0) for kind in ("hostile", "clean")}
    hostile_allow: list[dict[str, str]] = []
    for result in results:
        kind = "hostile" if result.case.hostile else "clean"
        for stage, outcome in result.stages.items():
            label = result.case.expected[stage]
            counts[kind][label] += 1
            if result.case.hostile and label == "allow":
                hostile_allow.append(
                    {"case": result.case.id, "stage": stage, "actual": outcome.action}
                )
    return {
        "admissions": counts,
        "hostile_allow": hostile_allow,
        "hostile_allow_cases": sorted({item["case"] for item in hostile_allow}),
    }


def failures(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Return every admission that failed (an ``error`` result) with its error text."""
    listed = [
        {
            "case": result.case.id,
            "family": result.case.family,
            "hostile": result.case.hostile,
            "stage": stage,
            "error": outcome.error or "",
        }
        for result in results
        for stage, outcome in result.stages.items()
        if outcome.action == ERROR
    ]
    return {
        "count": len(listed),
        "admissions": sum(len(result.stages) for result in results),
        "cases": len({item["case"] for item in listed}),
        "failed": listed,
    }


@dataclass(frozen=True)
class Actionability:
    """The remediation classifier's verdict: whether, and by which kind of change."""

    actionable: bool
    kind: str


@dataclass(frozen=True)
class _ChangeKind:
    name: str
    text: re.Pattern[str]
    # Rule id prefixes whose findings call for this kind of change; for them
    # naming the object of the change is enough, without an imperative verb.
    rules: tuple[str, ...]
    objects: re.Pattern[str]


_FORMATS = r"safetensors|gguf|onnx|\.keras|keras v3|\.npy|\.npz|parquet|json lines|arrow"
_EVIDENCE = (
    r"signature|signed|attestation|in-toto|statement|provenance|claims?|bundle|"
    r"ml-bom|sbom|cyclonedx|evidence|verification summary|model\.sig"
)
_KEYS = r"--key|--trusted-key|public key|trusted key|signer|signing identity|identity"
# A key file by its usual suffixes, such as keys/producer.pub or release.pem.
_KEY_FILE = r"[\w~./-]*\w\.(?:pub|pem|crt|cer|key|asc|gpg)\b"
# A key named by its owner or role ("the producer key"); the negative
# look-ahead keeps words that name no particular key out ("an unknown key").
_NAMED_KEY = (
    r"(?!(?:a|an|the|any|some|this|that|its|their|your|which|what|no|unknown|untrusted"
    r"|different|other|wrong|same|valid|invalid|expired|revoked|missing)\b)[\w-]+ key\b"
)
_EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"

_CHANGE_KINDS = (
    _ChangeKind(
        "convert-format",
        re.compile(
            rf"\b(convert|re-?export|export|re-?save|save)\b.*?({_FORMATS})"
            rf"|({_FORMATS})\s+(export|copy|file|format|version)"
            rf"|\bin a format\b",
            re.IGNORECASE | re.DOTALL,
        ),
        ("policy.format", "pickle.", "torch.", "numpy.", "keras.", "joblib."),
        re.compile(_FORMATS, re.IGNORECASE),
    ),
    _ChangeKind(
        "provide-evidence",
        re.compile(
            rf"\b(ask|provide|record|attach|add|pass|supply|publish|obtain|request|sign|attest"
            rf"|use|fetch|describe)\b.*?\b({_EVIDENCE})\b"
            rf"|\battest\b.*?\bagain\b|`attestgate (sign|attest)\b|\bmodel_signing sign\b",
            re.IGNORECASE | re.DOTALL,
        ),
        ("provenance.", "evidence.", "policy.require.", "claims.", "slsa."),
        re.compile(rf"\b({_EVIDENCE})\b", re.IGNORECASE),
    ),
    _ChangeKind(
        "use-signer",
        re.compile(
            rf"\b(sign|use|trust|pass|add|configure)\b.*?({_KEYS})"
            r"|\bsign (it|the \w+)( again)? with\b"
            rf"|\b(re-?)?sign(ed|ing)?\s+(with|by|using)\s+((the|a|an)\s+)?"
            rf"({_KEY_FILE}|{_NAMED_KEY}|{_EMAIL})"
            rf"|\b((re-?)?sign(ed|ing)?|trust|use|pass|add|configure|verify)\b.*?{_KEY_FILE}",
            re.IGNORECASE | re.DOTALL,
        ),
        ("signature.", "trust."),
        re.compile(_KEYS, re.IGNORECASE),
    ),
    _ChangeKind(
        "pin",
        re.compile(
            r"\bpin(ned)?\b|==|--hash|--generate-hashes|\bcommit hash\b"
            r"|\bupgrade\b.*?\b(to|version)\b|\bexact versions?\b|\bfixed versions?\b",
            re.IGNORECASE | re.DOTALL,
        ),
        ("deps.",),
        re.compile(r"\bversion\b|\bhash(es)?\b|\brelease\b", re.IGNORECASE),
    ),
    _ChangeKind(
        "remove",
        re.compile(r"\b(remove|delete|drop|strip|exclude|rename)\b", re.IGNORECASE),
        ("archive.", "hub.", "intake."),
        re.compile(r"\b(file|member|entry|layer)\b", re.IGNORECASE),
    ),
    _ChangeKind(
        "replace",
        re.compile(
            r"\b(replace|rebuild|build|re-?create|vendor)\b.*?\b(with|from|using|by)\b",
            re.IGNORECASE | re.DOTALL,
        ),
        (),
        re.compile(r"$^"),
    ),
)


def classify_remediation(rule: str, text: str) -> Actionability:
    """Decide whether a remediation names a concrete change a person can make.

    A remediation is actionable when its text names one of these changes
    (``kind`` names which):

    - ``convert-format``: a format to convert or export to (safetensors, GGUF, ONNX ...);
    - ``provide-evidence``: a signature, claim, statement or other evidence to provide;
    - ``use-signer``: a signer, key or identity to sign with or to trust, or a
      key file or named key (``keys/producer.pub``, "the producer key") to sign
      or verify with;
    - ``pin``: a version or hash to pin, or a version to upgrade to;
    - ``remove``: a file, member, entry or option to remove;
    - ``replace``: a part to replace or rebuild with a named alternative.

    The first match wins. When no imperative matches, the rule id can still
    place the text. Some rule families call for one kind of change
    (``deps.*`` for pinning, ``provenance.*`` for evidence, and so on), so
    their remediation is actionable when it names that change's object (a
    version, a signature). Everything else, such as "review the file" or
    "ask what this rule guards against", is ``not-actionable``, and an
    empty text is ``missing``.
    """
    text = text.strip()
    if not text:
        return Actionability(False, "missing")
    for kind in _CHANGE_KINDS:
        if kind.text.search(text):
            return Actionability(True, kind.name)
    for kind in _CHANGE_KINDS:
        if rule.startswith(kind.rules) and kind.objects.search(text):
            return Actionability(True, kind.name)
    return Actionability(False, "not-actionable")


def actionable_remediation(results: Sequence[CaseResult], examples: int = 25) -> dict[str, Any]:
    """Return the share of quarantine decisions whose every reason has an actionable remediation.

    Only the reasons at the quarantine action count, because they are what
    a person must resolve to release the artifact. ``examples`` lists the
    first ``examples`` distinct non-actionable (rule, remediation) pairs,
    most frequent first, out of ``non_actionable_distinct``. Each names at
    most five of its decisions in ``cases`` and counts the rest in
    ``more_cases``.
    """
    total = count = 0
    kinds: dict[str, int] = {}
    missing: dict[tuple[str, str], dict[str, Any]] = {}
    seen: dict[tuple[str, str], set[str]] = {}
    for result in results:
        for stage, outcome in result.stages.items():
            if outcome.action != "quarantine":
                continue
            total += 1
            driving = [r for r in outcome.reasons if r.action == "quarantine"] or outcome.reasons
            verdicts = [(r, classify_remediation(r.rule, r.remediation)) for r in driving]
            if verdicts and all(v.actionable for _, v in verdicts):
                count += 1
            for reason, verdict in verdicts:
                kinds[verdict.kind] = kinds.get(verdict.kind, 0) + 1
                if verdict.actionable:
                    continue
                key = (reason.rule, reason.remediation)
                entry = missing.setdefault(
                    key,
                    {
                        "rule": reason.rule,
                        "remediation": reason.remediation,
                        "verdict": verdict.kind,
                        "count": 0,
                        "cases": [],
                        "more_cases": 0,
                    },
                )
                entry["count"] += 1
                where = f"{result.case.id}@{stage}"
                if where in seen.setdefault(key, set()):
                    continue
                seen[key].add(where)
                if len(entry["cases"]) < EXAMPLE_CASES:
                    entry["cases"].append(where)
                else:
                    entry["more_cases"] += 1
    listed = sorted(missing.values(), key=lambda e: (-e["count"], e["rule"]))
    return {
        "share": _share(count, total),
        "count": count,
        "total": total,
        "kinds": dict(sorted(kinds.items())),
        "examples": listed[:examples],
        "non_actionable_distinct": len(listed),
    }


def percentile(values: Sequence[float], share: float) -> float:
    """Return the nearest-rank percentile (``share`` from 0 to 1) of ``values``."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values) if values else 0.0,
        "p95": percentile(values, 0.95),
        "count": len(values),
    }


def latency(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Return median and p95 seconds per pipeline step and per artifact size bucket.

    Steps come from the decision records' timings of the admissions that
    finished; ``total`` is the wall-clock time of each ``admit`` call.
    ``dynamic_plugins`` covers only the admissions that ran a plug-in.
    """
    finished = [
        (result, stage)
        for result in results
        for stage in result.stages.values()
        if stage.action != ERROR
    ]
    steps: dict[str, Any] = {}
    for step in LATENCY_STEPS:
        values = [stage.timings[step] for _, stage in finished if step in stage.timings]
        steps[step] = _summary(values)
    plugged = [s.timings.get("dynamic", 0.0) for r, s in finished if r.case.dynamic]
    if plugged:
        steps["dynamic_plugins"] = _summary(plugged)
    steps["total"] = _summary([stage.seconds for _, stage in finished])

    by_size = []
    lower = 0.0
    for label, upper in SIZE_BUCKETS:
        members = [(r, s) for r, s in finished if lower <= r.size < upper]
        lower = upper
        if not members:
            continue
        seconds = sum(s.seconds for _, s in members)
        size = sum(r.size for r, _ in members)
        by_size.append(
            {
                "bucket": label,
                **_summary([s.seconds for _, s in members]),
                "bytes": size,
                "mib_per_s": (size / MIB) / seconds if seconds else 0.0,
            }
        )
    return {**steps, "by_size": by_size}


def peer_summary(
    peers: Mapping[str, Any], results: Sequence[CaseResult]
) -> dict[str, dict[str, Any]]:
    """Return detections, misses and false positives per scanner on the same cases.

    ``peers`` is the output of :func:`attestgate.evaluation.peers.run_peers`.
    A hostile case counts as a detection or a miss, and a clean one as a
    false positive when detected. A case the tool failed on (``detected``
    is ``None``) counts as an error. attestgate's own row uses the cases the
    peers ran on, and "detected" means a decision other than allow at
    :data:`PEER_STAGE` (at the last labelled stage when that stage has no label).
    """
    by_id = {r.case.id: r for r in results}
    rows: dict[str, dict[str, Any]] = {}
    case_ids: list[str] = []
    for item in peers.get("results", []):
        case_id = str(item.get("case"))
        if case_id not in case_ids:
            case_ids.append(case_id)
        result = by_id.get(case_id)
        if result is None:
            continue
        detected = item.get("detected")
        _tally(
            rows, str(item.get("tool")), result, detected if detected is None else bool(detected)
        )
    if not case_ids:
        case_ids = [r.case.id for r in results if r.case.family in (MALICIOUS_HUB, CLEAN_BASELINE)]
    for case_id in case_ids:
        result = by_id.get(case_id)
        if result is None:
            continue
        _tally(rows, "attestgate", result, _gate_detected(result))
    return rows


def _gate_detected(result: CaseResult) -> bool | None:
    labelled = [s for s in STAGES if s in result.stages]
    if not labelled:
        return None
    stage = PEER_STAGE if PEER_STAGE in result.stages else labelled[-1]
    action = result.stages[stage].action
    return None if action == ERROR else action != "allow"


def _tally(
    rows: dict[str, dict[str, Any]], tool: str, result: CaseResult, detected: bool | None
) -> None:
    row = rows.setdefault(
        tool,
        {
            "cases": 0,
            "hostile": 0,
            "clean": 0,
            "detections": 0,
            "misses": 0,
            "false_positives": 0,
            "errors": 0,
            "missed": [],
            "false_positive_cases": [],
        },
    )
    row["cases"] += 1
    row["hostile" if result.case.hostile else "clean"] += 1
    if detected is None:
        row["errors"] += 1
    elif result.case.hostile and detected:
        row["detections"] += 1
    elif result.case.hostile:
        row["misses"] += 1
        row["missed"].append(result.case.id)
    elif detected:
        row["false_positives"] += 1
        row["false_positive_cases"].append(result.case.id)
