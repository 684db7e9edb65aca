"""``attestgate exceptions``: list, add, approve and revoke exceptions."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError

_DURATION = re.compile(r"^(\d+)([dhm])$")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "exceptions",
        help="list, add, approve or revoke exceptions (waivers of one rule for one artifact)",
        description="An exception waives one rule for one artifact digest until it expires. "
        "Creating, approving and revoking one appends an audit record. A policy can require "
        "two different approvers before an exception waives a critical reason: the second "
        "reviewer runs `exceptions approve ID`.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list exceptions in force, oldest first")
    listing.add_argument("--digest", metavar="DIGEST", help="only those for sha256:<hex>")
    listing.add_argument(
        "--all", action="store_true", help="include expired and revoked exceptions"
    )

    adding = actions.add_parser("add", help="waive one rule for one artifact digest")
    adding.add_argument("digest", metavar="DIGEST", help="artifact digest, sha256:<hex>")
    adding.add_argument("--rule", required=True, metavar="RULE", help="rule id to waive")
    adding.add_argument("--reason", required=True, help="why the finding is acceptable")
    adding.add_argument(
        "--expires",
        metavar="WHEN",
        help="when the exception ends: a duration such as 30d, 12h or 90m, or an ISO 8601 "
        "date or time (UTC unless it has an offset; a date means the end of that day); "
        "default 30d, at most 366 days",
    )
    adding.add_argument("--approver", help="reviewer name (default: the login name)")

    approving = actions.add_parser(
        "approve", help="add a second, different approver to an exception"
    )
    approving.add_argument("exception_id", metavar="ID")
    approving.add_argument("--approver", help="reviewer name (default: the login name)")

    revoking = actions.add_parser("revoke", help="revoke an exception; it stops applying at once")
    revoking.add_argument("exception_id", metavar="ID")
    revoking.add_argument("--reason", required=True, help="why the exception is withdrawn")
    revoking.add_argument("--by", help="reviewer name (default: the login name)")

    for child in (listing, adding, approving, revoking):
        common.add_home_option(child)
        common.add_output_options(child)


def parse_expiry(text: str, now: datetime) -> datetime:
    """Parse a duration (30d, 12h, 90m) or an ISO 8601 date or time into a UTC instant."""
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount)}.get(
            unit, timedelta(minutes=amount)
        )
        return now + delta
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise UsageError(
            f"invalid expiry {text!r}",
            hint="use a duration such as 30d, or an ISO 8601 date such as 2027-01-31",
        ) from exc
    if len(text.strip()) == 10:
        value = value + timedelta(days=1) - timedelta(microseconds=1)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:
        raise UsageError(
            "the login name is unknown", hint="pass the reviewer's name with --approver"
        ) from exc


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.policy.exceptions import ExceptionStore

    common.check_output(args.output)
    home = args.home or common.default_home()
    with ExceptionStore(home) as store:
        if args.action == "list":
            items = store.list(args.digest)
            now = store.clock()
            if not args.all:
                items = [i for i in items if i.state(now) == "active"]
            rows = [{**i.to_json(), "state": i.state(now)} for i in items]
            text = common.dump_json(rows) if args.format == "json" else _render_list(rows)
        elif args.action == "add":
            expires = parse_expiry(args.expires, store.clock()) if args.expires else None
            item, warnings = store.add(
                args.digest,
                args.rule,
                reason=args.reason,
                approver=args.approver or _login(),
                expires_at=expires,
            )
            for warning in warnings:
                print(f"attestgate: warning: {warning}", file=sys.stderr)
            text = _render_one(item.to_json(), "added", args.format)
        elif args.action == "approve":
            item = store.approve(args.exception_id, args.approver or _login())
            text = _render_one(item.to_json(), "approved", args.format)
        else:
            item = store.revoke(args.exception_id, by=args.by or _login(), reason=args.reason)
            text = _render_one(item.to_json(), "revoked", args.format)
    common.emit(text, args.output, stdout)
    return common.EXIT_ALLOW


def _render_one(item: dict[str, Any], verb: str, fmt: str) -> str:
    if fmt == "json":
        return common.dump_json(item)
    return (
        f"exception {item['id']} {verb}\n"
        f"  waives  {item['rule']} for {item['artifact_digest']}\n"
        f"  until   {item['expires_at']}\n"
        f"  by      {', '.join(item['approvers'])}\n"
        f"  reason  {item['reason']}"
        + (
            f"\n  revoked {item['revoked_at']} by {item['revoked_by']}"
            if "revoked_at" in item
            else ""
        )
    )


def _render_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no exceptions"
    lines = [
        f"{'ID':<36}  {'STATE':<8} {'EXPIRES (UTC)':<20} {'DIGEST':<20} {'RULE':<32} APPROVERS"
    ]
    for row in rows:
        lines.append(
            f"{row['id']:<36}  {row['state']:<8} {row['expires_at'][:19]:<20} "
            f"{row['artifact_digest'][:19]:<20} {row['rule']:<32} {', '.join(row['approvers'])}"
        )
    return "\n".join(lines)
