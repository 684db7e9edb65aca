"""Secret detection: verified formats, look-alikes, placeholders, and what findings reveal."""

from __future__ import annotations

import json

import pytest

from attestgate.findings import Severity
from attestgate.intake.secrets import (
    entropy,
    find_secrets,
    github_checksum_ok,
    is_library_fixture,
    secret_finding,
)

from . import secrets_data


def kinds(data: bytes, path: str = "/app/settings.py") -> dict[str, list]:
    found: dict[str, list] = {}
    for match in find_secrets(data, path):
        found.setdefault(match.kind, []).append(match)
    return found


def finding_text(finding) -> str:
    return json.dumps(finding.to_json())


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (secrets_data.hf_token, "hf-token"),
        (secrets_data.aws_key_id, "aws-access-key"),
        (secrets_data.github_token, "github-token"),
    ],
)
def test_token_formats_verified(make, kind) -> None:
    value = make()
    found = kinds(f'TOKEN = "{value}"\n'.encode())
    assert kind in found
    assert found[kind][0].verified
    assert found[kind][0].severity is Severity.CRITICAL


def test_github_bad_checksum_low() -> None:
    value = secrets_data.github_token(valid=False)
    match = kinds(value.encode())["github-token"][0]
    assert not match.verified
    assert match.severity is Severity.LOW


def test_github_checksum_function() -> None:
    assert github_checksum_ok(secrets_data.github_token())
    assert not github_checksum_ok(secrets_data.github_token(valid=False))


def test_hf_placeholder_skipped() -> None:
    assert "hf-token" not in kinds(b"token = hf_" + b"x" * 34)


def test_hf_token_inside_identifier_skipped() -> None:
    assert "hf-token" not in kinds(b"my_hf_" + secrets_data.hf_token()[3:].encode())


def test_aws_documentation_key_skipped() -> None:
    assert "aws-access-key" not in kinds(b"aws_access_key_id = AKIA" + b"IOSFODNN7EXAMPLE")


def test_aws_secret_key_with_label() -> None:
    data = f"aws_secret_access_key = {secrets_data.aws_secret_key()}\n".encode()
    assert kinds(data)["aws-secret-key"][0].verified


def test_azure_connection_string() -> None:
    found = kinds(secrets_data.azure_connection_string().encode())
    assert found["azure-storage-key"][0].verified


def test_azurite_development_key_skipped() -> None:
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    data = f"AccountName=devstoreaccount1;AccountKey={key};".encode()
    assert "azure-storage-key" not in kinds(data)


def test_pem_private_key_verified() -> None:
    match = kinds(secrets_data.pem_private_key())["private-key"][0]
    assert match.verified
    assert match.severity is Severity.CRITICAL


def test_encrypted_pem_high() -> None:
    match = kinds(secrets_data.pem_private_key(encrypted=True))["private-key"][0]
    assert not match.verified
    assert match.severity is Severity.HIGH


def test_pem_placeholder_skipped() -> None:
    data = b"-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n"
    assert "private-key" not in kinds(data)


def test_pem_in_escaped_string_found() -> None:
    escaped = secrets_data.pem_private_key().decode().replace("\n", "\\n")
    assert "private-key" in kinds(f'KEY = "{escaped}"'.encode())


def test_gcp_service_account_reported_once() -> None:
    found = kinds(secrets_data.gcp_service_account(), "/app/sa.json")
    assert found["gcp-service-account"][0].verified
    assert "private-key" not in found


def test_gcp_source_code_mentions_skipped() -> None:
    data = b'if info["type"] == "service_account": key = info["private_key"]'
    assert "gcp-service-account" not in kinds(data)


def test_env_file_names_keys_only() -> None:
    data = b"DEBUG=true\nAPI_KEY=k9f8s7d6f5g4h3\nDB_PASSWORD=changeme\nexport AUTH_TOKEN='zx81-qw72-pp09'\n"
    match = kinds(data, "/app/.env")["env-file"][0]
    assert "API_KEY" in match.note
    assert "AUTH_TOKEN" in match.note
    assert "DB_PASSWORD" not in match.note
    assert "k9f8" not in match.note


def test_env_template_skipped() -> None:
    assert "env-file" not in kinds(b"API_KEY=k9f8s7d6f5g4h3\n", "/app/.env.example")


def test_hf_token_cache_without_token_format() -> None:
    found = kinds(b"not-a-known-format-value\n", "/root/.cache/huggingface/token")
    assert found["credential-file"][0].severity is Severity.HIGH


def test_docker_config_auth() -> None:
    data = json.dumps({"auths": {"registry.example": {"auth": "dXNlcjpwYXNzd29yZA=="}}}).encode()
    assert "credential-file" in kinds(data, "/root/.docker/config.json")


def test_finding_never_contains_value() -> None:
    token = secrets_data.hf_token()
    match = find_secrets(f"HF_TOKEN={token}\n".encode(), "/app/run.sh")[0]
    finding = secret_finding(match, "sha256:ab12cd34:/app/run.sh", "/app/run.sh")
    assert token not in finding_text(finding)
    assert token[4:] not in finding_text(finding)
    assert "37 characters" in finding.message
    assert finding.details["prefix"] == token[:4]


def test_library_fixture_lowered() -> None:
    path = "/usr/local/lib/python3.11/site-packages/somepkg/tests/data/key.pem"
    match = find_secrets(secrets_data.pem_private_key(), path)[0]
    finding = secret_finding(match, f"sha256:ab12cd34:{path}", path)
    assert finding.severity is Severity.LOW


def test_application_tests_not_lowered() -> None:
    assert not is_library_fixture("/app/tests/key.pem")


def test_entropy_orders_fillers_below_tokens() -> None:
    assert entropy(b"x" * 34) < entropy(secrets_data.hf_token()[3:].encode())


def test_large_buffer_not_searched() -> None:
    data = secrets_data.hf_token().encode() + b" " * (3 * 1024 * 1024)
    assert find_secrets(data) == []
