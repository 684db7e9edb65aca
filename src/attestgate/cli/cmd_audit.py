"""``attestgate audit list|verify``: read and check the audit log."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="list or verify the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    audit_list = audit_sub.add_parser("list", help="list audit records, newest first")
    audit_list.add_argument(
        "--limit", type=int, default=50, metavar="N", help="records to show (default: 50)"
    )
    common.add_home_option(audit_list)
    common.add_output_options(audit_list)
    audit_verify = audit_sub.add_parser(
        "verify",
        help="check the hash chain; exit 5 naming the first bad record",
    )
    common.add_home_option(audit_verify)
    common.add_output_options(audit_verify)


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.audit import AuditLog
    from attestgate.cli.render import render_audit_list, render_verify

    home = args.home or common.default_home()
    log = AuditLog(home)
    try:
        if args.audit_command == "list":
            if args.limit < 1:
                raise UsageError(f"--limit must be at least 1, not {args.limit}")
            records = log.records(limit=args.limit, newest_first=True)
            if args.format == "json":
                text = common.dump_json([r.to_json() for r in records])
            else:
                text = render_audit_list(records)
            common.emit(text, args.output, stdout)
            return common.EXIT_ALLOW
        result = log.verify()
        if args.format == "json":
            text = common.dump_json(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "first_bad_seq": result.first_bad_seq,
                    "problem": result.problem,
                    "home": str(home),
                }
            )
        else:
            text = render_verify(result, str(home))
        common.emit(text, args.output, stdout)
        return common.EXIT_ALLOW if result.ok else common.EXIT_AUDIT_BROKEN
    finally:
        log.close()
