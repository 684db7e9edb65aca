"""The corpus default policy, ``policies/eval.yaml``, which the labels are judged by."""

from __future__ import annotations

from pathlib import Path

POLICY_PATH = "policies/eval.yaml"

EVAL_POLICY = """\
# Policy of the attestgate evaluation corpus.
#
# It starts from the built-in policy (critical and high findings block,
# medium findings and failed checks quarantine) and changes six things, so
# that the corpus labels mean something per stage:
#
# - The producer's keys in ../keys are trusted in every stage.
# - Training and fine-tuning take artifacts without provenance, because the
#   scanners vet data and weights there. Deployment requires signed SLSA
#   provenance (build level 2) from a trusted key.
# - Code (Python files, TorchScript) is judged by who signed it, not by its
#   presence: unsigned code quarantines (custom.unsigned-code), code from
#   the trusted producer is allowed.
# - Deployment needs hashes in dependency sets (deps.missing-hash).
# - Which claims a stage needs is set by `require` alone, so evidence
#   without training or release claims (a wheel's provenance, say) is not
#   a reason by itself (evidence.missing-claim).
# - An internal package name that is also public is judged by who signed
#   the artifact. A wheel of that name from a trusted producer is the
#   internal release. Anything else that can pull the name from the public
#   index blocks (custom.internal-name-unsigned).
apiVersion: attestgate/v2
kind: Policy
metadata:
  name: eval-corpus
  description: >-
    Built-in defaults, plus trusted producer keys, signed SLSA provenance for
    deployment, signature-based review of embedded code, and hashed
    dependency sets for deployment.

enforcement: enforce
defaultTier: standard

trust:
  keys:
    - ../keys/producer.pub
    - ../keys/producer-model.pub

exceptions:
  twoApprovers:
    severities: [critical]

stages:
  training: &intake
    severities:
      critical: block
      high: block
      medium: quarantine
      low: allow
      info: allow
    rules:
      check.failed: quarantine
      provenance.missing: allow
      evidence.missing-claim: allow
      hf.embedded-code: allow
      torchscript.embedded-code: allow
      deps.internal-name-public: allow
    outcomes:
      insufficientEvidence: quarantine
      checkError: quarantine
      dynamicSignal: severity
    custom:
      - &unsigned-code
        id: custom.unsigned-code
        expression: >-
          !evidence.signed && findings.exists(f, f.rule == "hf.embedded-code"
          || f.rule == "torchscript.embedded-code")
        action: quarantine
        severity: medium
        message: >-
          the artifact contains code (Python files or TorchScript) that no
          trusted signature vouches for
        remediation: >-
          Admit a release signed with the producer key (keys/producer.pub), or
          have a reviewer read the code and approve it with an exception.
      - &internal-name-unsigned
        id: custom.internal-name-unsigned
        expression: >-
          findings.exists(f, f.rule == "deps.internal-name-public" && f.level >= 3)
          && !("wheel" in artifact.formats && evidence.signed)
        action: block
        severity: high
        message: >-
          an internal package name that also exists on the public index can be
          installed from the public index, and no trusted producer signed this
          artifact
        remediation: >-
          Install internal packages from the internal index only, with pinned
          versions and hashes, or admit the wheel with the producer's signature.
  fine-tuning: *intake
  deployment:
    <<: *intake
    rules:
      check.failed: quarantine
      provenance.missing: quarantine
      evidence.missing-claim: allow
      hf.embedded-code: allow
      torchscript.embedded-code: allow
      deps.internal-name-public: allow
      deps.missing-hash: quarantine
    require:
      signature: true
      slsa:
        level: 2
    custom:
      - *unsigned-code
      - *internal-name-unsigned
    limits:
      egress: []
      filesystemWrites: false
      gpu: true
      capabilities: []
      action: quarantine
"""


def write_policy(root: Path) -> Path:
    """Write the corpus policy into ``root`` and return its path."""
    path = root / POLICY_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EVAL_POLICY, encoding="utf-8")
    return path
