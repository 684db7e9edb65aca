"""Evaluation metrics on hand-made case results, checked number by number."""

from __future__ import annotations

import pytest

from attestgate.evaluation import metrics
from attestgate.evaluation.runner import CaseResult, ReasonResult, StageResult
from attestgate.evaluation.scenario import (
    BACKDOOR_PROVENANCE,
    CLEAN_BASELINE,
    DEPENDENCY_CONFUSION,
    MALICIOUS_HUB,
    Case,
)

PICKLE_FIX = "Do not load this file. Ask the publisher for a safetensors export of the weights."
SIGN_FIX = "Ask the producer for a signature over this exact artifact (`attestgate sign PATH`)."
PIN_FIX = "Pin every requirement to one version with == and record its hashes."
VAGUE_FIX = "Review the artifact before use."


def reason(rule: str, action: str, remediation: str = "", severity: str = "high") -> ReasonResult:
    return ReasonResult(rule, action, severity, remediation)


def stage(
    action: str, *reasons: ReasonResult, seconds: float = 0.1, **timings: float
) -> StageResult:
    error = "RuntimeError: failed" if action == "error" else None
    return StageResult(action, list(reasons), [], dict(timings), seconds=seconds, error=error)


def case(
    id: str,
    family: str,
    expected: dict[str, str],
    *,
    hostile: bool,
    twin: str | None = None,
    dynamic: tuple[str, ...] = (),
) -> Case:
    return Case(
        id,
        f"scenario-{family}",
        family,
        f"{id}.bin",
        expected,
        hostile=hostile,
        step=f"step of {id}" if hostile else None,
        twin=twin,
        dynamic=dynamic,
    )


PROVENANCE = reason("provenance.missing", "quarantine", SIGN_FIX, "medium")
UNSAFE = reason("pickle.unsafe-global", "block", PICKLE_FIX, "critical")
VAGUE = reason("custom.review", "quarantine", VAGUE_FIX)
UNPINNED = reason("deps.unpinned", "quarantine", PIN_FIX, "medium")


@pytest.fixture
def results() -> list[CaseResult]:
    """Three attacks (one caught, one missed, one error) and four clean cases."""
    both = {"training": "block", "deployment": "block"}
    return [
        CaseResult(
            case("hub-1", MALICIOUS_HUB, both, hostile=True, twin="hub-clean"),
            1000,
            {
                "training": stage("block", UNSAFE, PROVENANCE, seconds=0.2, identify=0.01),
                "deployment": stage("block", UNSAFE, PROVENANCE, seconds=0.4, identify=0.03),
            },
        ),
        CaseResult(
            case("dep-1", DEPENDENCY_CONFUSION, {"deployment": "quarantine"}, hostile=True),
            100,
            {"deployment": stage("allow", seconds=0.1, identify=0.02)},
        ),
        CaseResult(
            case("bd-1", BACKDOOR_PROVENANCE, {"deployment": "quarantine"}, hostile=True),
            2 * 1024 * 1024,
            {"deployment": stage("error")},
        ),
        CaseResult(
            case("hub-clean", MALICIOUS_HUB, {"deployment": "allow"}, hostile=False),
            1000,
            {"deployment": stage("quarantine", PROVENANCE, seconds=0.3, identify=0.04)},
        ),
        CaseResult(
            case(
                "clean-1",
                CLEAN_BASELINE,
                {"training": "allow", "deployment": "allow"},
                hostile=False,
            ),
            100,
            {
                "training": stage("allow", seconds=0.5, identify=0.05),
                "deployment": stage("allow", seconds=0.6, identify=0.06),
            },
        ),
        CaseResult(
            case("clean-2", CLEAN_BASELINE, {"deployment": "allow"}, hostile=False),
            100,
            {"deployment": stage("error")},
        ),
        CaseResult(
            case("clean-3", CLEAN_BASELINE, {"deployment": "quarantine"}, hostile=False),
            100,
            {"deployment": stage("quarantine", VAGUE, UNPINNED, seconds=0.7, identify=0.07)},
        ),
    ]


def test_coverage_overall(results: list[CaseResult]) -> None:
    coverage = metrics.coverage(results)
    assert coverage["steps"] == 3
    assert coverage["fired"] == 1
    assert coverage["overall"] == pytest.approx(1 / 3)


