"""OpenSSF Model Signing: the signed manifest against the files the gate read.

A model signature's statement (predicate ``https://model_signing/signature/v1.0``)
lists every signed file with its digest and the serialization that produced
them. Its one subject digest is SHA-256 over the concatenated raw file digests.
model-signing 0.2 (predicate ``https://model_signing/Digests/v0.1``) listed one
subject per file instead.

With the default serialization (one SHA-256 per file) the manifest is compared
with the digests the identify step already computed, so the model is read
once. Other serializations (shards, BLAKE2) are recomputed with the
``model_signing`` library's own hashing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestgate.evidence.interface import (
    DIGEST_MISMATCH,
    IGNORED_FILE,
    OMS_PREDICATE_V0,
    SCHEMA_INVALID,
    UNSIGNED_FILE,
    EvidenceError,
    EvidenceLimits,
    finding,
)
from attestgate.evidence.intoto import Statement
from attestgate.findings import Finding, Severity
from attestgate.record import ArtifactIdentity

logger = logging.getLogger(__name__)

# Findings listed one by one before the rest are summed up in one more.
MAX_FILE_FINDINGS = 50
SIGN_HINT = (
    "Sign the model again after the last intended change (`attestgate sign PATH --key "
    "FILE`, or `model_signing sign`), or find out who changed the files since it was signed."
)


@dataclass
class Manifest:
    """The signed files: relative path -> (algorithm, hex digest)."""

    entries: dict[str, tuple[str, str]]
    serialization: dict[str, Any]
    ignore_paths: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.serialization.get("method", "files"))

    @property
    def hash_type(self) -> str:
        return str(self.serialization.get("hash_type", "sha256"))


def parse_manifest(statement: Statement, limits: EvidenceLimits) -> Manifest:
    """Read the manifest from a model signature's statement; raise ``EvidenceError`` if invalid."""
    if statement.predicate_type == OMS_PREDICATE_V0:
        listed = {
            s.name: ("sha256", s.digest.get("sha256", "").lower()) for s in statement.subjects
        }
        return Manifest(listed, {"method": "files", "hash_type": "sha256"})

    predicate = statement.predicate
    serialization = predicate.get("serialization")
    resources = predicate.get("resources")
    if not isinstance(serialization, dict) or not isinstance(resources, list):
        raise EvidenceError("the model signature's predicate lacks serialization or resources")
    if len(resources) > limits.max_resources:
        raise EvidenceError(
            f"the model signature lists {len(resources)} files, more than the "
            f"{limits.max_resources} read"
        )
    if len(statement.subjects) != 1 or "sha256" not in statement.subjects[0].digest:
        raise EvidenceError("a model signature must have exactly one subject with a sha256 digest")

    entries: dict[str, tuple[str, str]] = {}
    root = hashlib.sha256()
    for index, resource in enumerate(resources):
        if not isinstance(resource, dict):
            raise EvidenceError(f"resource {index} of the model signature is not a JSON object")
        name, algorithm, digest = (resource.get(k) for k in ("name", "algorithm", "digest"))
        if not (isinstance(name, str) and isinstance(algorithm, str) and isinstance(digest, str)):
            raise EvidenceError(
                f"resource {index} of the model signature lacks name, algorithm or digest"
            )
        try:
            root.update(bytes.fromhex(digest))
        except ValueError as exc:
            raise EvidenceError(f"resource {name!r} has a digest that is not hex") from exc
        entries[name] = (algorithm, digest.lower())

    # The subject digest must be the digest over the listed resources, or the
    # subject and the manifest describe different models.
    expected = statement.subjects[0].digest["sha256"].lower()
    if root.hexdigest() != expected:
        raise EvidenceError(
            f"the model signature's subject digest sha256:{expected} is not the digest of "
            f"its listed files (sha256:{root.hexdigest()})"
        )
    ignore = serialization.get("ignore_paths") or []
    ignore_paths = [str(p).strip("/") for p in ignore if isinstance(p, str)]
    return Manifest(entries, serialization, ignore_paths)


