"""Verify every piece of evidence for one artifact.

For each evidence file, given or found beside the artifact, and for each
document in it:

1. Verify the signature: a Sigstore bundle (key, certificate chain or
   keyless) or a DSSE envelope. A bare statement or ML-BOM is unsigned.
2. Check the signer against the trust configuration.
3. Check the statement: the payload type, ``_type``, and that a subject
   digest equals the artifact's digest (a model signature instead binds
   through its manifest, file by file).
4. Check the predicate: the model signature's manifest, SLSA provenance,
   training claims or the ML-BOM, each against its schema and meaning.
5. Cross-check the claims against the inspection: formats, embedded code,
   hashes and scan results.

Then sum up which training and release claims the evidence covers, and
report each one that is missing.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestgate.errors import UsageError
from attestgate.evidence import mlbom, model_signature, slsa, training
from attestgate.evidence.crosscheck import ArtifactFacts
from attestgate.evidence.discovery import discover as discover_evidence
from attestgate.evidence.interface import (
    CYCLONEDX_PREDICATE,
    DIGEST_MISMATCH,
    LIMIT_EXCEEDED,
    MALFORMED,
    MISSING_CLAIM,
    OMS_PREDICATE,
    OMS_PREDICATE_V0,
    PROVENANCE_MISSING,
    SCHEMA_INVALID,
    SLSA_PROVENANCE_V1,
    SLSA_VSA_V1,
    TRAINING_CLAIMS_V1,
    UNKNOWN_PREDICATE,
    UNSIGNED,
    EvidenceError,
    EvidenceLimits,
    EvidenceReport,
    Piece,
    Signer,
    Status,
    finding,
)
from attestgate.evidence.intoto import (
    Document,
    Statement,
    is_in_toto_payload,
    parse_statement,
    read_documents,
    statement_from_json,
)
from attestgate.evidence.signatures import BUNDLE_MEDIA_PREFIX, SignedContent
from attestgate.evidence.trust import TrustConfig
from attestgate.findings import CHECK_FAILED, Finding, Severity
from attestgate.record import ArtifactIdentity

logger = logging.getLogger(__name__)

TRAINING_HOW = (
    "Run `attestgate attest training --artifact PATH --key FILE --out FILE` at the end of "
    "the training job, and pass its output with --evidence."
)
RELEASE_HOW = (
    "Run `attestgate attest release PATH --key FILE --out FILE` when the model is released, "
    "and pass its output with --evidence."
)


@dataclass
class _Context:
    artifact: ArtifactIdentity
    facts: ArtifactFacts
    trust: TrustConfig
    limits: EvidenceLimits
    # (set, piece source) -> claim gaps, from pieces that count.
    claim_gaps: dict[str, list[tuple[str, dict[str, list[str]]]]] = field(
        default_factory=lambda: {"training": [], "release": []}
    )

    def label(self, path: str, line: int = 0) -> str:
        """Return the short name findings use for an evidence file (and JSON Lines line)."""
        try:
            name = str(Path(path).resolve().relative_to(Path(self.artifact.path)))
        except ValueError:
            name = Path(path).name
        return f"{name}:{line}" if line else name


def verify_evidence(
    artifact: ArtifactIdentity,
    findings: list[Finding],
    *,
    evidence: Sequence[Path] = (),
    trust: TrustConfig | None = None,
    discover: bool = True,
    limits: EvidenceLimits | None = None,
) -> EvidenceReport:
    """Verify the evidence for ``artifact``; ``findings`` are the inspection's own."""
    trust = trust or TrustConfig()
    limits = limits or EvidenceLimits()
    ctx = _Context(artifact, ArtifactFacts.from_inspection(artifact, findings), trust, limits)
    report = EvidenceReport()

    files = _evidence_files(Path(artifact.path), evidence, discover)
    if len(files) > limits.max_evidence_files:
        report.findings.append(
            finding(
                LIMIT_EXCEEDED,
                Severity.MEDIUM,
                Path(artifact.path).name,
                f"{len(files)} evidence files were given or found; only the first "
                f"{limits.max_evidence_files} were checked",
                "Pass only the evidence that belongs to this artifact.",
            )
        )
        files = files[: limits.max_evidence_files]

    for path in files:
        report.pieces.extend(_verify_file(path, ctx))

    if report.pieces:
        report.claims = _claims_summary(ctx, report)
    else:
        report.findings.append(_provenance_missing(artifact))
    report.trust = trust.to_json()
    return report


