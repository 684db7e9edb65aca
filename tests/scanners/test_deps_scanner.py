"""Tests for the requirements and lock-file scanners."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.deps import config
from attestgate.findings import CHECK_FAILED, Finding, Severity
from attestgate.identify.formats import Format
from attestgate.pipeline import admit, inspect
from attestgate.scanners import deps_scanner, open_scanner, scan_bytes
from attestgate.scanners.deps_scanner import LockFileScanner, RequirementsScanner
from attestgate.scanners.interface import ScanContext, ScanResult

DATA = Path(__file__).resolve().parent.parent / "deps" / "data"
CLEAN = DATA / "clean"
RISKY = DATA / "risky"
HASH = "c" * 64
LOCK_NAMES = ["pylock.toml", "uv.lock", "poetry.lock", "Pipfile.lock", "environment.yml"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in (
        config.OSV_DB_VARIABLE,
        config.INTERNAL_PACKAGES_VARIABLE,
        config.PUBLIC_INDEX_VARIABLE,
    ):
        monkeypatch.delenv(variable, raising=False)
    config.clear_cache()
    yield
    config.clear_cache()


def osv_records() -> list[dict[str, Any]]:
    vulnerable = {
        "id": "PYSEC-2024-0001",
        "aliases": ["CVE-2024-00001"],
        "summary": "examplepkg deserializes untrusted input",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "examplepkg"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.2.0"}]}
                ],
            }
        ],
    }
    malicious = {
        "id": "MAL-2024-1234",
        "summary": "Malicious code in torch-utilsx (PyPI)",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "torch-utilsx"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            }
        ],
    }
    return [vulnerable, malicious]


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    osv = tmp_path / "osv"
    osv.mkdir()
    for record in osv_records():
        (osv / f"{record['id']}.json").write_text(json.dumps(record))
    internal = tmp_path / "internal.txt"
    internal.write_text("acme-utils\nacme-models\n")
    public = tmp_path / "public.json"
    public.write_text(
        json.dumps({"meta": {"api-version": "1.0"}, "projects": [{"name": "acme_utils"}]})
    )
    monkeypatch.setenv(config.OSV_DB_VARIABLE, str(osv))
    monkeypatch.setenv(config.INTERNAL_PACKAGES_VARIABLE, str(internal))
    monkeypatch.setenv(config.PUBLIC_INDEX_VARIABLE, str(public))


def scan(name: str, content: str | bytes, chunk: int = 0) -> ScanResult:
    data = content.encode() if isinstance(content, str) else content
    ctx = ScanContext(name, len(data))
    if not chunk:
        return scan_bytes(data, ctx, name)[1]
    scanner = open_scanner(Format.TEXT, ctx)
    assert scanner is not None
    for start in range(0, len(data), chunk):
        scanner.feed(memoryview(data[start : start + chunk]))
    return scanner.close()


def scan_file(path: Path) -> ScanResult:
    return scan(path.name, path.read_bytes())


def rules(result: ScanResult) -> dict[str, Severity]:
    """Map each rule to its worst severity in the result."""
    found: dict[str, Severity] = {}
    for finding in result.findings:
        found[finding.rule] = max(found.get(finding.rule, Severity.INFO), finding.severity)
    return found


def only(result: ScanResult, rule: str) -> list[Finding]:
    return [f for f in result.findings if f.rule == rule]


# Routing


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("requirements.txt", "RequirementsScanner"),
        ("requirements-dev.txt", "RequirementsScanner"),
        ("requirements.in", "RequirementsScanner"),
        ("constraints.txt", "RequirementsScanner"),
        ("pylock.toml", "LockFileScanner"),
        ("pylock.gpu.toml", "LockFileScanner"),
        ("uv.lock", "LockFileScanner"),
        ("poetry.lock", "LockFileScanner"),
        ("environment.yml", "LockFileScanner"),
    ],
)
def test_routing_by_name(name: str, expected: str) -> None:
    scanner = open_scanner(Format.TEXT, ScanContext(f"model.zip:sub/{name}", 10))
    assert type(getattr(scanner, "inner", None)).__name__ == expected


def test_pipfile_lock_runs_with_json_scanner() -> None:
    scanner = open_scanner(Format.JSON, ScanContext("Pipfile.lock", 10))
    assert scanner is not None
    assert "deps" in scanner.check.split("+")


# Clean files of every format


@pytest.mark.parametrize("path", sorted(CLEAN.iterdir()), ids=lambda p: p.name)
def test_clean_file_has_no_findings(path: Path) -> None:
    assert scan_file(path).findings == []


@pytest.mark.parametrize("path", sorted(CLEAN.iterdir()), ids=lambda p: p.name)
def test_clean_file_with_configuration(path: Path, configured: None) -> None:
    assert scan_file(path).findings == []


def test_clean_requirements_facts() -> None:
    facts = scan_file(CLEAN / "requirements.txt").facts["dependencies"]
    assert facts["count"] == 6
    assert facts["pinned"] == 6
    assert facts["hashed"] == 6


def test_chunked_feed_same_result() -> None:
    data = (RISKY / "requirements-vcs.txt").read_bytes()
    whole = scan("requirements.txt", data)
    chunked = scan("requirements.txt", data, chunk=7)
    assert [f.to_json() for f in chunked.findings] == [f.to_json() for f in whole.findings]


# Requirements files


def test_extra_index_url_is_high() -> None:
    result = scan_file(RISKY / "requirements-extra-index.txt")
    assert rules(result)["deps.multiple-indexes"] is Severity.HIGH


def test_extra_index_lists_sources() -> None:
    finding = only(scan_file(RISKY / "requirements-extra-index.txt"), "deps.multiple-indexes")[0]
    assert finding.details["indexes"] == [
        "https://pypi.org/simple",
        "https://download.pytorch.org/whl/cpu",
    ]


def test_extra_index_alone_counts_pypi() -> None:
    result = scan("requirements.txt", "--extra-index-url https://x.example/simple\nnumpy==1.0\n")
    assert rules(result)["deps.multiple-indexes"] is Severity.HIGH


def test_find_links_with_index_is_high() -> None:
    text = "-f https://download.pytorch.org/whl/torch_stable.html\ntorch==2.3.1\n"
    assert rules(scan("requirements.txt", text))["deps.multiple-indexes"] is Severity.HIGH


def test_single_private_index_not_multiple() -> None:
    text = "--index-url https://pypi.acme.example/simple\nnumpy==1.0 --hash=sha256:" + HASH
    assert "deps.multiple-indexes" not in rules(scan("requirements.txt", text))


def test_no_index_with_one_folder() -> None:
    text = f"--no-index\n--find-links ./wheels\nnumpy==1.0 --hash=sha256:{HASH}\n"
    assert scan("requirements.txt", text).findings == []


def test_index_credentials_redacted() -> None:
    text = "--index-url https://user:s3cr3t@pypi.acme.example/simple\n--extra-index-url https://pypi.org/simple\n"
    result = scan("requirements.txt", text)
    dumped = json.dumps([f.to_json() for f in result.findings] + [result.facts])
    assert "s3cr3t" not in dumped
    assert "https://pypi.acme.example/simple" in dumped


def test_plain_http_index_is_high() -> None:
    text = f"--index-url http://pypi.acme.example/simple\nnumpy==1.0 --hash=sha256:{HASH}\n"
    assert rules(scan("requirements.txt", text))["deps.insecure-index"] is Severity.HIGH


def test_trusted_host_is_medium() -> None:
    text = f"--trusted-host pypi.acme.example\nnumpy==1.0 --hash=sha256:{HASH}\n"
    assert rules(scan("requirements.txt", text))["deps.trusted-host"] is Severity.MEDIUM


def test_unpinned_is_one_medium_finding() -> None:
    result = scan("requirements.txt", "numpy\nscipy>=1.10\npandas==2.*\ntorch==2.3.1\n")
    findings = only(result, "deps.unpinned")
    assert len(findings) == 1
    assert findings[0].severity is Severity.MEDIUM
    assert findings[0].details["count"] == 3


def test_unpinned_input_file_is_low() -> None:
    result = scan("requirements.in", "numpy\ntransformers>=4.40\n")
    assert rules(result) == {"deps.unpinned": Severity.LOW}


def test_unpinned_constraints_file_is_low() -> None:
    result = scan("constraints.txt", "urllib3<3\n")
    assert rules(result) == {"deps.unpinned": Severity.LOW}


def test_missing_hash_all_unhashed_is_low() -> None:
    result = scan("requirements.txt", "numpy==1.26.4\ntorch==2.3.1\n")
    assert rules(result) == {"deps.missing-hash": Severity.LOW}


def test_missing_hash_in_hash_mode_is_medium() -> None:
    text = f"numpy==1.26.4 --hash=sha256:{HASH}\ntorch==2.3.1\n"
    finding = only(scan("requirements.txt", text), "deps.missing-hash")[0]
    assert finding.severity is Severity.MEDIUM
    assert finding.details["requirements"][0]["name"] == "torch"


def test_require_hashes_flag_is_medium() -> None:
    result = scan("requirements.txt", "--require-hashes\nnumpy==1.26.4\n")
    assert rules(result)["deps.missing-hash"] is Severity.MEDIUM


def test_input_file_without_hashes_not_reported() -> None:
    assert scan("requirements.in", "numpy==1.26.4\n").findings == []


@pytest.mark.parametrize(
    ("line", "severity"),
    [
        ("git+https://github.com/huggingface/peft.git@v0.11.1#egg=peft", Severity.HIGH),
        (f"lib @ git+https://github.com/o/lib.git@{'a' * 40}", Severity.MEDIUM),
        (f"lib @ git+http://git.example.com/lib.git@{'a' * 40}", Severity.HIGH),
        (f"lib @ git://git.example.com/lib.git@{'a' * 40}", Severity.HIGH),
        ("-e git+ssh://git@github.com/acme/tools.git@main#egg=tools", Severity.HIGH),
        ("lib @ git+https://github.com/o/lib.git", Severity.HIGH),
    ],
)
def test_vcs_requirements(line: str, severity: Severity) -> None:
    assert rules(scan("requirements.txt", line + "\n"))["deps.vcs-requirement"] is severity


@pytest.mark.parametrize(
    ("line", "severity"),
    [
        ("https://files.example.com/fancy_pkg-1.0.0-py3-none-any.whl", Severity.MEDIUM),
        ("pkg @ http://mirror.example.com/pkg-2.0.tar.gz", Severity.HIGH),
        ("-e ./src/localpkg", Severity.MEDIUM),
        ("pkg @ file:///opt/wheels/pkg-1.0-py3-none-any.whl", Severity.MEDIUM),
    ],
)
def test_direct_url_requirements(line: str, severity: Severity) -> None:
    assert rules(scan("requirements.txt", line + "\n"))["deps.direct-url"] is severity


def test_vcs_file_findings() -> None:
    result = scan_file(RISKY / "requirements-vcs.txt")
    assert len(only(result, "deps.vcs-requirement")) == 4
    assert len(only(result, "deps.direct-url")) == 3


def test_nested_reference_is_info() -> None:
    finding = only(scan_file(RISKY / "requirements-vcs.txt"), "deps.nested-requirements")[0]
    assert finding.severity is Severity.INFO
    assert finding.details["target"] == "requirements/base.txt"


def test_nested_url_reference_is_medium() -> None:
    result = scan("requirements.txt", "-r https://example.invalid/base.txt\n")
    assert rules(result)["deps.nested-requirements"] is Severity.MEDIUM


def test_malformed_lines_are_medium() -> None:
    result = scan("requirements.txt", "numpy==1.0 --hash=sha256:" + HASH + "\nthis is not valid!\n")
    finding = only(result, "deps.malformed")[0]
    assert finding.severity is Severity.MEDIUM
    assert finding.details["problems"][0].startswith("line 2:")


def test_invalid_utf8_is_malformed() -> None:
    result = scan("requirements.txt", b"numpy==1.0 --hash=sha256:" + HASH.encode() + b"\n\xff\n")
    assert rules(result)["deps.malformed"] is Severity.MEDIUM


def test_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps_scanner, "MAX_DEPS_FILE_BYTES", 64)
    result = scan("requirements.txt", "numpy==1.0\n" * 20)
    assert rules(result) == {"deps.too-large": Severity.MEDIUM}


def test_expired_budget_reported() -> None:
    ctx = ScanContext("requirements.txt", None, deadline=1.0)
    scanner = RequirementsScanner(ctx, Format.TEXT)
    scanner.feed(memoryview(f"numpy==1.0 --hash=sha256:{HASH}\n".encode()))
    assert rules(scanner.close()) == {"deps.check-incomplete": Severity.MEDIUM}


# Names: typosquats, internal names, OSV


@pytest.mark.parametrize("name", ["torhc", "transfomers", "numpyy"])
def test_typosquat_is_high(name: str) -> None:
    result = scan("requirements.txt", f"{name}==1.0 --hash=sha256:{HASH}\n")
    finding = only(result, "deps.typosquat")[0]
    assert finding.severity is Severity.HIGH
    assert finding.details["requirement"]["line"] == 1


def test_normalized_name_not_typosquat() -> None:
    result = scan("requirements.txt", f"scikit_learn==1.5.0 --hash=sha256:{HASH}\n")
    assert result.findings == []


def test_internal_name_public_is_high(configured: None) -> None:
    text = "acme_utils==1.4.0\nacme-models==2.0\n"
    findings = only(scan("requirements.txt", text), "deps.internal-name-public")
    assert [f.details["requirement"]["name"] for f in findings] == ["acme_utils"]
    assert findings[0].severity is Severity.HIGH


def test_internal_name_hashed_low(configured: None) -> None:
    text = f"acme_utils==1.4.0 --hash=sha256:{HASH}\n"
    finding = only(scan("requirements.txt", text), "deps.internal-name-public")[0]
    assert finding.severity is Severity.LOW
    assert "pinned to 1.4.0 with hashes" in finding.message


def test_known_vulnerable_is_high(configured: None) -> None:
    result = scan("requirements.txt", f"examplepkg==1.1.0 --hash=sha256:{HASH}\n")
    finding = only(result, "deps.known-vulnerable")[0]
    assert finding.severity is Severity.HIGH
    assert finding.details["advisories"] == ["PYSEC-2024-0001"]
    assert finding.details["aliases"] == ["CVE-2024-00001"]


def test_fixed_version_not_vulnerable(configured: None) -> None:
    result = scan("requirements.txt", f"examplepkg==1.2.0 --hash=sha256:{HASH}\n")
    assert result.findings == []


def test_known_malicious_is_critical(configured: None) -> None:
    result = scan("requirements.txt", f"torch-utilsx==0.0.3 --hash=sha256:{HASH}\n")
    assert rules(result)["deps.known-malicious"] is Severity.CRITICAL


def test_malicious_unpinned_still_critical(configured: None) -> None:
    result = scan("requirements.in", "torch_utilsx\n")
    assert rules(result)["deps.known-malicious"] is Severity.CRITICAL


def test_unpinned_vulnerability_unchecked(configured: None) -> None:
    result = scan("requirements.txt", "examplepkg>=1.0\n")
    finding = only(result, "deps.vulnerability-unchecked")[0]
    assert finding.severity is Severity.LOW
    assert finding.details["advisories_per_package"] == {"examplepkg": 1}


def test_missing_database_is_config_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.OSV_DB_VARIABLE, str(tmp_path / "absent"))
    result = scan("requirements.txt", f"numpy==1.0 --hash=sha256:{HASH}\n")
    assert rules(result) == {"deps.config-invalid": Severity.MEDIUM}


# Lock files


def test_risky_pylock(configured: None) -> None:
    assert rules(scan_file(RISKY / "pylock.toml")) == {
        "deps.multiple-indexes": Severity.HIGH,
        "deps.insecure-index": Severity.HIGH,
        "deps.missing-hash": Severity.MEDIUM,
        "deps.vcs-requirement": Severity.MEDIUM,
        "deps.known-vulnerable": Severity.HIGH,
    }


def test_risky_uv_lock() -> None:
    assert rules(scan_file(RISKY / "uv.lock")) == {
        "deps.multiple-indexes": Severity.HIGH,
        "deps.missing-hash": Severity.MEDIUM,
        "deps.vcs-requirement": Severity.MEDIUM,
    }


def test_uv_lock_project_not_reported() -> None:
    result = scan_file(RISKY / "uv.lock")
    assert all("model-server" not in f.message for f in result.findings)


def test_risky_poetry_lock(configured: None) -> None:
    assert rules(scan_file(RISKY / "poetry.lock")) == {
        "deps.multiple-indexes": Severity.HIGH,
        "deps.missing-hash": Severity.MEDIUM,
        "deps.internal-name-public": Severity.LOW,
        "deps.known-vulnerable": Severity.HIGH,
        "deps.known-malicious": Severity.CRITICAL,
    }


def test_risky_pipfile_lock(configured: None) -> None:
    assert rules(scan_file(RISKY / "Pipfile.lock")) == {
        "deps.multiple-indexes": Severity.HIGH,
        "deps.insecure-index": Severity.HIGH,
        "deps.missing-hash": Severity.MEDIUM,
        "deps.vcs-requirement": Severity.HIGH,
        "deps.typosquat": Severity.HIGH,
        "deps.internal-name-public": Severity.LOW,
    }


def test_risky_environment(configured: None) -> None:
    assert rules(scan_file(RISKY / "environment.yml")) == {
        "deps.insecure-index": Severity.HIGH,
        "deps.unpinned": Severity.MEDIUM,
        "deps.multiple-indexes": Severity.HIGH,
        "deps.missing-hash": Severity.LOW,
        "deps.internal-name-public": Severity.HIGH,
    }


def test_environment_pip_section_named() -> None:
    finding = only(scan_file(RISKY / "environment.yml"), "deps.multiple-indexes")[0]
    assert finding.message.startswith("the pip section of environment.yml")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("pylock.toml", "lock-version = \n"),
        ("uv.lock", "[[package]\nname = 1"),
        ("poetry.lock", b"\xff\xfe"),
        ("Pipfile.lock", '{"_meta": '),
        ("Pipfile.lock", "[1, 2]"),
        ("environment.yml", "dependencies: [unclosed"),
        ("environment.yml", "just a string"),
    ],
)
def test_malformed_lock_is_medium(name: str, content: str | bytes) -> None:
    assert rules(scan(name, content))["deps.malformed"] is Severity.MEDIUM


def test_pylock_without_sources_is_malformed() -> None:
    text = 'lock-version = "1.0"\ncreated-by = "x"\n[[packages]]\nname = "numpy"\nversion = "1.0"\n'
    assert rules(scan("pylock.toml", text))["deps.malformed"] is Severity.MEDIUM


def test_deep_toml_nesting_is_malformed() -> None:
    text = "a = " + "[" * 5000 + "]" * 5000 + "\n"
    assert rules(scan("uv.lock", text))["deps.malformed"] is Severity.MEDIUM


def test_yaml_alias_bomb_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    lines.append("dependencies: *a29")
    result = scan("environment.yml", "\n".join(lines) + "\n")
    assert rules(result)["deps.malformed"] is Severity.MEDIUM


def test_poetry_legacy_metadata_files() -> None:
    text = (
        '[[package]]\nname = "requests"\nversion = "2.32.3"\n'
        f'[metadata]\nlock-version = "1.1"\n[metadata.files]\nrequests = [\n'
        f'    {{file = "requests-2.32.3.tar.gz", hash = "sha256:{HASH}"}},\n]\n'
    )
    assert scan("poetry.lock", text).findings == []


@pytest.mark.parametrize("name", LOCK_NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_fuzz_lock_bytes_never_raise(name: str, data: bytes) -> None:
    scanner = LockFileScanner(ScanContext(name, len(data)), Format.TEXT)
    scanner.feed(memoryview(data))
    result = scanner.close()
    assert all(f.rule != CHECK_FAILED for f in result.findings)


KEYS = st.sampled_from(
    [
        "name",
        "version",
        "package",
        "packages",
        "source",
        "registry",
        "git",
        "url",
        "path",
        "directory",
        "editable",
        "virtual",
        "wheels",
        "sdist",
        "hash",
        "hashes",
        "index",
        "vcs",
        "commit-id",
        "archive",
        "files",
        "file",
        "type",
        "reference",
        "metadata",
        "_meta",
        "sources",
        "verify_ssl",
        "default",
        "develop",
        "dependencies",
        "pip",
        "channels",
        "lock-version",
        "sha256",
    ]
)
SCALARS = (
    st.booleans()
    | st.integers(min_value=-5, max_value=5)
    | st.sampled_from(["", "0", "1.0", "==1.0", "https://x.example/s", "http://h", "sha256:ab"])
    | st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), max_size=8)
)
DOCUMENTS = st.dictionaries(
    KEYS,
    st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4)
        ),
        max_leaves=20,
    ),
    max_size=6,
)


def to_toml(value: Any) -> str:
    """Write a value as TOML; tables become inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {to_toml(v)}" for k, v in value.items()) + "}"


