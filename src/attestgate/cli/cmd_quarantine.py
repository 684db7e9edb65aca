"""``attestgate quarantine``: list, show, approve, reject and reconcile quarantined artifacts."""

from __future__ import annotations

import argparse
import getpass
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.cli.cmd_exceptions import parse_expiry
from attestgate.errors import UsageError

SEVERITIES = ("info", "low", "medium", "high", "critical")
STATES = ("queued", "approved", "rejected")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "quarantine",
        help="list, show, approve or reject quarantined artifacts",
        description="Work through the quarantine queue, a table in the gate's database. "
        "Approving records an exception for every rule that quarantined the artifact, admits it "
        "again and promotes it when the decision becomes allow. Rejecting removes it from the "
        "quarantine store. Reconciling repairs the queue after a crash, from the audit log.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list the queue, oldest first")
    listing.add_argument(
        "--stage",
        choices=("training", "fine-tuning", "deployment"),
        help="only items quarantined for this stage",
    )
    listing.add_argument(
        "--severity", choices=SEVERITIES, help="only items whose worst reason is at least this"
    )
    listing.add_argument(
        "--older-than", type=float, metavar="HOURS", help="only items queued at least HOURS ago"
    )
    listing.add_argument(
        "--state",
        choices=(*STATES, "all"),
        default="queued",
        help="list entries in this review state (default: queued)",
    )

    showing = actions.add_parser("show", help="show one item's record and earlier decisions")
    showing.add_argument(
        "digest",
        metavar="DIGEST",
        help="sha256: and the hex digits of an entry: all 64, or a unique prefix of at "
        "least 12 as `list` prints it",
    )

    approving = actions.add_parser("approve", help="approve with a reason and an expiry")
    approving.add_argument(
        "digest", metavar="DIGEST", help="sha256:<hex> of a queued artifact, or a unique prefix"
    )
    approving.add_argument("--reason", required=True, help="why the findings are acceptable")
    approving.add_argument(
        "--expires",
        required=True,
        metavar="DATE",
        help="when the exception ends: a duration such as 30d, 12h or 90m, or an ISO 8601 "
        "date (the end of that day, UTC) or time (UTC unless it has an offset), at most 366 "
        "days away and within the policy's maxDays",
    )
    approving.add_argument("--approver", help="reviewer name (default: the login name)")
    approving.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the policy file that quarantined the artifact (default: the built-in policy); "
        "any other policy is refused",
    )

    rejecting = actions.add_parser("reject", help="reject and remove from quarantine")
    rejecting.add_argument(
        "digest", metavar="DIGEST", help="sha256:<hex> of a queued artifact, or a unique prefix"
    )
    rejecting.add_argument("--reason", required=True, help="what is wrong with the artifact")
    rejecting.add_argument("--reviewer", help="reviewer name (default: the login name)")

    reconciling = actions.add_parser(
        "reconcile",
        help="repair the queue after a crash and report entries whose bytes or records are missing",
    )

    for child in (listing, showing, approving, rejecting, reconciling):
        common.add_home_option(child)
        common.add_output_options(child)


def _text_list(items: list[dict[str, Any]], state: str, filtered: bool) -> str:
    if not items:
        subject = "no entry" if state == "all" else f"no {state} entry"
        return subject + (" matches the filters" if filtered else " in the quarantine queue")
    lines = [f"{'DIGEST':<20} {'STAGE':<12} {'SEVERITY':<9} {'STATE':<9} {'QUEUED':<33} RULES"]
    for item in items:
        lines.append(
            f"{item['digest'][:19]:<20} {item['stage']:<12} {item['severity']:<9} "
            f"{item['state']:<9} {item['queued_at']:<33} {', '.join(item['rules'])}"
        )
    return "\n".join(lines)


def _text_approval(digest: str, decision: str, promoted: bool) -> str:
    text = f"approved {digest}: the decision is now {decision}"
    if promoted:
        return text + " and it was promoted to the trusted store"
    if decision == "quarantine":
        return (
            text + "; it stays queued with the reasons the exceptions do not cover "
            f"(`attestgate quarantine show {digest}`)"
        )
    return text