def _evidence_files(path: Path, given: Sequence[Path], discover: bool) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for item in given:
        if not item.is_file():
            raise UsageError(
                f"evidence file {item} does not exist or is not a file",
                hint="check the --evidence path",
            )
    found = discover_evidence(path) if discover else []
    for item in [*given, *found]:
        key = item.resolve()
        if key not in seen:
            seen.add(key)
            files.append(item)
    return files


def _verify_file(path: Path, ctx: _Context) -> list[Piece]:
    source = str(path)
    try:
        documents = read_documents(path, ctx.limits)
    except EvidenceError as exc:
        piece = Piece(source, "unknown", signature="unchecked")
        piece.findings.append(_malformed(ctx.label(source), exc.message))
        return [piece]
    return [_guarded(document, ctx) for document in documents]


def _guarded(document: Document, ctx: _Context) -> Piece:
    # A bug or an unexpected library error must never let evidence pass: it
    # becomes a check.failed finding, which the policy cannot map to allow.
    where = ctx.label(document.path, document.line)
    try:
        return _verify_document(document, ctx)
    except EvidenceError as exc:
        piece = Piece(document.source, "unknown")
        piece.findings.append(_malformed(where, exc.message))
        return piece
    except Exception as exc:
        logger.debug("evidence check of %s failed", document.source, exc_info=True)
        piece = Piece(document.source, "unknown")
        piece.findings.append(
            Finding(
                CHECK_FAILED,
                Severity.HIGH,
                where,
                f"the evidence check failed on {where} before finishing: "
                f"{type(exc).__name__}: {exc}",
                "The gate could not check this evidence, so it cannot vouch for it. Report "
                "the error with the evidence file to the attestgate maintainers.",
                check="evidence",
                details={"error": type(exc).__name__, "traceback": traceback.format_exc(limit=5)},
            )
        )
        return piece


def _verify_document(document: Document, ctx: _Context) -> Piece:
    value = document.value
    where = ctx.label(document.path, document.line)
    if not isinstance(value, dict):
        piece = Piece(document.source, "unknown")
        piece.findings.append(_malformed(where, "the document is not a JSON object"))
        return piece

    if str(value.get("mediaType", "")).startswith(BUNDLE_MEDIA_PREFIX):
        from attestgate.evidence.signatures import verify_bundle

        content = verify_bundle(value, document.text, where, ctx.trust, ctx.artifact.sha256)
        return _signed_piece(document.source, "sigstore-bundle", content, where, ctx)
    if "payloadType" in value and "signatures" in value:
        from attestgate.evidence.signatures import verify_envelope_document

        content = verify_envelope_document(value, where, ctx.trust)
        return _signed_piece(document.source, "dsse-envelope", content, where, ctx)

    if "_type" in value:
        piece = Piece(document.source, "statement", signature="unsigned", signer=Signer("none"))
        piece.findings.append(_unsigned(where, "statement"))
        _check_statement(piece, statement_from_json(value, ctx.limits), where, ctx)
        return piece
    if mlbom.is_cyclonedx(value):
        piece = Piece(document.source, "cyclonedx", signature="unsigned", signer=Signer("none"))
        piece.findings.append(_unsigned(where, "ML-BOM"))
        _check_bom(piece, value, where, ctx, statement=None)
        return piece

    piece = Piece(document.source, "unknown")
    piece.findings.append(
        _malformed(
            where,
            "the document is not a Sigstore bundle, a DSSE envelope, an in-toto statement "
            "or a CycloneDX document",
        )
    )
    return piece


