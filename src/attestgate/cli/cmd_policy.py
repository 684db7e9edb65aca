"""``attestgate policy``: print the built-in policy, check a policy file, explain a decision."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError


def register(sub: Any) -> None:
    policy = sub.add_parser(
        "policy",
        help="print the built-in policy, check a policy file, or explain a decision",
        description="Work with policies: `default` prints the built-in policy, `check FILE` "
        "validates a policy and names the line and field of each problem, `explain "
        "RECORD_ID` shows which policy entry produced each reason of a stored decision.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    policy_sub.add_parser("default", help="print the built-in policy")

    check = policy_sub.add_parser(
        "check",
        help="validate a policy file (exit 2 when it is invalid)",
        description="Validate a policy file against its schema and the checks the schema "
        "cannot express. Errors and warnings name the line and field. Exit status 0 when "
        "the policy is valid, 2 when it is not.",
    )
    check.add_argument("file", type=Path, metavar="FILE", help="policy file (YAML)")
    check.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (such as a rule id no check reports) as errors",
    )
    common.add_output_options(check)

    explain = policy_sub.add_parser(
        "explain",
        help="show which policy entry produced each reason of a stored decision",
    )
    explain.add_argument("record_id", metavar="RECORD_ID", help="decision record id")
    common.add_home_option(explain)
    common.add_output_options(explain)


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    if args.policy_command == "check":
        return _check(args, stdout)
    if args.policy_command == "explain":
        return _explain(args, stdout)
    from attestgate.policy import default_policy_bytes

    stdout.write(default_policy_bytes().decode("utf-8"))
    return common.EXIT_ALLOW


def _check(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.errors import PolicyError
    from attestgate.policy import PolicyValidationError, load_policy

    common.check_output(args.output)
    source = str(args.file)
    errors: list[dict[str, Any]] = []
    warnings: list[str] = []
    summary: dict[str, Any] = {}
    try:
        policy = load_policy(args.file)
    except PolicyValidationError as exc:
        errors = [issue.to_json() for issue in exc.issues]
    except PolicyError as exc:
        errors = [{"line": 0, "field": "(document)", "message": exc.message}]
    else:
        warnings = list(policy.warnings)
        summary = {
            "name": policy.name,
            "api_version": policy.api_version,
            "enforcement": policy.mode,
            "default_tier": policy.default_tier,
            "digest": {"sha256": policy.sha256},
        }
    valid = not errors and not (args.strict and warnings)
    if args.format == "json":
        text = common.dump_json(
            {
                "source": source,
                "valid": valid,
                "policy": summary,
                "errors": errors,
                "warnings": warnings,
            }
        )
    else:
        text = _render_check(source, valid, summary, errors, warnings)
    common.emit(text, args.output, stdout)
    return common.EXIT_ALLOW if valid else common.EXIT_USAGE


def _render_check(
    source: str,
    valid: bool,
    summary: dict[str, Any],
    errors: list[dict[str, Any]],
    warnings: list[str],
) -> str:
    lines = []
    for error in errors:
        where = f"{source}:{error['line']}" if error["line"] else source
        lines.append(f"error: {where}: {error['field']}: {error['message']}")
    lines.extend(f"warning: {warning}" for warning in warnings)
    if summary and valid:
        lines.append(
            f"policy {source} is valid: {summary['api_version']}, name {summary['name']}, "
            f"enforcement {summary['enforcement']}, default tier {summary['default_tier']}"
        )
    elif summary:
        lines.append(f"policy {source} has warnings, which --strict treats as errors")
    else:
        lines.append(f"policy {source} is invalid: {len(errors)} error(s)")
    return "\n".join(lines)


def _explain(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.audit import AuditLog
    from attestgate.policy.explain import explain, render_explanation

    common.check_output(args.output)
    home = args.home or common.default_home()
    audit = AuditLog(home, create=False)
    try:
        entry = audit.get(args.record_id)
    finally:
        audit.close()
    if entry is None or entry.kind != "decision":
        raise UsageError(
            f"no decision record {args.record_id} in {home}",
            hint="`attestgate audit list` shows the records; admit prints each record's id",
        )
    explained = explain(entry.body)
    text = common.dump_json(explained) if args.format == "json" else render_explanation(explained)
    common.emit(text, args.output, stdout)
    return common.EXIT_ALLOW
