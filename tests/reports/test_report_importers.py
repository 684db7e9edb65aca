"""Importers for ModelScan JSON, SARIF 2.1.0 and Trivy JSON reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.reports.importers import import_report, import_reports, imported_checks
from attestgate.reports.interface import (
    RULE_ID,
    ImportedReport,
    ImportLimits,
    ReportError,
    clean_text,
    import_rule,
)


def write(tmp_path: Path, name: str, document: Any) -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def one(reports: list[ImportedReport]) -> ImportedReport:
    assert len(reports) == 1
    return reports[0]


def by_rule(report: ImportedReport) -> dict[str, Finding]:
    return {f.rule: f for f in report.findings}


def sarif(results: list[dict[str, Any]], **driver: Any) -> dict[str, Any]:
    tool = {"name": "Semgrep OSS", "version": "1.101.0", **driver}
    return {"version": "2.1.0", "runs": [{"tool": {"driver": tool}, "results": results}]}


def result(
    rule_id: str = "python.lang.security.audit.eval-detected", **extra: Any
) -> dict[str, Any]:
    return {
        "ruleId": rule_id,
        "message": {"text": "Detected the use of eval()."},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": "loader.py"}}}],
        **extra,
    }


# ModelScan


def test_modelscan_critical_issue(data_dir: Path) -> None:
    report = one(import_report(data_dir / "modelscan-report.json"))
    found = report.findings[0]
    assert len(report.findings) == 1
    assert found.rule == "import.modelscan.py-torch-unsafe-op-scan"
    assert found.severity is Severity.CRITICAL
    assert found.file == "pytorch_model.bin:archive/data.pkl"
    assert found.check == "import:modelscan@0.8.5"
    assert "os.system" in found.message
    assert found.details["tool"] == "modelscan"
    assert found.details["tool_version"] == "0.8.5"
    assert found.details["report"] == str(data_dir / "modelscan-report.json")


def test_modelscan_report_identity(data_dir: Path) -> None:
    report = one(import_report(data_dir / "modelscan-report.json"))
    assert report.format == "modelscan-json"
    assert report.tool == "modelscan"
    assert len(report.sha256) == 64


def test_modelscan_error_is_medium(tmp_path: Path) -> None:
    document = {
        "summary": {"modelscan_version": "0.8.5", "total_issues": 0},
        "issues": [],
        "errors": [
            {
                "category": "MODEL_SCAN",
                "description": "module 'numpy.lib.format' has no attribute '_check_version'",
                "source": "weights.npy",
            }
        ],
    }
    report = one(import_report(write(tmp_path, "ms.json", document)))
    found = report.findings[0]
    assert found.rule == "import.modelscan.scan-error"
    assert found.severity is Severity.MEDIUM
    assert found.file == "weights.npy"


def test_modelscan_unknown_severity_medium(tmp_path: Path) -> None:
    document = {
        "summary": {"modelscan_version": "0.8.5"},
        "issues": [{"severity": "SEVERE", "source": "m.pkl", "scanner": "x.PickleUnsafeOpScan"}],
    }
    found = one(import_report(write(tmp_path, "ms.json", document))).findings[0]
    assert found.severity is Severity.MEDIUM
    assert found.details["severity"] == "SEVERE"


def test_modelscan_stdout_preamble(tmp_path: Path, data_dir: Path) -> None:
    text = "No settings file detected at /x/modelscan-settings.toml. Using defaults.\n\n"
    text += (data_dir / "modelscan-report.json").read_text()
    report = one(import_report(write(tmp_path, "stdout.txt", text)))
    assert len(report.findings) == 1


def test_modelscan_issue_not_object(tmp_path: Path) -> None:
    document = {"summary": {"modelscan_version": "0.8.5"}, "issues": ["os.system"]}
    path = write(tmp_path, "ms.json", document)
    with pytest.raises(ReportError, match=r"ms\.json.*issues\[0\] must be an object"):
        import_report(path)


# SARIF


def test_bandit_findings(data_dir: Path) -> None:
    report = one(import_report(data_dir / "bandit.sarif"))
    rules = by_rule(report)
    assert report.tool == "bandit"
    assert report.tool_version == "1.7.10"
    assert set(rules) == {"import.bandit.b307", "import.bandit.b602"}
    assert rules["import.bandit.b307"].severity is Severity.MEDIUM
    assert rules["import.bandit.b602"].severity is Severity.HIGH
    assert rules["import.bandit.b602"].file == "modeling_custom.py"
    assert rules["import.bandit.b602"].details["line"] == 13
    assert rules["import.bandit.b602"].check == "import:bandit@1.7.10"


def test_bandit_remediation_names_help(data_dir: Path) -> None:
    found = by_rule(one(import_report(data_dir / "bandit.sarif")))["import.bandit.b307"]
    assert "bandit.readthedocs.io" in found.remediation


def test_sarif_semgrep_rule_id(tmp_path: Path) -> None:
    report = one(import_report(write(tmp_path, "s.sarif", sarif([result()]))))
    found = report.findings[0]
    assert report.tool == "semgrep-oss"
    assert found.rule == "import.semgrep-oss.python.lang.security.audit.eval-detected"
    assert found.details["id"] == "python.lang.security.audit.eval-detected"


def test_sarif_security_severity_wins(tmp_path: Path) -> None:
    rules = [{"id": "CVE-2024-1", "properties": {"security-severity": "9.8"}}]
    document = sarif([result("CVE-2024-1", level="warning")], rules=rules)
    found = one(import_report(write(tmp_path, "t.sarif", document))).findings[0]
    assert found.severity is Severity.CRITICAL
    assert found.details["security_severity"] == 9.8


def test_sarif_result_score_zero_wins(tmp_path: Path) -> None:
    rules = [{"id": "R1", "properties": {"security-severity": "9.8"}}]
    document = sarif([result("R1", properties={"security-severity": "0.0"})], rules=rules)
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.severity is Severity.INFO


def test_sarif_rule_index_gives_rule_id(tmp_path: Path) -> None:
    rules = [{"id": "B102"}]
    document = sarif([{"ruleIndex": 0, "message": {"text": "exec used"}}], rules=rules)
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.rule == "import.semgrep-oss.b102"


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        ("error", Severity.HIGH),
        ("warning", Severity.MEDIUM),
        ("note", Severity.LOW),
        ("none", Severity.INFO),
    ],
)
def test_sarif_level_mapping(tmp_path: Path, level: str, severity: Severity) -> None:
    document = sarif([result(level=level)])
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.severity is severity


def test_sarif_default_configuration_level(tmp_path: Path) -> None:
    rules = [{"id": "R1", "defaultConfiguration": {"level": "error"}}]
    document = sarif([result("R1")], rules=rules)
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.severity is Severity.HIGH


def test_sarif_pass_and_suppressed_skipped(tmp_path: Path) -> None:
    document = sarif(
        [
            result(kind="pass"),
            result(kind="notApplicable"),
            result(baselineState="absent"),
            result(suppressions=[{"kind": "external", "status": "accepted"}]),
            result(suppressions=[{"kind": "external", "status": "rejected"}]),
        ]
    )
    report = one(import_report(write(tmp_path, "s.sarif", document)))
    assert report.skipped == 4
    assert len(report.findings) == 1


def test_sarif_in_source_suppression_kept(tmp_path: Path) -> None:
    document = sarif([result(suppressions=[{"kind": "inSource"}])])
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.details["suppressed_in_source"] is True
    assert "suppressed in the source" in found.message


def test_sarif_message_template(tmp_path: Path) -> None:
    rules = [{"id": "R1", "messageStrings": {"default": {"text": "Call of {0} with {1}."}}}]
    message = {"id": "default", "arguments": ["eval", "user input"]}
    document = sarif([{"ruleId": "R1", "message": message}], rules=rules)
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.message.endswith("Call of eval with user input.")


def test_sarif_nested_artifact_location(tmp_path: Path) -> None:
    document = sarif([{"ruleId": "R1", "message": {"text": "m"}}])
    run = document["runs"][0]
    run["artifacts"] = [
        {"location": {"uri": "model.zip"}},
        {"location": {"uri": "/inner/data.pkl"}, "parentIndex": 0},
    ]
    location = {"physicalLocation": {"artifactLocation": {"index": 1}}}
    run["results"][0]["locations"] = [location]
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.file == "model.zip:inner/data.pkl"


def test_sarif_absolute_uri_made_relative(tmp_path: Path) -> None:
    artifact = tmp_path / "model"
    artifact.mkdir()
    uri = (artifact / "sub dir" / "x.py").as_uri()
    document = sarif([result(locations=[{"physicalLocation": {"artifactLocation": {"uri": uri}}}])])
    reports = import_report(write(tmp_path, "s.sarif", document), artifact=artifact)
    assert one(reports).findings[0].file == "sub dir/x.py"


def test_sarif_byte_offset(tmp_path: Path) -> None:
    physical = {"artifactLocation": {"uri": "m.bin"}, "region": {"byteOffset": 77}}
    document = sarif([result(locations=[{"physicalLocation": physical}])])
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert found.offset == 77


def test_sarif_no_location_uses_artifact(tmp_path: Path) -> None:
    artifact = tmp_path / "model"
    artifact.mkdir()
    document = sarif([result(locations=[])])
    found = one(import_report(write(tmp_path, "s.sarif", document), artifact=artifact)).findings[0]
    assert found.file == "model"


def test_sarif_runs_per_tool(tmp_path: Path) -> None:
    document = sarif([result()])
    document["runs"].append({"tool": {"driver": {"name": "Bandit"}}, "results": [result("B102")]})
    reports = import_report(write(tmp_path, "s.sarif", document))
    assert [r.check for r in reports] == ["import:semgrep-oss@1.101.0", "import:bandit@unknown"]


def test_sarif_wrong_version(tmp_path: Path) -> None:
    document = sarif([result()])
    document["version"] = "2.0.0"
    with pytest.raises(ReportError, match=r"only SARIF 2\.1\.0"):
        import_report(write(tmp_path, "s.sarif", document))


def test_sarif_missing_driver_name(tmp_path: Path) -> None:
    document = {"version": "2.1.0", "runs": [{"tool": {"driver": {}}, "results": []}]}
    with pytest.raises(ReportError, match=r"runs\[0\]\.tool\.driver\.name is missing"):
        import_report(write(tmp_path, "s.sarif", document))


def test_sarif_bad_level(tmp_path: Path) -> None:
    document = sarif([result(level="fatal")])
    with pytest.raises(ReportError, match=r"results\[0\]\.level is 'fatal'"):
        import_report(write(tmp_path, "s.sarif", document))


# Trivy


def test_trivy_cve_and_secret(data_dir: Path) -> None:
    report = one(import_report(data_dir / "trivy.json"))
    rules = by_rule(report)
    cve = rules["import.trivy.cve-2025-32434"]
    secret = rules["import.trivy.aws-access-key-id"]
    assert report.check == "import:trivy@0.58.2"
    assert cve.severity is Severity.CRITICAL
    assert cve.file == "requirements.txt"
    assert "2.6.0" in cve.remediation
    assert cve.details["package"] == "torch"
    assert secret.severity is Severity.CRITICAL
    assert secret.file == "train_config.yaml"
    assert secret.details["line"] == 4


def test_trivy_secret_match_not_copied(data_dir: Path) -> None:
    report = one(import_report(data_dir / "trivy.json"))
    secret = by_rule(report)["import.trivy.aws-access-key-id"]
    assert "access_key_id" not in json.dumps(secret.to_json())


def test_trivy_misconfigurations(tmp_path: Path) -> None:
    misconfigurations = [
        {
            "ID": "DS002",
            "Severity": "HIGH",
            "Status": "FAIL",
            "Title": "Image user is root",
            "Resolution": "Add 'USER <non root user name>' line to the Dockerfile",
            "CauseMetadata": {"StartLine": 1},
        },
        {"ID": "DS001", "Severity": "MEDIUM", "Status": "PASS"},
    ]
    document = {
        "SchemaVersion": 2,
        "Results": [{"Target": "Dockerfile", "Misconfigurations": misconfigurations}],
    }
    report = one(import_report(write(tmp_path, "t.json", document)))
    found = report.findings[0]
    assert len(report.findings) == 1
    assert report.skipped == 1
    assert found.rule == "import.trivy.ds002"
    assert found.severity is Severity.HIGH
    assert found.remediation.startswith("Add 'USER")
    assert found.details["line"] == 1


def test_trivy_unknown_severity_and_version(tmp_path: Path) -> None:
    vulnerability = {
        "VulnerabilityID": "GHSA-xxxx-yyyy-zzzz",
        "PkgName": "pkg",
        "Severity": "UNKNOWN",
    }
    document = {
        "SchemaVersion": 2,
        "ArtifactName": ".",
        "Results": [{"Target": "uv.lock", "Vulnerabilities": [vulnerability]}],
    }
    report = one(import_report(write(tmp_path, "t.json", document)))
    assert report.check == "import:trivy@unknown"
    assert report.findings[0].severity is Severity.MEDIUM
    assert report.findings[0].rule == "import.trivy.ghsa-xxxx-yyyy-zzzz"


def test_trivy_results_not_array(tmp_path: Path) -> None:
    document = {"SchemaVersion": 2, "Results": {"Target": "x"}}
    with pytest.raises(ReportError, match="Results must be an array"):
        import_report(write(tmp_path, "t.json", document))


# Files, bounds and hostile content


def test_missing_report(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"nope\.json does not exist"):
        import_report(tmp_path / "nope.json")


def test_directory_report(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="is not a regular file"):
        import_report(tmp_path)


def test_not_json(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"bad\.json is not valid JSON"):
        import_report(write(tmp_path, "bad.json", "{not json"))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ReportError, match="is not UTF-8"):
        import_report(path)


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="is not a format attestgate imports"):
        import_report(write(tmp_path, "other.json", {"findings": []}))


def test_size_limit(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(ReportError, match="larger than 100 bytes"):
        import_report(data_dir / "trivy.json", limits=ImportLimits(max_file_bytes=100))


def test_result_limit(tmp_path: Path) -> None:
    document = sarif([result() for _ in range(5)])
    with pytest.raises(ReportError, match="more than 3 results"):
        import_report(write(tmp_path, "s.sarif", document), limits=ImportLimits(max_results=3))


def test_deep_nesting(tmp_path: Path) -> None:
    text = '{"version": "2.1.0", "runs": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ReportError, match=r"deep\.json"):
        import_report(write(tmp_path, "deep.json", text))


def test_huge_integer(tmp_path: Path) -> None:
    text = '{"SchemaVersion": ' + "9" * 10_000 + ', "Results": []}'
    with pytest.raises(ReportError, match=r"huge\.json"):
        import_report(write(tmp_path, "huge.json", text))


def test_long_strings_cut(tmp_path: Path) -> None:
    document = sarif([result(message={"text": "x" * 100_000})])
    limits = ImportLimits(max_text=200)
    found = one(import_report(write(tmp_path, "s.sarif", document), limits=limits)).findings[0]
    assert len(found.message) < 400


def test_control_characters_removed(tmp_path: Path) -> None:
    document = sarif([result(message={"text": "ok\x1b[2J\x1b]0;owned\x07\nnext\u202eline"})])
    found = one(import_report(write(tmp_path, "s.sarif", document))).findings[0]
    assert "\x1b" not in found.message
    assert "\n" not in found.message
    assert "\u202e" not in found.message


def test_import_reports_and_checks(data_dir: Path) -> None:
    paths = [data_dir / "bandit.sarif", data_dir / "trivy.json", data_dir / "bandit.sarif"]
    checks = {c.name: c for c in imported_checks(import_reports(paths))}
    assert set(checks) == {"import:bandit@1.7.10", "import:trivy@0.58.2"}
    assert checks["import:bandit@1.7.10"].files == 2


def test_clean_text_limit() -> None:
    assert clean_text("abcdef", 4) == "abc…"


@pytest.mark.parametrize(
    ("tool", "rule", "expected"),
    [
        ("Bandit", "B307", "import.bandit.b307"),
        ("Trivy", "CVE-2025-32434", "import.trivy.cve-2025-32434"),
        ("CodeQL", "py/unsafe-deserialization", "import.codeql.py-unsafe-deserialization"),
        ("x", "..--..", "import.x.unknown"),
        ("", "_R1_", "import.unknown-tool.r1"),
    ],
)
def test_import_rule(tool: str, rule: str, expected: str) -> None:
    assert import_rule(tool, rule) == expected


@given(st.text(max_size=80), st.text(max_size=200))
def test_import_rule_always_valid(tool: str, rule: str) -> None:
    assert RULE_ID.match(import_rule(tool, rule))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
_KEYS = [
    "version",
    "runs",
    "tool",
    "driver",
    "name",
    "results",
    "SchemaVersion",
    "Results",
    "summary",
    "modelscan_version",
    "issues",
    "errors",
    "Vulnerabilities",
    "Secrets",
    "locations",
    "physicalLocation",
    "artifactLocation",
    "uri",
    "level",
    "message",
    "text",
]


def _shaped() -> st.SearchStrategy[Any]:
    leaf = (
        st.none()
        | st.integers()
        | st.text(max_size=10)
        | st.sampled_from(["2.1.0", "error", "HIGH"])
    )
    return st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from(_KEYS), children, max_size=5)
        ),
        max_leaves=40,
    )


def _check_import(path: Path) -> None:
    """Assert that importing ``path`` yields valid findings or a ReportError naming it."""
    try:
        reports = import_report(path)
    except ReportError as exc:
        assert path.name in str(exc)
        return
    for report in reports:
        for found in report.findings:
            assert RULE_ID.match(found.rule)
            assert found.remediation


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _replace(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return document


_SAMPLES = ["modelscan-report.json", "bandit.sarif", "trivy.json"]
_FUZZ = settings(
    max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_FUZZ
@given(document=_JSON | _shaped())
def test_random_documents_import_or_raise(tmp_path: Path, document: Any) -> None:
    _check_import(write(tmp_path, "fuzz.json", json.dumps(document)))


@_FUZZ
@given(sample=st.sampled_from(_SAMPLES), data=st.data())
def test_mutated_reports_import_or_raise(
    tmp_path: Path, data_dir: Path, sample: str, data: st.DataObject
) -> None:
    document = json.loads((data_dir / sample).read_text())
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(_paths(document)))
        document = _replace(document, path, data.draw(_JSON))
    _check_import(write(tmp_path, "mutated.json", json.dumps(document)))