def _signed_piece(
    source: str, kind: str, content: SignedContent, where: str, ctx: _Context
) -> Piece:
    piece = Piece(source, kind, signature=content.signature, signer=content.signer)
    piece.findings.extend(content.findings)
    piece.facts.update(content.facts)
    if content.signature == "invalid":
        return piece

    # Step 3: what the signature covers must be this artifact.
    if content.envelope is None:
        piece.facts["signs"] = "artifact bytes"
        piece.bound = content.message_digest == ctx.artifact.sha256
        if not piece.bound:
            piece.findings.append(_mismatch(where, [content.message_digest], ctx.artifact))
        return piece
    if not is_in_toto_payload(content.envelope.payload_type):
        piece.findings.append(
            _schema_invalid(
                where,
                f"the payload type is {content.envelope.payload_type!r}, not an in-toto statement "
                "(application/vnd.in-toto+json)",
            )
        )
        return piece
    try:
        statement = parse_statement(content.envelope.payload, ctx.limits)
    except EvidenceError as exc:
        piece.findings.append(_schema_invalid(where, exc.message))
        return piece
    _check_statement(piece, statement, where, ctx)
    return piece


def _check_statement(piece: Piece, statement: Statement, where: str, ctx: _Context) -> None:
    piece.predicate_type = statement.predicate_type
    artifact = ctx.artifact
    if statement.predicate_type in (OMS_PREDICATE, OMS_PREDICATE_V0):
        piece.kind = "model-signature"
        found, facts, bound = model_signature.check_model_signature(
            statement, artifact, where, ctx.limits
        )
        piece.findings.extend(found)
        piece.facts.update(facts)
        piece.bound = bound
        return

    piece.bound = statement.binds(artifact.sha256)
    if not piece.bound:
        piece.findings.append(_mismatch(where, statement.sha256_digests(), artifact))

    predicate_type = statement.predicate_type
    if predicate_type == SLSA_PROVENANCE_V1:
        subjects = list(piece.facts.get("subjects") or [])
        found, facts = slsa.check_provenance(statement, piece.signer, subjects, where)
        piece.findings.extend(found)
        piece.facts.update(facts)
    elif predicate_type == SLSA_VSA_V1:
        found, facts = slsa.check_verification_summary(statement, where)
        piece.findings.extend(found)
        piece.facts.update(facts)
    elif predicate_type == TRAINING_CLAIMS_V1:
        found, gaps, facts = training.check_training_claims(statement, artifact.sha256, where)
        piece.findings.extend(found)
        piece.facts.update(facts)
        if gaps:
            piece.claims = _claim_json(gaps)
            _count_claims(piece, "training", gaps, ctx)
    elif predicate_type.startswith(CYCLONEDX_PREDICATE):
        _check_bom(piece, statement.predicate, where, ctx, statement=statement)
    else:
        piece.findings.append(
            finding(
                UNKNOWN_PREDICATE,
                Severity.INFO,
                where,
                f"{where} contains a statement of predicate type {predicate_type}, which "
                "attestgate records but does not interpret",
                "No action is needed unless your policy relies on this predicate.",
            )
        )


def _check_bom(
    piece: Piece, doc: dict[str, Any], where: str, ctx: _Context, statement: Statement | None
) -> None:
    piece.kind = "cyclonedx" if statement is None else piece.kind
    piece.predicate_type = piece.predicate_type or CYCLONEDX_PREDICATE
    found, gaps, facts, bound = mlbom.check_mlbom(doc, ctx.facts, where)
    piece.findings.extend(found)
    piece.facts.update(facts)
    # Inside a statement the subject already binds the BOM; a bare BOM binds
    # through its model component's hash.
    piece.bound = piece.bound and bound if statement is not None else bound
    if statement is None and not bound and not found:
        piece.findings.append(_mismatch(where, [], ctx.artifact))
    if gaps:
        piece.claims = _claim_json(gaps)
        _count_claims(piece, "release", gaps, ctx)


def _count_claims(piece: Piece, claim_set: str, gaps: dict[str, list[str]], ctx: _Context) -> None:
    # Claims count once the piece's own findings leave it verified or
    # incomplete: a failed piece (forged, mismatched) vouches for nothing.
    if piece.bound and piece.status is not Status.FAILED:
        ctx.claim_gaps[claim_set].append((piece.source, gaps))