def _text_reconcile(body: dict[str, list[str]]) -> str:
    labels = {
        "added": "queue rows added for store entries",
        "completed": "recorded reviews finished",
        "missing": "queued entries whose bytes are missing",
        "unrecorded": "store entries without audit records (not queued)",
    }
    lines = [f"{label}: {', '.join(body[key]) or 'none'}" for key, label in labels.items()]
    return "\n".join(lines)


def _text_show(shown: dict[str, Any]) -> str:
    record = shown["record"]
    lines = [
        f"digest:   {shown['item']['digest']}",
        f"path:     {record['artifact']['path']}",
        f"stage:    {record['stage']}",
        f"summary:  {record['summary']}",
        "findings:",
    ]
    for finding in record.get("findings", []):
        lines.append(f"  [{finding['severity']}] {finding['rule']} at {finding['file']}")
        lines.append(f"      {finding['message']}")
        if finding.get("remediation"):
            lines.append(f"      fix: {finding['remediation']}")
    lines.append("decisions on this digest:")
    for item in shown["history"]:
        lines.append(
            f"  #{item['seq']} {item['created_at']} {item['kind']} {item['decision'] or ''}"
        )
    return "\n".join(lines)


# The shortest digest prefix accepted, as `list` prints it: sha256: and 12 hex digits.
MIN_PREFIX_HEX = 12


def _full_digest(home: Path, text: str) -> str:
    """Return the full digest that ``text`` names, expanding a unique prefix of an entry's."""
    from attestgate.stores import list_queue

    hex_part = text.removeprefix("sha256:").lower()
    if len(hex_part) == 64 or not re.fullmatch(r"[0-9a-f]+", hex_part):
        return text
    if len(hex_part) < MIN_PREFIX_HEX:
        raise UsageError(
            f"digest prefix {text!r} is shorter than {MIN_PREFIX_HEX} hex digits",
            hint="give the full digest or the prefix `attestgate quarantine list` prints",
        )
    matches = sorted(
        {
            item.digest
            for item in list_queue(home, state=None)
            if item.digest.removeprefix("sha256:").startswith(hex_part)
        }
    )
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise UsageError(
            f"no quarantine entry has a digest starting with {text!r}",
            hint="run `attestgate quarantine list --state all` to see the digests",
        )
    raise UsageError(
        f"digest prefix {text!r} matches {len(matches)} entries",
        hint="give more hex digits, or the full digest from `list --format json`",
    )


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.policy import load_policy
    from attestgate.stores import approve, list_queue, reconcile, reject, show

    home = args.home or common.default_home()
    common.check_output(args.output)
    as_json = args.format == "json"
    if args.action in ("show", "approve", "reject"):
        args.digest = _full_digest(home, args.digest)
    if args.action == "list":
        older = timedelta(hours=args.older_than) if args.older_than is not None else None
        filtered = args.stage is not None or args.severity is not None or older is not None
        items = [
            i.to_json()
            for i in list_queue(
                home,
                stage=args.stage,
                min_severity=args.severity,
                older_than=older,
                state=None if args.state == "all" else args.state,
            )
        ]
        text = common.dump_json(items) if as_json else _text_list(items, args.state, filtered)
    elif args.action == "show":
        shown = show(home, args.digest)
        text = common.dump_json(shown) if as_json else _text_show(shown)
    elif args.action == "approve":
        result = approve(
            home,
            args.digest,
            reason=args.reason,
            approver=args.approver or getpass.getuser(),
            expires=parse_expiry(args.expires, datetime.now(UTC)),
            policy=load_policy(args.policy) if args.policy else None,
        )
        body = result.to_json()
        text = (
            common.dump_json(body)
            if as_json
            else _text_approval(args.digest, result.decision, bool(result.promotion))
        )
        common.emit(text, args.output, stdout)
        return common.EXIT_FOR_ACTION[result.decision]
    elif args.action == "reconcile":
        repaired = reconcile(home).to_json()
        text = common.dump_json(repaired) if as_json else _text_reconcile(repaired)
    else:
        reject(home, args.digest, reason=args.reason, reviewer=args.reviewer or getpass.getuser())
        text = common.dump_json({"rejected": args.digest}) if as_json else f"rejected {args.digest}"
    common.emit(text, args.output, stdout)
    return common.EXIT_ALLOW
