"""``attestgate`` command-line entry point.

Exit status:
  0  allow (admit), success (other commands)
  1  internal error: the gate could not finish; nothing was allowed
  2  usage error: a bad option or a path that does not exist
  3  quarantine
  4  block
  5  audit log verification failed
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import platformdirs

from attestgate._version import __version__
from attestgate.errors import AttestgateError, UsageError

EXIT_ALLOW = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_QUARANTINE = 3
EXIT_BLOCK = 4
EXIT_AUDIT_BROKEN = 5

EXIT_FOR_ACTION = {
    "allow": EXIT_ALLOW,
    "quarantine": EXIT_QUARANTINE,
    "block": EXIT_BLOCK,
}

logger = logging.getLogger("attestgate")

EPILOG = """\
exit status:
  0  allow (admit), success (other commands)
  1  internal error: the gate could not finish; nothing was allowed
  2  usage error, such as a path that does not exist
  3  quarantine
  4  block
  5  audit log verification failed

environment:
  ATTESTGATE_HOME       state directory (default: the per-user data directory)
  ATTESTGATE_LOG_LEVEL  log level on stderr (debug, info, warning, error)
"""


def default_home() -> Path:
    env = os.environ.get("ATTESTGATE_HOME")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("attestgate", appauthor=False))


def _add_common(parser: argparse.ArgumentParser, *, home: bool = True) -> None:
    if home:
        parser.add_argument(
            "--home",
            type=Path,
            metavar="DIR",
            default=None,
            help="state directory with the audit log (default: $ATTESTGATE_HOME or "
            "the per-user data directory)",
        )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format (default: text)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the report to FILE (atomically) instead of standard output",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attestgate",
        description="Attestation-aware promotion gate for machine-learning artifacts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attestgate {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more on stderr (-v info, -vv debug, with tracebacks)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    admit = sub.add_parser(
        "admit",
        help="identify, scan and decide on an artifact, and record the decision",
        description="Admit a model file or directory: identify it, scan it without "
        "loading it, apply the policy, and append the decision to the audit log.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    admit.add_argument("path", type=Path, metavar="PATH", help="model file or directory")
    admit.add_argument(
        "--stage",
        choices=("training", "fine-tuning", "deployment"),
        default="deployment",
        help="environment the artifact is promoted into (default: deployment)",
    )
    admit.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="policy file (default: the built-in policy; see `attestgate policy default`)",
    )
    _add_common(admit)

    audit = sub.add_parser("audit", help="list or verify the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    audit_list = audit_sub.add_parser("list", help="list audit records, newest first")
    audit_list.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help="records to show (default: 50)",
    )
    _add_common(audit_list)
    audit_verify = audit_sub.add_parser(
        "verify",
        help="check the hash chain; exit 5 naming the first bad record",
    )
    _add_common(audit_verify)

    policy = sub.add_parser("policy", help="show the built-in policy")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    policy_sub.add_parser("default", help="print the built-in policy")
    return parser


def _configure_logging(verbose: int) -> None:
    level_name = os.environ.get("ATTESTGATE_LOG_LEVEL", "").upper()
    level = getattr(logging, level_name, None) if level_name else None
    if not isinstance(level, int):
        level = logging.WARNING
    if verbose == 1:
        level = min(level, logging.INFO)
    elif verbose >= 2:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("attestgate: %(levelname)s: %(name)s: %(message)s"))
    root = logging.getLogger("attestgate")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _emit(text: str, output: Path | None, stdout: TextIO) -> None:
    if output is None:
        stdout.write(text if text.endswith("\n") else text + "\n")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run the command line and return the exit status."""
    stdout = stdout or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(args.verbose)
    try:
        return _dispatch(args, stdout)
    except UsageError as exc:
        print(f"attestgate: error: {exc.render()}", file=sys.stderr)
        return EXIT_USAGE
    except AttestgateError as exc:
        print(f"attestgate: error: {exc.render()}", file=sys.stderr)
        if args.verbose >= 2:
            logger.exception("details")
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("attestgate: interrupted; nothing was admitted", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:
        print(
            f"attestgate: internal error: {type(exc).__name__}: {exc}\n"
            "nothing was admitted; run again with -vv for the traceback",
            file=sys.stderr,
        )
        if args.verbose >= 2:
            logger.exception("traceback")
        return EXIT_INTERNAL


def _dispatch(args: argparse.Namespace, stdout: TextIO) -> int:
    if args.command == "admit":
        from attestgate.cli.commands import run_admit

        return run_admit(args, stdout)
    if args.command == "audit":
        from attestgate.cli.commands import run_audit

        return run_audit(args, stdout)
    if args.command == "policy":
        from attestgate.policy.engine import default_policy_bytes

        stdout.write(default_policy_bytes().decode("utf-8"))
        return EXIT_ALLOW
    raise UsageError(f"unknown command {args.command!r}")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
