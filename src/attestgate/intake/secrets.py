"""Find credentials in image files and in the image config, without ever reporting them.

Each detector matches one credential format. A match whose strict format
holds (with its checksum, where the format has one) is *verified* and
becomes a ``secret.<kind>`` finding of CRITICAL severity, which the default
policy blocks. A match that only resembles a credential (an encrypted key,
a GitHub token whose checksum fails, a ``.env`` value) is HIGH or LOW.

A finding names the layer, the path and the line, the first characters
of the value (at most four, which for every format here is the public
prefix) and its length, and never the value itself. Known documentation
placeholders (AWS's ``...EXAMPLE`` keys, Azurite's development key) and
low-entropy fillers are skipped. Matches inside test-fixture folders of
installed libraries (Python's own test suite ships private keys) are LOW.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass

from attestgate.findings import Finding, Severity
from attestgate.intake.identity import SECRETS_CHECK

# Files larger than this are not searched; credential files are small.
MAX_SECRET_FILE_BYTES = 2 * 1024 * 1024
MAX_MATCHES_PER_FILE = 20
PREFIX_CHARS = 4
# Shannon entropy per character below which a token-shaped string is a filler
# such as "hf_xxxxxxxx..." rather than a generated secret.
MIN_TOKEN_ENTROPY = 3.0

# Cheap substring tests that gate the regular expressions.
_KEYWORDS = (
    b"hf_",
    b"AKIA",
    b"ASIA",
    b"aws_secret_access_key",
    b"PRIVATE KEY",
    b"service_account",
    b"AccountKey=",
    b"ghp_",
    b"gho_",
    b"ghu_",
    b"ghs_",
    b"ghr_",
    b"github_pat_",
)

_HF_TOKEN = re.compile(rb"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{34,128}(?![A-Za-z0-9])")
_AWS_KEY_ID = re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z2-7]{16}(?![A-Z0-9])")
_AWS_SECRET = re.compile(
    rb"(?i)aws_secret_access_key[\"']?\s*[=:]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
)
_GITHUB_CLASSIC = re.compile(rb"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])")
_GITHUB_FINE_GRAINED = re.compile(
    rb"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}(?![A-Za-z0-9])"
)
_AZURE_CONNECTION = re.compile(
    rb"AccountName=([a-z0-9]{3,24});\s*AccountKey=([A-Za-z0-9+/]{86}==)", re.IGNORECASE
)
_PEM = re.compile(
    rb"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----"
    rb"(.{0,65536}?)-----END \1-----",
    re.DOTALL,
)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Azurite's published development account key; it opens only a local emulator.
_AZURITE_KEY = (
    b"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_ENV_NAME = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$")
_SECRET_NAME = re.compile(
    r"(?i)(secret|token|passw(or)?d|pwd|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"credential|auth)"
)
_PLACEHOLDER = re.compile(
    r"(?i)^(|changeme|change_me|change-me|x+|\*+|<.*>|\$\{.*\}|\$\(.*\)|\$[A-Za-z_]\w*|"
    r"your[_-].*|example.*|none|null|nil|true|false|dummy|test|todo|redacted|placeholder|"
    r"secret|password|token)$"
)
# .env variants that are templates by convention.
_ENV_TEMPLATES = (".example", ".sample", ".template", ".dist", ".defaults", ".tmpl")
# Files whose mere content is a stored credential, by path suffix.
_CREDENTIAL_FILES: tuple[tuple[str, re.Pattern[bytes], str], ...] = (
    ("/.aws/credentials", re.compile(rb"(?im)^\s*aws_secret_access_key\s*="), "AWS credentials"),
    ("/.docker/config.json", re.compile(rb'"auth"\s*:\s*"[A-Za-z0-9+/=]{8,}"'), "registry login"),
    ("/.netrc", re.compile(rb"(?m)\bpassword\s+\S+"), "netrc login"),
    ("/.git-credentials", re.compile(rb"https?://[^:/\s]+:[^@\s]+@"), "Git credentials"),
    ("/.pypirc", re.compile(rb"(?im)^\s*password\s*[=:]\s*\S+"), "package index password"),
    ("/.npmrc", re.compile(rb"_authToken\s*=\s*\S+"), "npm token"),
    ("/huggingface/token", re.compile(rb"\S"), "Hugging Face token cache"),
    ("/huggingface/stored_tokens", re.compile(rb"(?m)^\s*hf_token\s*="), "Hugging Face tokens"),
)
# Folder names that hold test data, and roots under which an installed
# library (not the application) keeps them.
_TEST_FOLDERS = frozenset({"test", "tests", "testing", "testdata", "test_data", "fixtures"})
_LIBRARY_ROOT = re.compile(
    r"/(?:site-packages|dist-packages|node_modules)/|/usr/(?:local/)?lib/python3[^/]*/|"
    r"/usr/share/doc/|/usr/(?:local/)?(?:lib/)?go[^/]*/src/"
)


@dataclass(frozen=True)
class SecretMatch:
    """One credential found in a buffer, without any part of it beyond the public prefix."""

    kind: str
    description: str
    verified: bool
    severity: Severity
    line: int
    prefix: str
    length: int
    note: str = ""


def entropy(text: bytes) -> float:
    counts = Counter(text)
    total = len(text)
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def github_checksum_ok(token: str) -> bool:
    """Check a classic GitHub token: CRC32 of its 30 random characters, base62, 6 digits.

    This is the scheme GitHub announced for its 2021 token formats, as the
    base62-token.js library implements it: the last six characters encode
    the CRC32 of the 30 characters after the ``ghX_`` prefix, in the
    alphabet 0-9A-Za-z, left-padded with "0".
    """
    entropy_part, checksum = token[4:-6], token[-6:]
    value = zlib.crc32(entropy_part.encode("ascii")) & 0xFFFFFFFF
    digits = ""
    while value:
        value, remainder = divmod(value, 62)
        digits = _BASE62[remainder] + digits
    return digits.rjust(6, "0") == checksum


def is_library_fixture(path: str) -> bool:
    """Tell whether ``path`` is test data that an installed library or runtime ships."""
    if not _LIBRARY_ROOT.search(path):
        return False
    return any(part in _TEST_FOLDERS for part in path.split("/"))


def find_secrets(data: bytes, path: str = "") -> list[SecretMatch]:
    """Return the credentials in ``data``; ``path`` selects the checks for credential files."""
    if len(data) > MAX_SECRET_FILE_BYTES:
        return []
    matches: list[SecretMatch] = []
    if any(keyword in data for keyword in _KEYWORDS):
        matches.extend(_token_matches(data))
        matches.extend(_key_matches(data, matches))
    matches.extend(_file_matches(data, path, matches))
    return _dedupe(matches)[:MAX_MATCHES_PER_FILE]


def _line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _shown(value: bytes) -> tuple[str, int]:
    return value[:PREFIX_CHARS].decode("ascii", "replace"), len(value)


def _token_matches(data: bytes) -> list[SecretMatch]:
    found: list[SecretMatch] = []
    for match in _HF_TOKEN.finditer(data):
        value = match.group(0)
        if entropy(value[3:]) < MIN_TOKEN_ENTROPY:
            continue
        found.append(_match("hf-token", "Hugging Face access token", data, match.start(), value))
    for match in _AWS_KEY_ID.finditer(data):
        value = match.group(0)
        if value.endswith(b"EXAMPLE"):
            continue
        found.append(_match("aws-access-key", "AWS access key ID", data, match.start(), value))
    for match in _AWS_SECRET.finditer(data):
        value = match.group(1)
        if value.endswith(b"EXAMPLEKEY") or entropy(value) < MIN_TOKEN_ENTROPY:
            continue
        found.append(_match("aws-secret-key", "AWS secret access key", data, match.start(1), value))
    for match in _GITHUB_CLASSIC.finditer(data):
        value = match.group(0)
        if github_checksum_ok(value.decode("ascii")):
            found.append(_match("github-token", "GitHub token", data, match.start(), value))
        else:
            shown, length = _shown(value)
            found.append(
                SecretMatch(
                    "github-token",
                    "GitHub token",
                    False,
                    Severity.LOW,
                    _line(data, match.start()),
                    shown,
                    length,
                    "its checksum does not match, so it is probably a made-up example",
                )
            )
    for match in _GITHUB_FINE_GRAINED.finditer(data):
        found.append(
            _match("github-token", "GitHub fine-grained token", data, match.start(), match.group(0))
        )
    for match in _AZURE_CONNECTION.finditer(data):
        key = match.group(2)
        if key == _AZURITE_KEY or len(_b64(key) or b"") != 64:
            continue
        found.append(
            _match(
                "azure-storage-key",
                "Azure storage connection string",
                data,
                match.start(),
                key,
                shown_prefix="",
            )
        )
    return found


def _match(
    kind: str,
    description: str,
    data: bytes,
    offset: int,
    value: bytes,
    shown_prefix: str | None = None,
) -> SecretMatch:
    shown, length = _shown(value)
    return SecretMatch(
        kind,
        description,
        True,
        Severity.CRITICAL,
        _line(data, offset),
        shown if shown_prefix is None else shown_prefix,
        length,
    )


def _b64(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _pem_body(block: bytes) -> tuple[bytes | None, bool]:
    """Decode a PEM body; return (DER or None, whether headers mark it encrypted)."""
    encrypted = b"ENCRYPTED" in block
    lines = [
        line.strip()
        for line in block.replace(b"\\n", b"\n").splitlines()
        if line.strip() and b":" not in line and not line.strip().startswith(b"=")
    ]
    body = b"".join(lines).replace(b'"', b"").replace(b",", b"")
    return _b64(body), encrypted


def _key_matches(data: bytes, tokens: list[SecretMatch]) -> list[SecretMatch]:
    found: list[SecretMatch] = []
    service_account = _service_account(data)
    if service_account is not None:
        found.append(service_account)
    for match in _PEM.finditer(data):
        label = match.group(1).decode("ascii")
        der, encrypted = _pem_body(match.group(2))
        if der is None or len(der) < 32:
            continue  # a documentation snippet such as "MIIE...", not a key
        if label.startswith("OPENSSH"):
            if not der.startswith(b"openssh-key-v1\0"):
                continue
            encrypted = b"none" not in der[15:40]
        elif not label.startswith("PGP") and der[0] != 0x30:
            continue
        if service_account is not None and service_account.verified:
            continue  # the key inside the service-account file is reported with it
        encrypted = encrypted or label.startswith("ENCRYPTED")
        found.append(
            SecretMatch(
                "private-key",
                f"{label.lower()}",
                not encrypted,
                Severity.HIGH if encrypted else Severity.CRITICAL,
                _line(data, match.start()),
                "",
                len(match.group(0)),
                "it is encrypted, so using it also needs its passphrase" if encrypted else "",
            )
        )
    return found


def _service_account(data: bytes) -> SecretMatch | None:
    """Match a Google Cloud service-account key file: JSON with type, key and client email."""
    if b"service_account" not in data or b"private_key" not in data:
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("type") != "service_account":
        return None
    key = document.get("private_key")
    der = None
    if isinstance(key, str) and key.count("-----") >= 4:
        der, _ = _pem_body(key.encode("utf-8", "replace").split(b"-----")[2])
    verified = der is not None and der[:1] == b"\x30" and "@" in str(document.get("client_email"))
    return SecretMatch(
        "gcp-service-account",
        "Google Cloud service-account key",
        verified,
        Severity.CRITICAL if verified else Severity.HIGH,
        _line(data, data.find(b"service_account")),
        "",
        len(str(key)),
        "" if verified else "its private_key field does not hold a readable key",
    )


def _file_matches(data: bytes, path: str, earlier: list[SecretMatch]) -> list[SecretMatch]:
    found: list[SecretMatch] = []
    name = path.rsplit("/", 1)[-1]
    if name == ".env" or (name.startswith(".env.") and not name.endswith(_ENV_TEMPLATES)):
        keys = env_secret_names(data.decode("utf-8", "replace").splitlines())
        if keys:
            found.append(
                SecretMatch(
                    "env-file",
                    ".env file with secret values",
                    False,
                    Severity.HIGH,
                    0,
                    "",
                    len(keys),
                    f"it sets {', '.join(keys[:8])}",
                )
            )
    for suffix, pattern, description in _CREDENTIAL_FILES:
        if not path.endswith(suffix) or not pattern.search(data):
            continue
        if any(m.verified for m in earlier):
            continue  # the verified credential inside it is already reported
        found.append(
            SecretMatch("credential-file", description, False, Severity.HIGH, 0, "", len(data))
        )
    return found


def env_secret_names(lines: list[str]) -> list[str]:
    """Return the names of ``KEY=VALUE`` lines whose key names a secret and whose value is set."""
    names: list[str] = []
    for line in lines:
        match = _ENV_NAME.match(line.strip())
        if match is None:
            continue
        key, value = match.group(1), match.group(2).strip().strip("\"'")
        if _SECRET_NAME.search(key) and not _PLACEHOLDER.match(value) and len(value) >= 6:
            names.append(key)
    return names


def _dedupe(matches: list[SecretMatch]) -> list[SecretMatch]:
    seen: set[tuple[str, int, int]] = set()
    unique: list[SecretMatch] = []
    for match in matches:
        key = (match.kind, match.line, match.length)
        if key not in seen:
            seen.add(key)
            unique.append(match)
    return unique


_REMEDIATION = {
    "hf-token": "Revoke the token in the Hugging Face account's access-token settings now",
    "aws-access-key": "Deactivate and delete the access key in AWS IAM now",
    "aws-secret-key": "Deactivate and delete the access key in AWS IAM now",
    "github-token": "Revoke the token in GitHub's developer settings now",
    "azure-storage-key": "Rotate the storage account key in Azure now",
    "gcp-service-account": "Delete the service-account key in Google Cloud IAM now",
    "private-key": "Replace the key pair and revoke any certificate issued for it",
    "env-file": "Rotate every credential the file sets",
    "credential-file": "Rotate the credential the file stores",
}


def secret_finding(match: SecretMatch, location: str, path: str, **details: object) -> Finding:
    """Build the finding for ``match`` at ``location``; no part of the value enters it."""
    fixture = is_library_fixture(path)
    severity = Severity.LOW if fixture and match.severity > Severity.LOW else match.severity
    where = f"line {match.line} of {path}" if match.line else path
    shown = f"starts with {match.prefix!r}, " if match.prefix else ""
    unit = "settings" if match.kind == "env-file" else "characters"
    state = "a verified-format" if match.verified else "a possible"
    message = (
        f"{state} {match.description} is stored in {where} ({shown}{match.length} {unit}; "
        "the value is not shown)"
    )
    if match.note:
        message += f"; {match.note}"
    if fixture:
        message += "; the file sits in a test-data folder of an installed library"
    remediation = (
        f"{_REMEDIATION.get(match.kind, 'Rotate the credential now')}, because anyone who "
        "pulls the image can read it, and deleting the file in a later layer does not remove "
        "it from the image. Then rebuild the image so the secret never enters a layer (pass "
        "it with `docker build --secret` or at run time) and admit the new image."
    )
    return Finding(
        rule=f"secret.{match.kind}",
        severity=severity,
        file=location,
        message=message,
        remediation=remediation,
        check=SECRETS_CHECK,
        details={
            "kind": match.kind,
            "verified": match.verified,
            "line": match.line,
            "prefix": match.prefix,
            "length": match.length,
            "test_fixture": fixture,
            **details,
        },
    )
