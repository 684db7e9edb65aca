"""The trust configuration: the keys, certificate chains and identities whose signatures count.

The command-line options carry cosign's names and meaning:

- ``--trusted-key FILE`` (repeatable): a public key whose signatures are trusted
  (cosign calls it ``--key``).
- ``--certificate-chain FILE``: PEM certificates, intermediates first and the
  root last; a signature whose certificate chains to a self-signed certificate
  in the file is trusted.
- ``--certificate-identity`` or ``--certificate-identity-regexp`` with
  ``--certificate-oidc-issuer``: the subject alternative name and OIDC issuer
  that a Sigstore (keyless) certificate must carry. As in cosign, the regular
  expression is searched for anywhere in the name unless it is anchored.
- ``--trusted-root FILE``: the Sigstore trusted root (or client trust
  configuration) for keyless verification. Without it, the Sigstore production
  root that sigstore-python ships is used. Nothing is fetched either way.

A policy file may carry the same lists under a ``trust`` mapping
(:meth:`TrustConfig.from_mapping`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestgate.errors import UsageError
from attestgate.evidence.interface import EvidenceError
from attestgate.evidence.keys import PublicKey, load_public_key

if TYPE_CHECKING:
    from cryptography import x509
    from sigstore.models import TrustedRoot

logger = logging.getLogger(__name__)

MAX_TRUST_FILE_BYTES = 4 * 1024 * 1024
MAX_CHAIN_CERTIFICATES = 64
# Path of the production trusted root inside the sigstore-python 4 wheel.
_BUNDLED_PRODUCTION_ROOT = "_store/https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json"
CLIENT_TRUST_CONFIG_PREFIX = "application/vnd.dev.sigstore.clienttrustconfig"

# Fulcio certificate extensions (github.com/sigstore/fulcio, docs/oid-info.md).
OIDC_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
OIDC_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
SAN_OTHERNAME_USERNAME = "1.3.6.1.4.1.57264.1.7"


@dataclass(frozen=True)
class TrustedIdentity:
    """One trusted certificate identity: a subject (exact or pattern) and an OIDC issuer."""

    subject: str = ""
    subject_regexp: str = ""
    issuer: str = ""
    issuer_regexp: str = ""

    def __post_init__(self) -> None:
        if not (self.subject or self.subject_regexp):
            raise UsageError(
                "a trusted identity needs a subject",
                hint="pass --certificate-identity or --certificate-identity-regexp",
            )
        if not (self.issuer or self.issuer_regexp):
            raise UsageError(
                "a trusted identity needs an OIDC issuer, since anyone can obtain a "
                "certificate for a name from some issuer",
                hint="pass --certificate-oidc-issuer, for example "
                "https://token.actions.githubusercontent.com",
            )
        for pattern in (self.subject_regexp, self.issuer_regexp):
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise UsageError(
                        f"regular expression {pattern!r} is invalid: {exc}",
                        hint="check the --certificate-identity-regexp value",
                    ) from exc

    def matches(self, subjects: list[str], issuer: str) -> bool:
        if self.issuer and issuer != self.issuer:
            return False
        if self.issuer_regexp and not re.search(self.issuer_regexp, issuer):
            return False
        for subject in subjects:
            if self.subject and subject == self.subject:
                return True
            if self.subject_regexp and re.search(self.subject_regexp, subject):
                return True
        return False

    def describe(self) -> str:
        subject = self.subject or f"/{self.subject_regexp}/"
        issuer = self.issuer or f"/{self.issuer_regexp}/"
        return f"{subject} from {issuer}"

    def to_json(self) -> dict[str, str]:
        out = {
            "subject": self.subject,
            "subject_regexp": self.subject_regexp,
            "issuer": self.issuer,
            "issuer_regexp": self.issuer_regexp,
        }
        return {k: v for k, v in out.items() if v}


@dataclass
class TrustConfig:
    """Everything a signer can be trusted through."""

    keys: list[PublicKey] = field(default_factory=list)
    # Self-signed certificates from --certificate-chain files are anchors,
    # the others intermediates.
    chain_anchors: list[x509.Certificate] = field(default_factory=list)
    chain_intermediates: list[x509.Certificate] = field(default_factory=list)
    chain_sources: list[str] = field(default_factory=list)
    identities: list[TrustedIdentity] = field(default_factory=list)
    trusted_root_path: Path | None = None
    _root: tuple[TrustedRoot, str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_options(
        cls,
        *,
        trusted_keys: list[Path] | tuple[Path, ...] = (),
        certificate_chain: Path | None = None,
        certificate_identity: str = "",
        certificate_identity_regexp: str = "",
        certificate_oidc_issuer: str = "",
        trusted_root: Path | None = None,
    ) -> TrustConfig:
        """Build the configuration from cosign-style command-line values."""
        config = cls(keys=[load_public_key(p) for p in trusted_keys])
        if certificate_chain is not None:
            config.add_chain(certificate_chain)
        if certificate_identity and certificate_identity_regexp:
            raise UsageError(
                "--certificate-identity and --certificate-identity-regexp were both given",
                hint="pass one of them",
            )
        if certificate_identity or certificate_identity_regexp or certificate_oidc_issuer:
            config.identities.append(
                TrustedIdentity(
                    subject=certificate_identity,
                    subject_regexp=certificate_identity_regexp,
                    issuer=certificate_oidc_issuer,
                )
            )
        config.trusted_root_path = trusted_root
        return config

    @classmethod
    def from_mapping(cls, doc: dict[str, Any], base: Path) -> TrustConfig:
        """Build the configuration from a policy file's ``trust`` mapping.

        ``keys`` and ``certificateChains`` list file paths relative to
        ``base``. ``identities`` lists mappings with ``subject`` or
        ``subjectRegExp`` and with ``issuer`` or ``issuerRegExp``.
        ``trustedRoot`` names a trusted root file.
        """
        config = cls()
        for entry in _list(doc, "keys"):
            config.keys.append(load_public_key(base / str(entry)))
        for entry in _list(doc, "certificateChains"):
            config.add_chain(base / str(entry))
        for entry in _list(doc, "identities"):
            if not isinstance(entry, dict):
                raise UsageError(f"trust.identities entry {entry!r} is not a mapping")
            config.identities.append(
                TrustedIdentity(
                    subject=str(entry.get("subject", "")),
                    subject_regexp=str(entry.get("subjectRegExp", "")),
                    issuer=str(entry.get("issuer", "")),
                    issuer_regexp=str(entry.get("issuerRegExp", "")),
                )
            )
        if doc.get("trustedRoot"):
            config.trusted_root_path = base / str(doc["trustedRoot"])
        return config

    def merge(self, other: TrustConfig) -> TrustConfig:
        """Return a configuration that trusts what either one trusts."""
        return TrustConfig(
            keys=self.keys + other.keys,
            chain_anchors=self.chain_anchors + other.chain_anchors,
            chain_intermediates=self.chain_intermediates + other.chain_intermediates,
            chain_sources=self.chain_sources + other.chain_sources,
            identities=self.identities + other.identities,
            trusted_root_path=other.trusted_root_path or self.trusted_root_path,
        )

    def add_chain(self, path: Path) -> None:
        from cryptography import x509

        data = _read(path, "certificate chain")
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise EvidenceError(
                f"certificate chain {path} contains no valid PEM certificate: {exc}",
                hint="pass a PEM file with the intermediate and root certificates",
            ) from exc
        if len(certificates) > MAX_CHAIN_CERTIFICATES:
            raise EvidenceError(
                f"certificate chain {path} contains {len(certificates)} certificates, more "
                f"than the {MAX_CHAIN_CERTIFICATES} read"
            )
        for certificate in certificates:
            if certificate.issuer == certificate.subject:
                self.chain_anchors.append(certificate)
            else:
                self.chain_intermediates.append(certificate)
        if not any(c.issuer == c.subject for c in certificates):
            raise EvidenceError(
                f"certificate chain {path} has no self-signed root certificate",
                hint="end the chain file with the root CA certificate, as cosign expects",
            )
        self.chain_sources.append(str(path))

    def key_for_hint(self, hint: str) -> PublicKey | None:
        for key in self.keys:
            if hint and hint in key.hints:
                return key
        return None

    def identity_for(self, subjects: list[str], issuer: str) -> TrustedIdentity | None:
        for identity in self.identities:
            if identity.matches(subjects, issuer):
                return identity
        return None

    def sigstore_root(self) -> tuple[TrustedRoot, str, str]:
        """Return the Sigstore trusted root, its source and its SHA-256, loading it once."""
        if self._root is None:
            self._root = load_trusted_root(self.trusted_root_path)
        return self._root

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "keys": [
                {"id": k.key_id, "algorithm": k.algorithm, "source": k.source} for k in self.keys
            ],
            "certificate_chains": list(self.chain_sources),
            "identities": [i.to_json() for i in self.identities],
        }
        if self._root is not None:
            out["trusted_root"] = {"source": self._root[1], "digest": {"sha256": self._root[2]}}
        elif self.trusted_root_path is not None:
            out["trusted_root"] = {"source": str(self.trusted_root_path)}
        return out


def _list(doc: dict[str, Any], name: str) -> list[Any]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise UsageError(f"trust.{name} must be a list, not {type(value).__name__}")
    return value


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TRUST_FILE_BYTES + 1)
    except OSError as exc:
        raise EvidenceError(
            f"{what} {path} could not be read: {exc.strerror or exc}",
            hint=f"check the path of the {what}",
        ) from exc
    if len(data) > MAX_TRUST_FILE_BYTES:
        raise EvidenceError(f"{what} {path} is larger than {MAX_TRUST_FILE_BYTES} bytes")
    return data


def _close_validity_end(document: dict[str, Any]) -> None:
    # A trusted root's validFor is a closed interval (TimeRange in
    # sigstore/protobuf-specs), but sigstore-python 4.5 compares a timestamp
    # authority's end with "<". Moving each end by one microsecond, the
    # resolution of Python datetimes, turns that comparison into "<=".
    for authority in document.get("timestampAuthorities") or []:
        valid_for = authority.get("validFor") if isinstance(authority, dict) else None
        if not isinstance(valid_for, dict):
            continue
        end = valid_for.get("end")
        if isinstance(end, str) and end:
            try:
                moment = datetime.fromisoformat(end.replace("Z", "+00:00"))
            except ValueError:
                continue
            moment += timedelta(microseconds=1)
            valid_for["end"] = moment.isoformat().replace("+00:00", "Z")


def parse_trusted_root(data: bytes, source: str) -> TrustedRoot:
    """Parse a Sigstore trusted root, or a client trust configuration that contains one."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TrustedRoot
    from sigstore_models.trustroot import v1 as trustroot_v1

    try:
        document = json.loads(data)
    except ValueError as exc:
        raise EvidenceError(
            f"trusted root {source} is not JSON: {exc}",
            hint="pass a Sigstore trusted_root.json",
        ) from exc
    if not isinstance(document, dict):
        raise EvidenceError(f"trusted root {source} is not a JSON object")
    if str(document.get("mediaType", "")).startswith(CLIENT_TRUST_CONFIG_PREFIX):
        document = document.get("trustedRoot") or {}
    _close_validity_end(document)
    try:
        inner = trustroot_v1.TrustedRoot.from_json(json.dumps(document))
        return TrustedRoot(inner)
    except (SigstoreError, ValueError, TypeError, KeyError) as exc:
        raise EvidenceError(
            f"trusted root {source} is invalid: {exc}",
            hint="pass a Sigstore trusted root (media type "
            "application/vnd.dev.sigstore.trustedroot+json;version=0.1)",
        ) from exc


