"""``attestgate audit list|show|head|verify``: read and check the audit log."""

from __future__ import annotations

import argparse
import re
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError

_HEAD = re.compile(r"^(\d+):([0-9a-f]{64})$")


def _head_value(text: str) -> tuple[int, str]:
    match = _HEAD.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid head {text!r}; expected SEQ:HASH as `attestgate audit head` prints it"
        )
    return int(match.group(1)), match.group(2)


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="list, show or verify the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    audit_list = audit_sub.add_parser("list", help="list audit records, newest first")
    audit_list.add_argument(
        "--limit", type=int, default=50, metavar="N", help="records to show (default: 50)"
    )
    audit_list.add_argument(
        "--digest",
        metavar="sha256:HEX",
        help="show only records about the artifact with this digest",
    )
    common.add_home_option(audit_list)
    common.add_output_options(audit_list)

    audit_show = audit_sub.add_parser("show", help="print one record by its id")
    audit_show.add_argument("record_id", metavar="ID", help="record id, as admit prints it")
    common.add_home_option(audit_show)
    common.add_output_options(audit_show)

    audit_head = audit_sub.add_parser(
        "head",
        help="print the last record as SEQ:HASH, to keep outside the state directory",
    )
    common.add_home_option(audit_head)
    common.add_output_options(audit_head)

    audit_verify = audit_sub.add_parser(
        "verify",
        help="check the hash chain; exit 5 naming the first bad record",
        description="Check the hash chain of the audit log. Someone who can write the "
        "state directory can rewrite the whole chain consistently; pass a head kept "
        "elsewhere with --expect-head to detect that.",
    )
    audit_verify.add_argument(
        "--expect-head",
        type=_head_value,
        metavar="SEQ:HASH",
        help="a head printed earlier by `attestgate audit head`; the record at SEQ must "
        "still have HASH",
    )
    common.add_home_option(audit_verify)
    common.add_output_options(audit_verify)


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.audit import AuditLog, VerifyResult
    from attestgate.cli.render import render_audit_list
    from attestgate.errors import StorageError

    home = args.home or common.default_home()
    common.check_output(args.output)
    try:
        log = AuditLog(home, create=False)
    except StorageError as exc:
        if args.audit_command != "verify":
            raise
        # A log that cannot be opened has failed verification.
        result = VerifyResult(False, 0, None, exc.message)
        common.emit(_verify_text(args.format, result, str(home)), args.output, stdout)
        return common.EXIT_AUDIT_BROKEN
    try:
        if args.audit_command == "list":
            if args.limit < 1:
                raise UsageError(f"--limit must be at least 1, not {args.limit}")
            records = log.records(limit=args.limit, newest_first=True, artifact_digest=args.digest)
            if args.format == "json":
                text = common.dump_json([r.to_json() for r in records])
            else:
                text = render_audit_list(records)
        elif args.audit_command == "show":
            record = log.get(args.record_id)
            if record is None:
                raise UsageError(
                    f"no audit record with id {args.record_id} in {home}",
                    hint="`attestgate audit list` shows the ids",
                )
            if args.format == "json":
                text = common.dump_json(record.to_json())
            else:
                text = _render_record(record)
        elif args.audit_command == "head":
            head = log.head()
            if args.format == "json":
                text = common.dump_json(
                    {"seq": head[0], "hash": head[1]} if head else {"seq": 0, "hash": None}
                )
            else:
                text = f"{head[0]}:{head[1]}" if head else "the audit log is empty"
        else:
            result = log.verify(expect_head=args.expect_head)
            common.emit(_verify_text(args.format, result, str(home)), args.output, stdout)
            return common.EXIT_ALLOW if result.ok else common.EXIT_AUDIT_BROKEN
        common.emit(text, args.output, stdout)
        return common.EXIT_ALLOW
    finally:
        log.close()


def _verify_text(fmt: str, result: Any, home: str) -> str:
    from attestgate.cli.render import render_verify

    if fmt != "json":
        return render_verify(result, home)
    return common.dump_json(
        {
            "ok": result.ok,
            "verified_records": result.records,
            "first_bad_seq": result.first_bad_seq,
            "problem": result.problem,
            "home": home,
        }
    )


def _render_record(record: Any) -> str:
    from attestgate.cli.render import render_decision

    header = (
        f"audit record {record.seq}  {record.kind}  {record.created_at}\n"
        f"id        {record.record_id}\n"
        f"hash      {record.hash}\n"
        f"previous  {record.prev_hash}\n"
    )
    if record.kind == "decision" and "artifact" in record.body:
        return header + "\n" + render_decision(record.body)
    return header + "\n" + common.dump_json(record.body)