def test_coverage_per_family(results: list[CaseResult]) -> None:
    families = metrics.coverage(results)["families"]
    assert families == {MALICIOUS_HUB: 1.0, DEPENDENCY_CONFUSION: 0.0, BACKDOOR_PROVENANCE: 0.0}


def test_coverage_lists_missed(results: list[CaseResult]) -> None:
    missed = [item["case"] for item in metrics.coverage(results)["missed"]]
    assert missed == ["dep-1", "bd-1"]


def test_coverage_marks_errors(results: list[CaseResult]) -> None:
    coverage = metrics.coverage(results)
    flags = {item["case"]: item["error"] for item in coverage["missed"]}
    assert flags == {"dep-1": False, "bd-1": True}
    assert coverage["errors"] == 1


def test_share_none_without_denominator() -> None:
    coverage = metrics.coverage([])
    assert coverage["overall"] is None
    assert metrics.false_positives([])["rate"] is None
    assert metrics.confusion([])["accuracy"] is None
    assert metrics.actionable_remediation([])["share"] is None


def test_twin_specific_coverage(results: list[CaseResult]) -> None:
    specific = metrics.coverage(results)["twin_specific"]
    assert specific == {
        "overall": 1.0,
        "steps": 1,
        "fired": 1,
        "unpaired": 2,
        "unpaired_cases": ["dep-1", "bd-1"],
    }


def test_twin_specific_ignores_shared(results: list[CaseResult]) -> None:
    hostile = results[0]
    hostile.stages["deployment"] = stage("quarantine", PROVENANCE)
    hostile.stages["training"] = stage("quarantine", PROVENANCE)
    specific = metrics.coverage(results)["twin_specific"]
    assert specific["fired"] == 0


def test_confusion_table(results: list[CaseResult]) -> None:
    table = metrics.confusion(results)["table"]
    assert table["deployment"]["block"] == {"allow": 0, "quarantine": 0, "block": 1, "error": 0}
    assert table["deployment"]["quarantine"] == {
        "allow": 1,
        "quarantine": 1,
        "block": 0,
        "error": 1,
    }
    assert table["deployment"]["allow"] == {"allow": 1, "quarantine": 1, "block": 0, "error": 1}
    assert table["training"]["allow"]["allow"] == 1
    assert "fine-tuning" not in table


def test_accuracy(results: list[CaseResult]) -> None:
    decisions = metrics.confusion(results)
    # Correct: hub-1 twice, clean-1 twice, clean-3; nine admissions in all.
    assert decisions["correct"] == 5
    assert decisions["decisions"] == 9
    assert decisions["accuracy"] == pytest.approx(5 / 9)


def test_lenient_and_errors(results: list[CaseResult]) -> None:
    decisions = metrics.confusion(results)
    assert decisions["lenient"] == [
        {"case": "dep-1", "stage": "deployment", "expected": "quarantine", "actual": "allow"}
    ]
    assert decisions["strict"] == 1
    assert decisions["errors"] == 2


def test_false_positives(results: list[CaseResult]) -> None:
    fp = metrics.false_positives(results)
    # hub-clean, clean-1 and clean-2 have allow labels; clean-3 expects quarantine.
    assert fp["total"] == 3
    assert fp["count"] == 2
    assert fp["rate"] == pytest.approx(2 / 3)
    assert [item["case"] for item in fp["cases"]] == ["hub-clean", "clean-2"]


def test_false_positive_kinds(results: list[CaseResult]) -> None:
    kinds = {item["case"]: item["kind"] for item in metrics.false_positives(results)["cases"]}
    assert kinds == {"hub-clean": "twin", "clean-2": "baseline"}


def test_false_positive_decisions(results: list[CaseResult]) -> None:
    assert metrics.false_positives(results)["decisions"]["count"] == 2
    assert metrics.false_positives(results)["decisions"]["total"] == 4


def test_false_positive_excluded(results: list[CaseResult]) -> None:
    # clean-3 is labelled quarantine at deployment, so it is no false positive.
    assert metrics.false_positives(results)["excluded"] == {"quarantine": {"deployment": 1}}


