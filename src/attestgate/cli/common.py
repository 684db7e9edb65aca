"""Pieces every subcommand shares: exit codes, options, output."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

import platformdirs

EXIT_ALLOW = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_QUARANTINE = 3
EXIT_BLOCK = 4
EXIT_AUDIT_BROKEN = 5
EXIT_FINDINGS = 6

EXIT_FOR_ACTION = {"allow": EXIT_ALLOW, "quarantine": EXIT_QUARANTINE, "block": EXIT_BLOCK}

EPILOG = """\
exit status:
  0  allow (admit), success (other commands), no finding at or above --fail-on (scan)
  1  internal error: the gate could not finish; nothing was allowed
     (scan: a check failed on a file, so the scan is incomplete)
  2  usage error, such as a path that does not exist
  3  quarantine
  4  block
  5  audit log verification failed
  6  findings at or above --fail-on (scan)

environment:
  ATTESTGATE_HOME       state directory (default: the per-user data directory)
  ATTESTGATE_LOG_LEVEL  log level on stderr (debug, info, warning, error)
"""


def default_home() -> Path:
    env = os.environ.get("ATTESTGATE_HOME")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("attestgate", appauthor=False))


def add_home_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=None,
        help="state directory with the audit log (default: $ATTESTGATE_HOME or "
        "the per-user data directory)",
    )


def add_output_options(
    parser: argparse.ArgumentParser, formats: tuple[str, ...] = ("text", "json")
) -> None:
    add_verbose_option(parser)
    parser.add_argument(
        "--format",
        choices=formats,
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


def artifact_path(text: str) -> Path:
    """Parse a PATH argument, rejecting the empty string.

    ``Path("")`` is the current directory, so an unset shell variable in
    ``attestgate admit "$MODEL"`` would otherwise admit whatever directory
    the job runs in.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("PATH is empty; pass the model file or directory")
    return Path(text)


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """Accept -v after the subcommand too, adding to any -v given before it."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more on stderr (-v info, -vv debug, with tracebacks)",
    )


def check_output(output: Path | None, artifact: Path | None = None) -> None:
    """Reject an ``-o`` target that cannot be written, before any work is recorded."""
    if output is None:
        return
    from attestgate.errors import UsageError

    if output.is_dir():
        raise UsageError(f"output {output} is a directory", hint="pass a file name to -o")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(
            f"output directory {parent} does not exist", hint="create it or choose another -o"
        )
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output directory {parent} is not writable")
    if artifact is not None:
        target = output.resolve()
        root = artifact.resolve()
        if target == root or root in target.parents:
            raise UsageError(
                f"output {output} is inside the artifact {artifact}",
                hint="writing the report there would change the artifact; choose another -o",
            )


def emit(text: str, output: Path | None, stdout: TextIO) -> None:
    """Write a report to ``output`` atomically, or to ``stdout``."""
    if not text.endswith("\n"):
        text += "\n"
    # Names that were not UTF-8 reach Python as lone surrogates, which no
    # UTF-8 stream accepts. Inside a JSON string the escape written here is
    # the JSON escape of the same character.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if output is None:
        stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        # mkstemp creates the file as 0600; give the report the mode any
        # other file written under the caller's umask would have.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
