"""The SARIF writer: schema validity, levels, locations and fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from attestgate.findings import Finding, Severity
from attestgate.reports.sarif import (
    FINGERPRINT_KEY,
    ROOT_BASE_ID,
    SARIF_VERSION,
    sarif_log,
    split_location,
)


def finding(
    rule: str = "pickle.unsafe-global",
    severity: Severity = Severity.CRITICAL,
    file: str = "model.pkl",
    offset: int | None = None,
    remediation: str = "Do not load this file.",
) -> Finding:
    return Finding(
        rule,
        severity,
        file,
        f"{rule} in {file}",
        remediation,
        check=rule.split(".", 1)[0],
        offset=offset,
    )


def only_result(log: dict[str, Any]) -> dict[str, Any]:
    results = log["runs"][0]["results"]
    assert len(results) == 1
    result: dict[str, Any] = results[0]
    return result


def test_log_valid_with_member_location(sarif_validator: Any, tmp_path: Path) -> None:
    findings = [
        finding(file="pytorch_model.bin:archive/data.pkl", offset=13),
        finding("hf.embedded-code", Severity.MEDIUM, "modeling_custom.py"),
        finding("safetensors.bad-header", Severity.HIGH, "model.safetensors", offset=8),
        finding("identify.unscanned", Severity.LOW, "notes.bin"),
        finding("deps.note", Severity.INFO, "requirements.txt"),
    ]
    log = sarif_log(
        findings,
        root=tmp_path,
        files=["pytorch_model.bin", "modeling_custom.py", "model.safetensors"],
        artifact={"path": str(tmp_path), "kind": "directory"},
        exit_code=6,
    )
    errors = [e.message for e in sarif_validator.iter_errors(log)]
    assert errors == []


def test_empty_log_valid(sarif_validator: Any) -> None:
    log = sarif_log([])
    assert not list(sarif_validator.iter_errors(log))
    assert log["version"] == SARIF_VERSION
    assert log["runs"][0]["results"] == []


def test_validator_rejects_bad_level(sarif_validator: Any) -> None:
    log = sarif_log([finding()])
    log["runs"][0]["results"][0]["level"] = "fatal"
    assert list(sarif_validator.iter_errors(log))


def test_member_location_is_logical() -> None:
    log = sarif_log(
        [finding(file="pytorch_model.bin:archive/data.pkl", offset=13)],
        files=["pytorch_model.bin"],
    )
    location = only_result(log)["locations"][0]
    physical = location["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "pytorch_model.bin", "uriBaseId": ROOT_BASE_ID}
    assert "region" not in physical
    assert location["logicalLocations"] == [
        {"name": "data.pkl", "fullyQualifiedName": "archive/data.pkl", "kind": "resource"}
    ]
    assert only_result(log)["properties"]["offset"] == 13


def test_top_level_offset_is_region() -> None:
    log = sarif_log([finding(file="model.pkl", offset=42)], files=["model.pkl"])
    location = only_result(log)["locations"][0]
    assert location["physicalLocation"]["region"] == {"byteOffset": 42}
    assert "logicalLocations" not in location


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        (Severity.CRITICAL, "error"),
        (Severity.HIGH, "error"),
        (Severity.MEDIUM, "warning"),
        (Severity.LOW, "note"),
        (Severity.INFO, "note"),
    ],
)
def test_level_from_severity(severity: Severity, level: str) -> None:
    result = only_result(sarif_log([finding(severity=severity)]))
    assert result["level"] == level
    assert result["properties"]["severity"] == severity.label


def test_rule_level_is_worst_severity() -> None:
    log = sarif_log(
        [
            finding(severity=Severity.LOW, file="a.pkl"),
            finding(severity=Severity.CRITICAL, file="b.pkl"),
        ]
    )
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert len(rules) == 1
    assert rules[0]["defaultConfiguration"] == {"level": "error"}
    assert rules[0]["properties"]["security-severity"] == "9.5"


def test_rule_metadata() -> None:
    log = sarif_log([finding(remediation="Ask for a safetensors export.")])
    driver = log["runs"][0]["tool"]["driver"]
    rule = driver["rules"][0]
    assert driver["name"] == "attestgate"
    assert driver["informationUri"].startswith("https://")
    assert driver["version"]
    assert rule["id"] == "pickle.unsafe-global"
    assert rule["shortDescription"] == {"text": "pickle: unsafe global"}
    assert rule["help"] == {"text": "Ask for a safetensors export."}


def test_rule_index_matches_rule() -> None:
    log = sarif_log(
        [finding("b.second", file="x"), finding("a.first", file="y"), finding("b.second", file="z")]
    )
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    for result in log["runs"][0]["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_fingerprint_stable_and_distinct() -> None:
    first = only_result(sarif_log([finding(offset=1)]))["partialFingerprints"][FINGERPRINT_KEY]
    again = only_result(sarif_log([finding(offset=1)]))["partialFingerprints"][FINGERPRINT_KEY]
    moved = only_result(sarif_log([finding(offset=2)]))["partialFingerprints"][FINGERPRINT_KEY]
    assert first == again
    assert first != moved


def test_uri_percent_encoded() -> None:
    log = sarif_log([finding(file="dir/a b:c.bin")], files=["dir/a b:c.bin"])
    uri = only_result(log)["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "dir/a%20b%3Ac.bin"


def test_root_base_uri(tmp_path: Path) -> None:
    log = sarif_log([finding()], root=tmp_path)
    base = log["runs"][0]["originalUriBaseIds"][ROOT_BASE_ID]["uri"]
    assert base == tmp_path.resolve().as_uri() + "/"


def test_unsuccessful_invocation() -> None:
    log = sarif_log([finding()], successful=False, exit_code=1)
    assert log["runs"][0]["invocations"] == [{"executionSuccessful": False, "exitCode": 1}]


@pytest.mark.parametrize(
    ("file", "files", "expected"),
    [
        ("model.pkl", [], ("model.pkl", "")),
        ("a.zip:dir/b.pkl", [], ("a.zip", "dir/b.pkl")),
        ("a.zip:inner.tar:c.pkl", ["a.zip"], ("a.zip", "inner.tar:c.pkl")),
        ("odd:name.zip:m.pkl", ["odd:name.zip"], ("odd:name.zip", "m.pkl")),
        ("odd:name.bin", ["odd:name.bin"], ("odd:name.bin", "")),
    ],
)
def test_split_location(file: str, files: list[str], expected: tuple[str, str]) -> None:
    assert split_location(file, frozenset(files)) == expected