def test_false_positive_errors(results: list[CaseResult]) -> None:
    # clean-2 is listed only because its admission failed.
    assert metrics.false_positives(results)["errors"] == 1


def test_labels_hostile_allow() -> None:
    trusted = case(
        "bd-trusted",
        BACKDOOR_PROVENANCE,
        {"training": "allow", "deployment": "allow"},
        hostile=True,
    )
    results = [
        CaseResult(trusted, 1, {"training": stage("allow"), "deployment": stage("quarantine")})
    ]
    labels = metrics.labels(results)
    assert labels["admissions"]["hostile"] == {"allow": 2, "quarantine": 0, "block": 0}
    assert labels["hostile_allow_cases"] == ["bd-trusted"]
    assert labels["hostile_allow"][1] == {
        "case": "bd-trusted",
        "stage": "deployment",
        "actual": "quarantine",
    }


def test_labels_clean_counts(results: list[CaseResult]) -> None:
    clean = metrics.labels(results)["admissions"]["clean"]
    assert clean == {"allow": 4, "quarantine": 1, "block": 0}


def test_failures_listed(results: list[CaseResult]) -> None:
    failed = metrics.failures(results)
    assert failed["count"] == 2
    assert failed["admissions"] == 9
    assert failed["cases"] == 2
    assert [(item["case"], item["hostile"]) for item in failed["failed"]] == [
        ("bd-1", True),
        ("clean-2", False),
    ]
    assert failed["failed"][0]["error"] == "RuntimeError: failed"


@pytest.mark.parametrize(
    ("rule", "text", "kind"),
    [
        ("pickle.unsafe-global", PICKLE_FIX, "convert-format"),
        (
            "policy.format-denied",
            "Convert the weights to safetensors and admit them again.",
            "convert-format",
        ),
        ("provenance.missing", SIGN_FIX, "provide-evidence"),
        (
            "policy.require.training-claim",
            "Ask the producer to record the missing training claims.",
            "provide-evidence",
        ),
        ("signature.untrusted", "Sign it with a key the policy trusts (--key FILE).", "use-signer"),
        ("trust.unknown-signer", "Use the public key of the release team.", "use-signer"),
        ("deps.unpinned", PIN_FIX, "pin"),
        ("hub.revision", "Pin the reference to a commit hash.", "pin"),
        ("archive.traversal", "Remove the member ../../etc/passwd from the archive.", "remove"),
        ("gguf.chat-template", "Replace it with the template from the base model.", "replace"),
        ("deps.known-vulnerable", "A fixed release exists: version 2.3.1.", "pin"),
        (
            "torchscript.code",
            "Admit a release signed with the producer key (keys/producer.pub), or have a "
            "reviewer read the code and approve it with an exception.",
            "use-signer",
        ),
        ("hub.custom-code", "Admit it only when signed by the release key.", "use-signer"),
        ("custom.note", "Verify the release with keys/release.pub.", "use-signer"),
        ("custom.note", "Release it signed by ml-release@acme.example.", "use-signer"),
    ],
)
def test_remediation_actionable(rule: str, text: str, kind: str) -> None:
    verdict = metrics.classify_remediation(rule, text)
    assert verdict.actionable
    assert verdict.kind == kind


@pytest.mark.parametrize(
    ("rule", "text", "kind"),
    [
        ("custom.review", VAGUE_FIX, "not-actionable"),
        (
            "policy.custom",
            "Ask the policy owners what this custom rule guards against.",
            "not-actionable",
        ),
        ("check.failed", "", "missing"),
        (
            "onnx.network",
            "Do not serve this model until a reviewer has confirmed why.",
            "not-actionable",
        ),
        # A version is only the object of a change for dependency findings.
        ("custom.note", "The file names version 3.", "not-actionable"),
        ("custom.review", "Review the findings.", "not-actionable"),
        # A key that names no signer, or a key file that is only mentioned.
        ("custom.note", "The signature came from an unknown key.", "not-actionable"),
        ("custom.note", "Signed with a key nobody trusts; review it.", "not-actionable"),
        ("custom.note", "It was signed by an untrusted signer.", "not-actionable"),
        ("custom.note", "The file keys/producer.pub is missing.", "not-actionable"),
        (
            "custom.note",
            "Have a reviewer read the code and approve it with an exception.",
            "not-actionable",
        ),
    ],
)
def test_remediation_not_actionable(rule: str, text: str, kind: str) -> None:
    verdict = metrics.classify_remediation(rule, text)
    assert not verdict.actionable
    assert verdict.kind == kind


