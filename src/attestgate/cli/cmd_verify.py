"""``attestgate verify``: check the evidence for an artifact, without deciding or recording."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from attestgate.cli import common
from attestgate.cli.trust_options import add_evidence_options, trust_from_args
from attestgate.errors import UsageError

if TYPE_CHECKING:
    from attestgate.evidence import EvidenceReport

EPILOG = """\
exit status:
  0  every piece of evidence verifies, is trusted and binds to the artifact
  1  internal error: the evidence could not be checked
  2  usage error, such as a path that does not exist
  3  incomplete: no evidence, an untrusted or unsigned signer, or files the
     signature does not cover
  4  failed: an invalid signature, a digest mismatch, forged provenance, a
     contradicted claim or an invalid schema

Missing training or release claims are listed but do not change the exit
status; `attestgate admit` weighs them with the policy.
"""

EXIT_FOR_STATUS = {"verified": common.EXIT_ALLOW, "incomplete": common.EXIT_QUARANTINE}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "verify",
        help="verify the signatures and claims for an artifact",
        description="Verify every piece of evidence for a model file or directory: "
        "signatures, signer trust, subject digests, predicates and claims checked "
        "against a scan of the artifact. Nothing is decided or recorded.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="model file or directory")
    add_evidence_options(parser)
    common.add_output_options(parser)


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.evidence import verify_evidence
    from attestgate.pipeline import inspect

    path: Path = args.path
    if not path.exists() and not path.is_symlink():
        raise UsageError(
            f"artifact path {path} does not exist",
            hint="pass the model file or directory whose evidence to verify",
        )
    trust = trust_from_args(args)
    inspection = inspect(path)
    report = verify_evidence(
        inspection.artifact,
        inspection.findings,
        evidence=args.evidence,
        trust=trust,
        discover=not args.no_discover,
    )
    result = _result(report)
    document = {
        "artifact": {
            "path": inspection.artifact.path,
            "digest": {"sha256": inspection.artifact.sha256},
        },
        "result": result,
        "evidence": report.to_json(),
        "findings": [f.to_json() for f in report.all_findings],
    }
    text = common.dump_json(document) if args.format == "json" else _render(document)
    common.emit(text, args.output, stdout)
    return EXIT_FOR_STATUS.get(result, common.EXIT_BLOCK)


def _result(report: EvidenceReport) -> str:
    if not report.pieces:
        return "incomplete"
    return report.status.value


def _render(document: dict[str, Any]) -> str:
    evidence = document["evidence"]
    lines = [
        f"evidence for {document['artifact']['path']}",
        f"  digest sha256:{document['artifact']['digest']['sha256']}",
        "",
    ]
    for piece in evidence["pieces"]:
        signer = piece.get("signer") or {}
        who = signer.get("identity") or "-"
        trust = "trusted" if signer.get("trusted") else "not trusted"
        lines.append(f"{piece['status'].upper():10}  {piece['source']}")
        lines.append(
            f"            {piece['kind']}, signature {piece['signature']}, "
            f"signer {signer.get('kind', 'none')} {who} ({trust}), "
            f"{'bound to' if piece['bound'] else 'not bound to'} the artifact"
        )
        if piece.get("predicate_type"):
            lines.append(f"            predicate {piece['predicate_type']}")
    if not evidence["pieces"]:
        lines.append("no evidence was given or found beside the artifact")
    for claim_set, claims in evidence["claims"].items():
        done = [c for c, v in claims.items() if v["status"] == "complete"]
        lines.append(f"{claim_set} claims: {len(done)} of {len(claims)} complete")
    if document["findings"]:
        lines.append("")
        lines.append("findings")
    for item in document["findings"]:
        lines.append(f"  {item['severity'].upper():8}  {item['rule']}  {item['file']}")
        lines.append(f"            {item['message']}")
        lines.append(f"            fix: {item['remediation']}")
    lines.append("")
    lines.append(f"result  {document['result'].upper()}")
    return "\n".join(lines)