def _ignored(path: str, ignore_paths: list[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in ignore_paths if p)


def _actual_digests(
    manifest: Manifest, artifact: ArtifactIdentity, limits: EvidenceLimits
) -> dict[str, str]:
    """Return path -> hex digest of the artifact, in the manifest's serialization."""
    root = Path(artifact.path)
    if manifest.method == "files" and manifest.hash_type == "sha256":
        if artifact.kind == "file":
            report = artifact.files[0] if artifact.files else None
            digest = report.sha256 if report is not None and report.complete else ""
            return {".": digest, root.name: digest}
        actual = {r.path: r.sha256 for r in artifact.files if r.complete}
        for name in manifest.entries:
            if name not in actual and name in artifact.excluded:
                extra = _hash_excluded(root / name, limits)
                if extra:
                    actual[name] = extra
        return actual
    return _recompute(manifest, root)


def _hash_excluded(path: Path, limits: EvidenceLimits) -> str:
    # A signer may have signed a file that the gate leaves out of its own
    # digest (.gitattributes, say); such files are small and hashed here.
    try:
        if (
            not path.is_file()
            or path.is_symlink()
            or path.stat().st_size > limits.max_extra_file_bytes
        ):
            return ""
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _recompute(manifest: Manifest, root: Path) -> dict[str, str]:
    from model_signing import hashing

    # model-signing's hashing API is not typed.
    api: Any = hashing
    serialization = manifest.serialization
    algorithm = manifest.hash_type
    allow_symlinks = bool(serialization.get("allow_symlinks", False))
    ignore = [Path(p) for p in manifest.ignore_paths]
    logger.info("rehashing %s with model-signing (%s, %s)", root, manifest.method, algorithm)
    try:
        config = api.Config().set_ignored_paths(paths=ignore, ignore_git_paths=True)
        if manifest.method == "shards":
            config.use_shard_serialization(
                hashing_algorithm=algorithm,
                shard_size=int(serialization["shard_size"]),
                allow_symlinks=allow_symlinks,
            )
        elif manifest.method == "files":
            config.use_file_serialization(
                hashing_algorithm=algorithm, allow_symlinks=allow_symlinks
            )
        else:
            raise EvidenceError(f"the serialization method {manifest.method!r} is not supported")
        computed = config.hash(root)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise EvidenceError(f"model-signing could not hash {root}: {exc}") from exc
    return {str(d.identifier): d.digest.digest_hex for d in computed.resource_descriptors()}


def check_model_signature(
    statement: Statement,
    artifact: ArtifactIdentity,
    where: str,
    limits: EvidenceLimits,
) -> tuple[list[Finding], dict[str, Any], bool]:
    """Compare the signed manifest with the artifact; return findings, facts and the binding."""
    try:
        manifest = parse_manifest(statement, limits)
        actual = _actual_digests(manifest, artifact, limits)
    except EvidenceError as exc:
        return [_schema_invalid(where, exc.message)], {}, False

    findings: list[Finding] = []
    mismatched = _compare_signed(manifest, actual, artifact, where, findings)
    unsigned, ignored = _uncovered(manifest, artifact)
    findings.extend(_uncovered_findings(unsigned, ignored, where))
    facts: dict[str, Any] = {
        "serialization": {k: v for k, v in manifest.serialization.items() if k != "ignore_paths"},
        "files_signed": len(manifest.entries),
        "files_matched": len(manifest.entries) - mismatched,
    }
    if manifest.ignore_paths:
        facts["ignore_paths"] = manifest.ignore_paths
    if unsigned:
        facts["unsigned_files"] = unsigned[:MAX_FILE_FINDINGS]
    if ignored:
        facts["ignored_files"] = ignored[:MAX_FILE_FINDINGS]
    return findings, facts, mismatched == 0


def _compare_signed(
    manifest: Manifest,
    actual: dict[str, str],
    artifact: ArtifactIdentity,
    where: str,
    findings: list[Finding],
) -> int:
    mismatched = 0
    for name, (algorithm, digest) in sorted(manifest.entries.items()):
        label = Path(artifact.path).name if name == "." else name
        got = actual.get(name)
        if got == digest:
            continue
        mismatched += 1
        if mismatched > MAX_FILE_FINDINGS:
            continue
        if got is None or got == "":
            message = f"{label} is signed in {where} but is missing from the artifact"
        else:
            message = (
                f"{label} does not match {where}: the signature records {algorithm}:{digest}, "
                f"the file has {algorithm}:{got}"
            )
        findings.append(
            finding(DIGEST_MISMATCH, Severity.CRITICAL, label, message, SIGN_HINT, signature=where)
        )
    if mismatched > MAX_FILE_FINDINGS:
        findings.append(
            finding(
                DIGEST_MISMATCH,
                Severity.CRITICAL,
                where,
                f"{mismatched - MAX_FILE_FINDINGS} more signed files do not match {where}",
                SIGN_HINT,
            )
        )
    return mismatched


def _uncovered(manifest: Manifest, artifact: ArtifactIdentity) -> tuple[list[str], list[str]]:
    """Return the artifact's files that the manifest leaves out: (unsigned, ignored)."""
    if artifact.kind == "file":
        return [], []
    signed = set(manifest.entries)
    if manifest.method == "shards":
        # Shard names are "path:start:end".
        signed = {name.rsplit(":", 2)[0] for name in manifest.entries}

    unsigned: list[str] = []
    ignored: list[str] = []
    for name in sorted({r.path for r in artifact.files}):
        if name in signed or name in artifact.excluded:
            continue
        if _ignored(name, manifest.ignore_paths):
            ignored.append(name)
        else:
            unsigned.append(name)
    return unsigned, ignored


def _uncovered_findings(unsigned: list[str], ignored: list[str], where: str) -> list[Finding]:
    findings = [
        finding(
            UNSIGNED_FILE,
            Severity.HIGH,
            name,
            f"{name} is in the artifact but not in the files signed by {where}, so "
            "nothing vouches for its content",
            "Remove the file if it does not belong to the model; otherwise sign the "
            "model again so that the signature covers it.",
            signature=where,
        )
        for name in unsigned[:MAX_FILE_FINDINGS]
    ]
    findings.extend(
        finding(
            IGNORED_FILE,
            Severity.MEDIUM,
            name,
            f"{name} is in the artifact, but {where} leaves it out of the signature "
            "(its ignore_paths), so nothing vouches for its content",
            "Remove the file before promotion, or sign the model without ignoring it.",
            signature=where,
        )
        for name in ignored[:MAX_FILE_FINDINGS]
    )

    for rule, severity, names, what in (
        (UNSIGNED_FILE, Severity.HIGH, unsigned, "not signed"),
        (IGNORED_FILE, Severity.MEDIUM, ignored, "left out"),
    ):
        if len(names) > MAX_FILE_FINDINGS:
            findings.append(
                finding(
                    rule,
                    severity,
                    where,
                    f"{len(names) - MAX_FILE_FINDINGS} more files of the artifact are "
                    f"{what} by {where} ({len(names)} in all)",
                    "Sign the model again so that the signature covers every file.",
                )
            )
    return findings


def _schema_invalid(where: str, message: str) -> Finding:
    return finding(
        SCHEMA_INVALID,
        Severity.HIGH,
        where,
        f"the model signature {where} is invalid: {message}",
        "Sign the model again with a current OpenSSF Model Signing release.",
    )
