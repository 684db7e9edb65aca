"""``attestgate deploy-profile``: least-privilege Kubernetes manifests for an allowed artifact."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError
from attestgate.stages import STAGES

HASH_CHUNK = 4 * 1024 * 1024


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "deploy-profile",
        help="print least-privilege Kubernetes manifests for an artifact's latest allow decision",
        description="Print a NetworkPolicy that denies egress except to declared and "
        "permitted destinations, and a Pod with a locked-down security context (non-root, "
        "read-only root file system, no privilege escalation, all capabilities dropped, a "
        "GPU only when the release claims require one), for the artifact's latest allow "
        "decision in the audit log.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path",
        metavar="PATH",
        help="the admitted model file or directory, or its digest as sha256:<hex>",
    )
    parser.add_argument(
        "--stage",
        choices=STAGES,
        default="deployment",
        help="use the latest allow decision for this stage (default: deployment)",
    )
    parser.add_argument("--record", metavar="ID", help="use this decision record instead")
    parser.add_argument("--name", help="name of the Pod (default: from the artifact's name)")
    parser.add_argument("--namespace", help="namespace of the manifests (default: none)")
    parser.add_argument(
        "--image",
        default="REPLACE-WITH-SERVING-IMAGE",
        help="container image that serves the model (default: a placeholder to replace)",
    )
    common.add_home_option(parser)
    common.add_output_options(parser, formats=("yaml", "json"))
    parser.set_defaults(format="yaml")


def artifact_digest(text: str) -> str:
    """Return ``sha256:<hex>`` for a digest argument, or compute it for a file or directory.

    A directory's digest is the OpenSSF Model Signing root digest the gate
    records, over the same files the admission hashed.
    """
    if text.lower().startswith("sha256:"):
        from attestgate.policy.exceptions import normalize_digest

        return normalize_digest(text)
    path = Path(text)
    if path.is_file():
        return f"sha256:{_file_sha256(path)}"
    if path.is_dir():
        from attestgate.identify.formats import Format
        from attestgate.identify.stream import FileReport, root_digest
        from attestgate.identify.walk import walk

        listing = walk(path)
        reports = [
            FileReport(entry.path, 0, _file_sha256(entry.location), Format.UNKNOWN)
            for entry in listing.entries
        ]
        return f"sha256:{root_digest(reports)}"
    raise UsageError(
        f"artifact {text} does not exist",
        hint="pass the admitted file or directory, or its digest as sha256:<hex>",
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _find_record(home: Path, digest: str, stage: str, record_id: str | None) -> dict[str, Any]:
    from attestgate.audit import AuditLog

    audit = AuditLog(home, create=False)
    try:
        if record_id is not None:
            entry = audit.get(record_id)
            if entry is None or entry.kind != "decision":
                raise UsageError(f"no decision record {record_id} in {home}")
            if entry.artifact_digest != digest:
                raise UsageError(
                    f"decision record {record_id} is about {entry.artifact_digest}, not {digest}"
                )
            return entry.body
        for entry in audit.records(newest_first=True, artifact_digest=digest):
            body = entry.body
            wanted = body.get("stage") == stage and body.get("decision") == "allow"
            if entry.kind == "decision" and wanted:
                return body
    finally:
        audit.close()
    raise UsageError(
        f"no allow decision for {digest} at stage {stage} in {home}",
        hint=f"admit the artifact first: attestgate admit PATH --stage {stage}",
    )


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    import yaml

    from attestgate.policy.deploy_profile import build_manifests

    common.check_output(args.output)
    home = args.home or common.default_home()
    digest = artifact_digest(args.path)
    record = _find_record(home, digest, args.stage, args.record)
    enforcement = (record.get("evaluation") or {}).get("enforcement") or {}
    if enforcement.get("decision") not in (None, "allow"):
        print(
            f"attestgate: warning: decision {record['id']} was reported as allow in audit mode, "
            f"but the policy decided {enforcement['decision']}",
            file=sys.stderr,
        )
    manifests, notes = build_manifests(
        record, name=args.name, namespace=args.namespace, image=args.image
    )
    for note in notes:
        print(f"attestgate: note: {note}", file=sys.stderr)
    if args.format == "json":
        text = common.dump_json({"apiVersion": "v1", "kind": "List", "items": manifests})
    else:
        text = yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True)
    common.emit(text, args.output, stdout)
    return common.EXIT_ALLOW
