"""``attestgate`` command-line entry point.

Each subcommand lives in its own ``cmd_*`` module with a ``register``
function that adds its parser and a ``run`` function that does the work and
returns the exit status. Exit statuses are listed in ``common.EPILOG``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from typing import TextIO

from attestgate._version import __version__
from attestgate.cli.common import EPILOG, EXIT_INTERNAL, EXIT_USAGE
from attestgate.errors import AttestgateError, ConfigurationError, UsageError

logger = logging.getLogger("attestgate")

# Subcommand name -> module under attestgate.cli. Modules import lazily so
# that `attestgate --help` does not load the scanners.
COMMANDS = {
    "admit": "cmd_admit",
    "audit": "cmd_audit",
    "policy": "cmd_policy",
    "verify": "cmd_verify",
    "sign": "cmd_sign",
    "attest": "cmd_attest",
    "scan": "cmd_scan",
    "quarantine": "cmd_quarantine",
    "serve": "cmd_serve",
    "exceptions": "cmd_exceptions",
    "deploy-profile": "cmd_deploy_profile",
    "db": "cmd_db",
    "eval": "cmd_eval",
}


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
    for module_name in COMMANDS.values():
        module = importlib.import_module(f"attestgate.cli.{module_name}")
        module.register(sub)
    return parser


class _EscapingFormatter(logging.Formatter):
    """Escapes control characters in log messages, which quote file and member names.

    A name with a newline would otherwise forge a line of a CI log. Tracebacks
    are appended after the message and keep their line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _UNPRINTABLE.sub(_escape, record.message)
        return super().formatMessage(record)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


# C0 and C1 controls, bidirectional overrides and lone surrogates.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


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
    handler.setFormatter(_EscapingFormatter("attestgate: %(levelname)s: %(name)s: %(message)s"))
    root = logging.getLogger("attestgate")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _unfinished(command: str) -> str:
    # A promotion is published by one rename at its end, so an interrupted
    # admission has put nothing into a store. Other commands may have done
    # part of their work (an evaluation keeps the admissions it made).
    if command == "admit":
        return "nothing was admitted"
    return f"attestgate {command} did not finish"


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
        module = importlib.import_module(f"attestgate.cli.{COMMANDS[args.command]}")
        code: int = module.run(args, stdout)
        return code
    except (UsageError, ConfigurationError) as exc:
        # A bad path, option or policy file is the caller's to fix.
        print(f"attestgate: error: {exc.render()}", file=sys.stderr)
        return EXIT_USAGE
    except AttestgateError as exc:
        print(f"attestgate: error: {exc.render()}", file=sys.stderr)
        if args.verbose >= 2:
            logger.exception("details")
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print(f"attestgate: interrupted; {_unfinished(args.command)}", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # last line of defence: fail closed and report
        print(
            f"attestgate: internal error: {type(exc).__name__}: {exc}\n"
            f"{_unfinished(args.command)}; run again with -vv for the traceback",
            file=sys.stderr,
        )
        if args.verbose >= 2:
            logger.exception("traceback")
        return EXIT_INTERNAL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