def _claim_json(gaps: dict[str, list[str]]) -> dict[str, Any]:
    return {claim: {"complete": not missing, "missing": missing} for claim, missing in gaps.items()}


def _claims_summary(ctx: _Context, report: EvidenceReport) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    sets = (
        ("training", training.REQUIRED, training.HOW_TO_PRODUCE, TRAINING_HOW),
        ("release", mlbom.REQUIRED, mlbom.HOW_TO_PRODUCE, RELEASE_HOW),
    )
    where = Path(ctx.artifact.path).name
    for claim_set, required, how, how_all in sets:
        candidates = ctx.claim_gaps[claim_set]
        if not candidates:
            summary[claim_set] = {claim: {"status": "missing"} for claim in required}
            report.findings.append(
                finding(
                    MISSING_CLAIM,
                    Severity.MEDIUM,
                    where,
                    f"no verified {claim_set} claims bind to {where}: "
                    + ", ".join(c.replace("-", " ") for c in required)
                    + " are missing",
                    how_all,
                    claim_set=claim_set,
                    claims=list(required),
                )
            )
            continue
        summary[claim_set] = {}
        for claim in required:
            best = min(candidates, key=lambda c: len(c[1].get(claim, ["?"])))
            missing = best[1].get(claim, [])
            summary[claim_set][claim] = {
                "status": "complete" if not missing else "incomplete",
                "source": best[0],
            }
            if missing:
                summary[claim_set][claim]["missing"] = missing
                report.findings.append(
                    finding(
                        MISSING_CLAIM,
                        Severity.MEDIUM,
                        where,
                        f"the {claim.replace('-', ' ')} claim for {where} is incomplete: "
                        f"{', '.join(missing)} missing in {ctx.label(best[0])}",
                        f"To supply it, {how[claim]}.",
                        claim_set=claim_set,
                        claim=claim,
                        missing=missing,
                    )
                )
    return summary


def _provenance_missing(artifact: ArtifactIdentity) -> Finding:
    where = Path(artifact.path).name
    return finding(
        PROVENANCE_MISSING,
        Severity.MEDIUM,
        where,
        f"no signed provenance binds the artifact digest sha256:{artifact.sha256} to a trusted "
        "producer, and no training or release claims were given",
        "Ask the producer for a signature over this exact artifact (`attestgate sign PATH --key "
        "FILE` or `model_signing sign` writes model.sig into the model directory), training "
        "claims (`attestgate attest training`) and release claims (`attestgate attest "
        f"release`) whose subject digest is sha256:{artifact.sha256}, and pass them with "
        "--evidence or place them next to the artifact.",
    )


def _malformed(where: str, message: str) -> Finding:
    return finding(
        MALFORMED,
        Severity.HIGH,
        where,
        f"the evidence {where} could not be read: {message}",
        "Pass a Sigstore bundle, a DSSE envelope, an in-toto statement or JSON Lines bundle, or "
        "a CycloneDX JSON document; ask the producer for an intact copy.",
    )


def _schema_invalid(where: str, message: str) -> Finding:
    return finding(
        SCHEMA_INVALID,
        Severity.HIGH,
        where,
        f"the statement in {where} is invalid: {message}",
        "Ask the producer for an in-toto v1 statement in a DSSE envelope or Sigstore bundle.",
    )


def _unsigned(where: str, what: str) -> Finding:
    return finding(
        UNSIGNED,
        Severity.MEDIUM,
        where,
        f"the {what} {where} is not signed, so nothing ties its claims to a producer",
        "Ask the producer to sign it (`attestgate attest ... --key FILE` writes a signed "
        "envelope), and pass the signed file instead.",
    )


def _mismatch(where: str, digests: list[str], artifact: ArtifactIdentity) -> Finding:
    named = ", ".join(f"sha256:{d}" for d in digests) or "no SHA-256 digest"
    return finding(
        DIGEST_MISMATCH,
        Severity.CRITICAL,
        where,
        f"{where} is about {named}, not about this artifact (sha256:{artifact.sha256})",
        "Use the evidence that was produced for this exact artifact; if the artifact was "
        "changed after it was signed, find out who changed it.",
        subject_digests=digests,
    )