def load_trusted_root(path: Path | None) -> tuple[TrustedRoot, str, str]:
    """Load ``path`` or the production root bundled with sigstore-python, never the network."""
    if path is not None:
        data = _read(path, "trusted root")
        source = str(path)
    else:
        resource = resources.files("sigstore").joinpath(_BUNDLED_PRODUCTION_ROOT)
        try:
            data = resource.read_bytes()
        except OSError as exc:
            raise EvidenceError(
                "the Sigstore production trusted root is not in the installed sigstore "
                f"package ({exc})",
                hint="pass --trusted-root FILE with a trusted_root.json",
            ) from exc
        source = "sigstore-python:production"
    root = parse_trusted_root(data, source)
    return root, source, hashlib.sha256(data).hexdigest()


def _der_utf8(value: bytes) -> str:
    # A DER UTF8String (tag 12) or IA5String (tag 22) that contains one name.
    if len(value) < 2 or value[0] not in (0x0C, 0x16):
        return value.decode("utf-8", "replace")
    length = value[1]
    start = 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(value[2 : 2 + count], "big")
        start = 2 + count
    return value[start : start + length].decode("utf-8", "replace")


def certificate_subjects(certificate: x509.Certificate) -> list[str]:
    """Return the subject alternative names that identify a signer (URIs, e-mails, usernames)."""
    from cryptography import x509

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    subjects: list[str] = []
    subjects.extend(names.get_values_for_type(x509.UniformResourceIdentifier))
    subjects.extend(names.get_values_for_type(x509.RFC822Name))
    subjects.extend(names.get_values_for_type(x509.DNSName))
    for other in names.get_values_for_type(x509.OtherName):
        if other.type_id.dotted_string == SAN_OTHERNAME_USERNAME:
            subjects.append(_der_utf8(other.value))
    return subjects


def certificate_issuer(certificate: x509.Certificate) -> str:
    """Return the OIDC issuer a Fulcio certificate records, or an empty string."""
    from cryptography import x509

    for oid, encoded in ((OIDC_ISSUER_V2, True), (OIDC_ISSUER_V1, False)):
        try:
            ext = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        except x509.ExtensionNotFound:
            continue
        value = ext.value
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        return _der_utf8(raw) if encoded else raw.decode("utf-8", "replace")
    return ""
