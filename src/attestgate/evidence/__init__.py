"""Evidence: verifying and producing signed claims about an artifact.

::

    from attestgate.evidence import TrustConfig, verify_evidence

    trust = TrustConfig.from_options(trusted_keys=[Path("producer.pub")])
    report = verify_evidence(inspection.artifact, inspection.findings, trust=trust)
    report.status, report.all_findings

Verifiers read OpenSSF Model Signing signatures, Sigstore bundles, DSSE
envelopes, in-toto statements and JSON Lines bundles, SLSA Provenance v1,
attestgate's training-claims predicate and CycloneDX ML-BOMs. Heavy
libraries (sigstore, model-signing, cyclonedx) load only when a piece of
evidence needs them.
"""

from __future__ import annotations

from attestgate.evidence.discovery import discover
from attestgate.evidence.interface import (
    TRAINING_CLAIMS_V1,
    EvidenceError,
    EvidenceLimits,
    EvidenceReport,
    Piece,
    Signer,
    Status,
)
from attestgate.evidence.trust import TrustConfig, TrustedIdentity
from attestgate.evidence.verify import verify_evidence

__all__ = [
    "TRAINING_CLAIMS_V1",
    "EvidenceError",
    "EvidenceLimits",
    "EvidenceReport",
    "Piece",
    "Signer",
    "Status",
    "TrustConfig",
    "TrustedIdentity",
    "discover",
    "verify_evidence",
]
