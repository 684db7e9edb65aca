"""``attestgate admit``: identify, scan, decide and record."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError

STAGES = ("training", "fine-tuning", "deployment")

# Show progress only for artifacts big enough for a person to wait on.
PROGRESS_MIN_BYTES = 256 * 1024 * 1024


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "admit",
        help="identify, scan and decide on an artifact, and record the decision",
        description="Admit a model file or directory: identify it, scan it without "
        "loading it, apply the policy, and append the decision to the audit log.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="model file or directory")
    parser.add_argument(
        "--stage",
        choices=STAGES,
        default="deployment",
        help="environment the artifact is promoted into (default: deployment)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="policy file (default: the built-in policy; see `attestgate policy default`)",
    )
    common.add_home_option(parser)
    common.add_output_options(parser)


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


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.cli.render import render_decision
    from attestgate.pipeline import admit
    from attestgate.policy import load_default_policy, load_policy

    path: Path = args.path
    if not path.exists() and not path.is_symlink():
        raise UsageError(
            f"artifact path {path} does not exist",
            hint="pass the model file or directory to admit",
        )
    policy = load_policy(args.policy) if args.policy else load_default_policy()
    home = args.home or common.default_home()

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
    text = common.dump_json(record) if args.format == "json" else render_decision(record)
    common.emit(text, args.output, stdout)
    return common.EXIT_FOR_ACTION[admission.action]
