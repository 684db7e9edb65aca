"""``attestgate scan``: identify and scan an artifact, without a policy or a record.

Nothing is written to the state directory. The exit status distinguishes a
clean scan (0), findings at or above ``--fail-on`` (6) and a scan that a
failed check left incomplete (1). Status 1 wins over 6 because the findings
then do not cover the whole artifact.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError
from attestgate.findings import Severity

logger = logging.getLogger(__name__)

FORMATS = ("text", "json", "sarif")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "scan",
        help="identify and scan an artifact and print its findings, without deciding",
        description="Scan a model file or directory with attestgate's scanners alone: "
        "no policy, no decision, no audit record, nothing written to the state directory. "
        "Findings print as text, JSON (--format json) or SARIF 2.1.0 (--format sarif).",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path", type=common.artifact_path, metavar="PATH", help="model file or directory"
    )
    parser.add_argument(
        "--fail-on",
        type=_severity,
        default=Severity.HIGH,
        metavar="SEVERITY",
        help="exit with status 6 when a finding is at or above SEVERITY: critical, high, "
        "medium, low or info (default: high)",
    )
    common.add_output_options(parser, formats=FORMATS)


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.cli.render import render_scan
    from attestgate.pipeline import inspect
    from attestgate.reports.scan_report import outcome, scan_report, scan_sarif

    path: Path = args.path
    common.check_output(args.output, path)
    if not path.exists() and not path.is_symlink():
        raise UsageError(
            f"artifact path {path} does not exist",
            hint="pass the model file or directory to scan",
        )
    inspection = inspect(path)
    result = outcome(inspection.findings, args.fail_on)
    code = common.EXIT_ALLOW
    if not result.complete:
        code = common.EXIT_INTERNAL
    elif result.failed:
        code = common.EXIT_FINDINGS

    if args.format == "sarif":
        text = common.dump_json(scan_sarif(inspection, result, code))
    else:
        report = scan_report(inspection, result)
        text = common.dump_json(report) if args.format == "json" else render_scan(report)
    common.emit(text, args.output, stdout)
    if not result.complete:
        logger.error(
            "%d check(s) failed on files of %s, so the scan is incomplete; "
            "see the check.failed findings",
            result.check_failures,
            path,
        )
    return code
