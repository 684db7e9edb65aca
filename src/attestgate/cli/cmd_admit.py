"""``attestgate admit``: identify, scan, decide and record."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.cli.trust_options import add_evidence_options, trust_from_args
from attestgate.errors import UsageError
from attestgate.intake.references import is_reference
from attestgate.stages import STAGES

# Show progress only for artifacts big enough for a person to wait on.
PROGRESS_MIN_BYTES = 256 * 1024 * 1024


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "admit",
        help="identify, scan and decide on an artifact, and record the decision",
        description="Admit a model file or directory: identify it, scan it without "
        "loading it, apply the policy, and append the decision to the audit log.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path",
        type=common.artifact_path,
        metavar="PATH",
        help="model file or directory, OCI image layout or `docker save` archive, Hugging Face "
        "cache snapshot, or a reference: oci://HOST/NAME@sha256:DIGEST, hf://OWNER/NAME@COMMIT",
    )
    parser.add_argument(
        "--stage",
        choices=STAGES,
        default="deployment",
        help="environment the artifact is promoted into (default: deployment)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="policy file (default: the built-in policy; see `attestgate policy default`)",
    )
    add_evidence_options(parser)
    _add_dynamic_options(parser)
    _add_import_option(parser)
    _add_tier_and_vsa_options(parser)
    parser.add_argument(
        "--promote",
        action="store_true",
        help="act on the decision: copy an allowed artifact into the trusted store and a "
        "quarantined one into the quarantine store (a block stores nothing)",
    )
    common.add_home_option(parser)
    common.add_output_options(parser)


def _add_dynamic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dynamic",
        action="append",
        default=[],
        metavar="NAME",
        help="also run the dynamic-evidence plug-in NAME (repeatable); `sandbox` loads the "
        "artifact with its native loaders in an isolated, disposable child process",
    )
    parser.add_argument(
        "--signals",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="attach runtime-monitor events recorded while the artifact was loaded elsewhere "
        "(Falco JSON output or Tetragon JSON export, detected from the content; repeatable)",
    )


def _add_import_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import-report",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="add the results of another scanner's report to the findings: ModelScan JSON, "
        "SARIF 2.1.0 (Bandit, Semgrep, Trivy and others) or Trivy JSON, detected from the "
        "content (repeatable)",
    )


def _add_tier_and_vsa_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tier",
        choices=("low", "standard", "critical"),
        help="criticality tier of the artifact (default: the attestgate.dev/tier label in "
        "PATH.labels.yaml beside the artifact, else the policy's defaultTier)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE",
        help="artifact label file (default: PATH.labels.yaml beside the artifact, if present)",
    )
    parser.add_argument(
        "--vsa-out",
        type=Path,
        metavar="FILE",
        help="write a signed SLSA verification summary (DSSE envelope, one JSON line) of the "
        "decision to FILE; needs --vsa-key",
    )
    parser.add_argument(
        "--vsa-key",
        type=Path,
        metavar="KEY",
        help="the gate's private key (PEM) that signs the verification summary; an encrypted "
        "key reads its password from ATTESTGATE_KEY_PASSWORD",
    )


def _check_vsa_options(args: argparse.Namespace, path: Path) -> None:
    if args.vsa_out is None and args.vsa_key is None:
        return
    if args.vsa_out is None or args.vsa_key is None:
        raise UsageError(
            "--vsa-out and --vsa-key go together",
            hint="pass both to write a signed verification summary",
        )
    common.check_output(args.vsa_out, path)
    from attestgate.evidence import EvidenceError
    from attestgate.evidence.keys import load_private_key
    from attestgate.evidence.produce import key_password

    # Fail before anything is scanned or recorded, not after.
    try:
        load_private_key(args.vsa_key, key_password())
    except EvidenceError as exc:
        raise UsageError(exc.message, hint=exc.hint or "pass the gate's PEM private key") from exc


class _Progress:
    """A byte counter drawn on a terminal's stderr line, at most ten times a second."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.lock = threading.Lock()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < 0.1 and self.done < self.total:
                return
            self.last = now
            pct = 100 * self.done / self.total
            self.stream.write(
                f"\rreading {self.done / 2**20:,.0f} / {self.total / 2**20:,.0f} MiB ({pct:3.0f}%)"
            )
            self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def _artifact_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.cli.render import render_decision
    from attestgate.pipeline import admit

    path: Path = args.path
    common.check_output(args.output, path)
    if not path.exists() and not path.is_symlink() and not is_reference(path):
        raise UsageError(
            f"artifact path {path} does not exist",
            hint="pass the model file or directory to admit",
        )
    policy = None
    if args.policy:
        # A policy file is checked before any work, so a mistake in it costs
        # nothing. The built-in policy loads beside the hash pass instead.
        from attestgate.policy import load_policy

        policy = load_policy(args.policy)
    home = args.home or common.default_home()
    trust = trust_from_args(args)
    _check_vsa_options(args, path)

    progress = None
    if sys.stderr.isatty():
        size = _artifact_size(path)
        if size >= PROGRESS_MIN_BYTES:
            progress = _Progress(size, sys.stderr)
    try:
        admission = admit(
            path,
            stage=args.stage,
            policy=policy,
            home=home,
            progress=progress,
            evidence=args.evidence,
            trust=trust,
            discover_evidence=not args.no_discover,
            dynamic=args.dynamic,
            signal_files=args.signals,
            imported_reports=args.import_report,
            tier=args.tier,
            labels_file=args.labels,
        )
    finally:
        if progress is not None:
            progress.finish()

    record = dict(admission.record)
    if admission.audit is not None:
        record["audit"] = {"seq": admission.audit.seq, "hash": admission.audit.hash}
    if args.promote:
        from attestgate.stores import act_on_admission

        promotion = act_on_admission(home, admission.record)
        record["promotion"] = promotion.to_json() if promotion is not None else None
    if args.vsa_out is not None:
        from attestgate.evidence.produce import write_atomically
        from attestgate.policy.vsa import sign_vsa

        write_atomically(args.vsa_out, sign_vsa(admission.record, args.vsa_key))
        record["vsa"] = {"path": str(args.vsa_out)}
    text = common.dump_json(record) if args.format == "json" else render_decision(record)
    promoted = record.get("promotion")
    if args.format != "json" and promoted:
        stored = f"stored in the {promoted['store']} store at {promoted['path']}"
        text = f"{text.rstrip()}\n{stored}\n"
    common.emit(text, args.output, stdout)
    return common.EXIT_FOR_ACTION[admission.action]