def serialize(name: str, document: dict[str, Any]) -> bytes:
    if name.endswith((".toml", ".lock")) and name != "Pipfile.lock":
        lines = [f"{json.dumps(key)} = {to_toml(value)}" for key, value in document.items()]
        return "\n".join(lines).encode()
    # JSON is also YAML, so the same text serves Pipfile.lock and environment.yml.
    return json.dumps(document, ensure_ascii=False).encode()


@pytest.mark.parametrize("name", LOCK_NAMES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_fuzz_lock_structure_never_raises(name: str, document: dict[str, Any]) -> None:
    data = serialize(name, document)
    scanner = LockFileScanner(ScanContext(name, len(data)), Format.TEXT)
    scanner.feed(memoryview(data))
    result = scanner.close()
    assert all(f.rule != "deps.malformed" or "not valid" not in f.message for f in result.findings)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300))
def test_fuzz_requirements_scanner_never_raises(text: str) -> None:
    scanner = RequirementsScanner(ScanContext("requirements.txt", None), Format.TEXT)
    scanner.feed(memoryview(text.encode("utf-8", errors="surrogatepass")))
    scanner.close()


# Through the pipeline


def test_inspect_reports_extra_index(tmp_path: Path) -> None:
    artifact = tmp_path / "model"
    artifact.mkdir()
    shutil.copy(RISKY / "requirements-extra-index.txt", artifact / "requirements.txt")
    (artifact / "README.md").write_text("A model.\n")
    findings = inspect(artifact).findings
    hits = [f for f in findings if f.rule == "deps.multiple-indexes"]
    assert hits[0].file == "requirements.txt"
    assert hits[0].severity is Severity.HIGH


def test_admit_blocks_extra_index(tmp_path: Path) -> None:
    artifact = tmp_path / "model"
    artifact.mkdir()
    shutil.copy(RISKY / "requirements-extra-index.txt", artifact / "requirements.txt")
    admission = admit(artifact, stage="deployment", home=tmp_path / "home")
    assert admission.action == "block"
    rules_in_record = {f["rule"] for f in admission.record["findings"]}
    assert "deps.multiple-indexes" in rules_in_record