def test_actionable_share(results: list[CaseResult]) -> None:
    share = metrics.actionable_remediation(results)
    # Quarantines: hub-clean (provenance: actionable), clean-3 (vague and pin).
    assert share["total"] == 2
    assert share["count"] == 1
    assert share["share"] == pytest.approx(0.5)


def test_actionable_examples(results: list[CaseResult]) -> None:
    examples = metrics.actionable_remediation(results)["examples"]
    assert [(e["rule"], e["remediation"]) for e in examples] == [("custom.review", VAGUE_FIX)]
    assert examples[0]["cases"] == ["clean-3@deployment"]
    assert examples[0]["more_cases"] == 0


def test_actionable_examples_cut() -> None:
    results = [
        CaseResult(
            case(f"clean-{i}", CLEAN_BASELINE, {"deployment": "quarantine"}, hostile=False),
            1,
            {"deployment": stage("quarantine", VAGUE)},
        )
        for i in range(8)
    ]
    (example,) = metrics.actionable_remediation(results)["examples"]
    assert example["count"] == 8
    assert len(example["cases"]) == metrics.EXAMPLE_CASES
    assert example["more_cases"] == 8 - metrics.EXAMPLE_CASES


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert metrics.percentile(values, 0.95) == 19.0
    assert metrics.percentile([3.0], 0.95) == 3.0
    assert metrics.percentile([], 0.95) == 0.0


def test_latency_steps(results: list[CaseResult]) -> None:
    latency = metrics.latency(results)
    # Seven finished admissions with identify 0.01 .. 0.07.
    assert latency["identify"]["count"] == 7
    assert latency["identify"]["median"] == pytest.approx(0.04)
    assert latency["identify"]["p95"] == pytest.approx(0.07)
    assert latency["total"]["median"] == pytest.approx(0.4)


def test_latency_size_buckets(results: list[CaseResult]) -> None:
    buckets = {b["bucket"]: b["count"] for b in metrics.latency(results)["by_size"]}
    # bd-1 (2 MiB) failed, so only the small bucket has admissions.
    assert buckets == {"< 64 KiB": 7}


def test_peer_summary(results: list[CaseResult]) -> None:
    peers = {
        "tools": {"picklescan": {"available": True, "version": "0.0.1", "error": None}},
        "results": [
            {"case": "hub-1", "tool": "picklescan", "detected": True},
            {"case": "hub-clean", "tool": "picklescan", "detected": False},
            {"case": "clean-1", "tool": "picklescan", "detected": True},
            {"case": "clean-2", "tool": "picklescan", "detected": None},
        ],
    }
    rows = metrics.peer_summary(peers, results)
    tool = rows["picklescan"]
    assert (tool["detections"], tool["misses"], tool["false_positives"], tool["errors"]) == (
        1,
        0,
        1,
        1,
    )
    gate = rows["attestgate"]
    # hub-clean is quarantined at deployment, clean-2 errored.
    assert (gate["detections"], gate["false_positives"], gate["errors"]) == (1, 1, 1)
    assert gate["false_positive_cases"] == ["hub-clean"]


def test_peer_row_judged_at_training() -> None:
    # Unsigned but clean: the corpus policy quarantines it at deployment for
    # missing provenance, which no content scanner would report.
    unsigned = CaseResult(
        case(
            "clean-unsigned",
            CLEAN_BASELINE,
            {"training": "allow", "deployment": "quarantine"},
            hostile=False,
        ),
        100,
        {
            "training": stage("allow"),
            "deployment": stage("quarantine", PROVENANCE),
        },
    )
    peers = {"results": [{"case": "clean-unsigned", "tool": "picklescan", "detected": False}]}
    gate = metrics.peer_summary(peers, [unsigned])["attestgate"]
    assert gate["false_positives"] == 0
    assert gate["clean"] == 1
