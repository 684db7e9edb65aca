"""The work behind each subcommand; ``main`` parses arguments and calls these."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from attestgate.audit import AuditLog
from attestgate.cli import main as cli
from attestgate.cli.render import render_audit_list, render_decision, render_verify
from attestgate.errors import UsageError
from attestgate.pipeline import admit
from attestgate.policy import load_default_policy, load_policy

# Show progress only for artifacts big enough for a person to wait on.
PROGRESS_MIN_BYTES = 256 * 1024 * 1024


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


def run_admit(args: argparse.Namespace, stdout: TextIO) -> int:
    path: Path = args.path
    if not path.exists() and not path.is_symlink():
        raise UsageError(
            f"artifact path {path} does not exist",
            hint="pass the model file or directory to admit",
        )
    policy = load_policy(args.policy) if args.policy else load_default_policy()
    home = args.home or cli.default_home()

    progress = None
    if sys.stderr.isatty():
        size = _artifact_size(path)
        if size >= PROGRESS_MIN_BYTES:
            progress = _Progress(size, sys.stderr)
    try:
        admission = admit(path, stage=args.stage, policy=policy, home=home, progress=progress)
    finally:
        if progress is not None:
            progress.finish()

    record = dict(admission.record)
    if admission.audit is not None:
        record["audit"] = {"seq": admission.audit.seq, "hash": admission.audit.hash}
    text = cli._dump(record) if args.format == "json" else render_decision(record)
    cli._emit(text, args.output, stdout)
    return cli.EXIT_FOR_ACTION[admission.action]


def run_audit(args: argparse.Namespace, stdout: TextIO) -> int:
    home = args.home or cli.default_home()
    log = AuditLog(home)
    try:
        if args.audit_command == "list":
            if args.limit < 1:
                raise UsageError(f"--limit must be at least 1, not {args.limit}")
            records = log.records(limit=args.limit, newest_first=True)
            if args.format == "json":
                text = cli._dump([r.to_json() for r in records])
            else:
                text = render_audit_list(records)
            cli._emit(text, args.output, stdout)
            return cli.EXIT_ALLOW
        result = log.verify()
        if args.format == "json":
            text = cli._dump(
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
        cli._emit(text, args.output, stdout)
        return cli.EXIT_ALLOW if result.ok else cli.EXIT_AUDIT_BROKEN
    finally:
        log.close()
