"""Compare how long attestgate, ModelScan and picklescan take to scan pickles.

The benchmark writes two artifacts into the work folder:

- ``checkpoint.pt``: ``torch.save`` of a state dict of ``--checkpoint-mib``
  MiB of F32 tensors (1024 x 1024 each), as PyTorch writes a checkpoint: a
  ZIP archive with a small ``data.pkl`` and one member per tensor;
- ``dicts.pkl``: ``pickle.dumps`` (protocol 4) of a list of ``--objects``
  small dicts ``{"k": i % 1000}``, about 7.7 MB for a million objects;
- ``tuples.pkl``: the same for tuples ``(i % 65536, i % 256)``, about 6.9 MB.

It then times, with a warm page cache, the median of ``--runs`` runs of:

- ``attestgate scan PATH --format json`` (a new process, so the time
  includes interpreter start and imports);
- ``attestgate.pipeline.inspect(PATH)`` in this process, after one warm-up
  call (identification and scanning alone);
- ``picklescan -p PATH`` and ``modelscan scan -p PATH -r json -o REPORT``;
- with ``--tools``, also ``fickling --check-safety`` (raw pickles only,
  because its command line does not read ZIP archives) and ``modelaudit
  scan --format json --no-cache``.

Peer tools come from ``ATTESTGATE_PEERS_BIN`` or ``PATH``, as in
``attestgate.evaluation.peers``, and every process runs with that module's
environment: no network, no telemetry, an empty home. The load average is
recorded before and after each round, because the times depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestgate.evaluation import peers

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORKDIR = BENCH_DIR / "out" / "pickle"
MIB = 1024**2
TENSOR_SHAPE = (1024, 1024)
TENSOR_BYTES = TENSOR_SHAPE[0] * TENSOR_SHAPE[1] * 4
DEFAULT_TOOLS = ("picklescan", "modelscan")
OPTIONAL_TOOLS = ("fickling", "modelaudit")

# Exit statuses that mean the command scanned the file; anything else stops
# the benchmark. attestgate scan exits 6 when a finding reaches --fail-on.
OK_STATUSES = {
    "attestgate scan": frozenset({0, 6}),
    "picklescan": frozenset({0, 1}),
    "modelscan": frozenset({0, 1}),
    "fickling": frozenset({0, 1}),
    # ModelAudit exits 2 when it stops a pickle analysis at its own resource
    # bounds ("coverage incomplete"). Its time is then the time until it
    # stopped, and the report prints the status beside it.
    "modelaudit": frozenset({0, 1, 2}),
}


class BenchError(RuntimeError):
    """A benchmark step failed, and its numbers would be meaningless."""


@dataclass
class Row:
    """Every measured run of one command on one artifact."""

    artifact: str
    command: str
    argv: list[str]
    seconds: list[float] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)


# --- Artifacts -----------------------------------------------------------------


def write_checkpoint(path: Path, mib: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(20261204)
    count = max(1, mib * MIB // TENSOR_BYTES)
    state = {
        f"layers.{index}.weight": torch.randn(TENSOR_SHAPE, generator=generator)
        for index in range(count)
    }
    torch.save(state, path)


def write_dicts(path: Path, count: int) -> None:
    objects = [{"k": index % 1000} for index in range(count)]
    path.write_bytes(pickle.dumps(objects, protocol=4))


def write_tuples(path: Path, count: int) -> None:
    objects = [(index % 65536, index % 256) for index in range(count)]
    path.write_bytes(pickle.dumps(objects, protocol=4))


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = {
        "checkpoint": workdir / "checkpoint.pt",
        "dicts": workdir / "dicts.pkl",
        "tuples": workdir / "tuples.pkl",
    }
    if args.skip_generate:
        missing = [str(p) for p in artifacts.values() if not p.is_file()]
        if missing:
            raise BenchError(f"{', '.join(missing)} not found; run once without --skip-generate")
        return artifacts
    start = time.perf_counter()
    write_checkpoint(artifacts["checkpoint"], args.checkpoint_mib)
    write_dicts(artifacts["dicts"], args.objects)
    write_tuples(artifacts["tuples"], args.objects)
    seconds = time.perf_counter() - start
    print(f"generated artifacts in {workdir} in {seconds:.1f} s", file=sys.stderr)
    return artifacts


# --- Running ---------------------------------------------------------------------


def find_gnu_time() -> str | None:
    for candidate in ("/usr/bin/time", "/bin/time"):
        try:
            completed = subprocess.run(
                [candidate, "--version"], capture_output=True, text=True, check=False
            )
        except OSError:
            continue
        if "GNU" in completed.stdout + completed.stderr:
            return candidate
    return None


def use_bytecode_cache(workdir: Path) -> None:
    """Let child Python processes cache compiled bytecode under ``workdir``.

    An editable install has no compiled bytecode, while pip compiles the
    packages it installs. Without a cache (``PYTHONDONTWRITEBYTECODE`` set),
    every attestgate process compiles its source again, which added about
    0.14 s to each run on the machine in BENCHMARKS.md. The warm-up run
    fills the cache for every command alike.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")


class Harness:
    """Runs commands with the peers' environment, network isolation and GNU time."""

    def __init__(self, workdir: Path) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=workdir))
        self.environment = peers.tool_environment(self.scratch / "home")
        (self.scratch / "home").mkdir()
        self.prefix = list(peers.network_isolation_prefix())
        self.gnu_time = find_gnu_time()

    def run(self, row: Row) -> tuple[float, int, int]:
        """Run ``row``'s command once; return (wall seconds, peak RSS bytes, status)."""
        rss_file = self.scratch / "maxrss"
        argv = [*self.prefix, *row.argv]
        if self.gnu_time:
            argv = [self.gnu_time, "-f", "%M", "-o", str(rss_file), *argv]
        start = time.perf_counter()
        completed = subprocess.run(
            argv,
            cwd=self.scratch,
            env=self.environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        seconds = time.perf_counter() - start
        status = completed.returncode
        if status not in OK_STATUSES[row.command]:
            tail = completed.stderr.decode(errors="replace").strip().splitlines()[-8:]
            raise BenchError(
                f"{row.command} on {row.artifact} exited with status {status}:\n" + "\n".join(tail)
            )
        peak = 0
        if self.gnu_time:
            # GNU time writes "%M" (KiB) on the last line, after a note about
            # a non-zero exit status when there was one.
            peak = int(rss_file.read_text().split()[-1]) * 1024
        return seconds, peak, status


def build_rows(
    artifacts: dict[str, Path], tools: Sequence[str], gate: Path, workdir: Path
) -> list[Row]:
    executables: dict[str, Path] = {}
    for tool in tools:
        found = peers.find_executable(tool)
        if found is None:
            where = os.environ.get(peers.PEERS_BIN_ENV) or "PATH"
            raise BenchError(
                f"{tool} not found in {where}; install the peer tools or set {peers.PEERS_BIN_ENV}"
            )
        executables[tool] = found

    rows: list[Row] = []
    for name, path in artifacts.items():
        rows.append(
            Row(name, "attestgate scan", [str(gate), "scan", str(path), "--format", "json"])
        )
        for tool, executable in executables.items():
            report = str(workdir / f"{tool}-report.json")
            argv = {
                "picklescan": [str(executable), "-p", str(path)],
                "modelscan": [str(executable), "scan", "-p", str(path), "-r", "json", "-o", report],
                "fickling": [str(executable), "--check-safety", "--json-output", report, str(path)],
                "modelaudit": [
                    str(executable),
                    *("scan", "--format", "json", "--no-cache", "-o", report, str(path)),
                ],
            }[tool]
            if tool == "fickling" and path.suffix == ".pt":
                continue
            rows.append(Row(name, tool, argv))
    return rows


def time_in_process(path: Path, runs: int) -> Row:
    """Time ``attestgate.pipeline.inspect`` in this process, after one warm-up call."""
    from attestgate.pipeline import inspect

    row = Row(path.stem, "attestgate in-process", ["attestgate.pipeline.inspect", str(path)])
    inspect(path)
    for _ in range(runs):
        start = time.perf_counter()
        inspect(path)
        row.seconds.append(time.perf_counter() - start)
    return row


def measure(rows: Sequence[Row], runs: int, harness: Harness) -> list[dict[str, float]]:
    """Warm up every command once, then run ``runs`` interleaved rounds."""
    loads: list[dict[str, float]] = []
    for row in rows:
        harness.run(row)
    for number in range(1, runs + 1):
        before = os.getloadavg()[0]
        print(f"round {number} of {runs} (load average {before:.2f})", file=sys.stderr)
        for row in rows:
            seconds, peak, status = harness.run(row)
            row.seconds.append(seconds)
            row.peak_rss_bytes.append(peak)
            row.statuses.append(status)
        loads.append({"before": before, "after": os.getloadavg()[0]})
        # Remove the reports written in this round, so the next starts alike.
        for report in harness.scratch.parent.glob("*-report.json"):
            report.unlink()
    return loads


# --- Reporting -------------------------------------------------------------------


def summarize(
    rows: Sequence[Row], artifacts: dict[str, Path], loads: list[dict[str, float]], runs: int
) -> dict[str, Any]:
    by_key = {(row.artifact, row.command): row for row in rows}
    gate_commands = ("attestgate scan", "attestgate in-process")
    ratios: dict[str, dict[str, float]] = {}
    for name in artifacts:
        ratios[name] = {}
        for gate_command in gate_commands:
            gate = by_key[(name, gate_command)].median_seconds
            for (artifact, command), row in by_key.items():
                if artifact == name and command not in gate_commands:
                    ratios[name][f"{gate_command} / {command}"] = gate / row.median_seconds
    return {
        "machine": {
            "cpu_model": cpu_model(),
            "cpus": len(os.sched_getaffinity(0)),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
        },
        "runs": runs,
        "artifacts": {name: path.stat().st_size for name, path in artifacts.items()},
        "load_average": loads,
        "rows": [
            {
                "artifact": row.artifact,
                "command": row.command,
                "argv": row.argv,
                "seconds": row.seconds,
                "median_seconds": row.median_seconds,
                "peak_rss_bytes": max(row.peak_rss_bytes, default=0),
                "exit_statuses": sorted(set(row.statuses)),
            }
            for row in rows
        ],
        "ratios": ratios,
    }


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def print_report(summary: dict[str, Any]) -> None:
    machine = summary["machine"]
    print(
        f"pickle scan benchmark: median of {summary['runs']} runs, warm page cache; "
        f"{machine['cpu_model']}, {machine['cpus']} CPUs, Python {machine['python']}"
    )
    loads = [value for entry in summary["load_average"] for value in entry.values()]
    if loads:
        print(f"load average during the rounds: {min(loads):.2f} to {max(loads):.2f}")
    header = (
        f"{'artifact':<11} {'command':<22} {'median s':>9} {'MB/s':>8} {'peak RSS MiB':>13} "
        f"{'exit':>5}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in summary["rows"]:
        size = summary["artifacts"][row["artifact"]]
        median = row["median_seconds"]
        peak = f"{row['peak_rss_bytes'] / MIB:13.1f}" if row["peak_rss_bytes"] else f"{'-':>13}"
        statuses = "/".join(str(status) for status in row["exit_statuses"]) or "-"
        print(
            f"{row['artifact']:<11} {row['command']:<22} {median:9.3f} "
            f"{size / 1e6 / median:8.1f} {peak} {statuses:>5}"
        )
    print()
    print("ratios of medians (below 1: attestgate is faster):")
    for artifact, ratios in summary["ratios"].items():
        for name, value in ratios.items():
            print(f"  {artifact:<11} {name:<44} {value:6.2f}")


# --- Command line ------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help=f"folder for the generated artifacts and reports (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--runs", type=int, default=5, metavar="N", help="measured runs per command (default: 5)"
    )
    parser.add_argument(
        "--checkpoint-mib",
        type=int,
        default=192,
        metavar="MIB",
        help="tensor data in the PyTorch checkpoint, in MiB (default: 192, about 201 MB)",
    )
    parser.add_argument(
        "--objects",
        type=int,
        default=1_000_000,
        metavar="N",
        help="number of small dicts, and of small tuples, in the two pickles of many "
        "objects (default: 1000000)",
    )
    parser.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        metavar="LIST",
        help="comma-separated peer tools to time: picklescan, modelscan, fickling, modelaudit "
        f"(default: {','.join(DEFAULT_TOOLS)})",
    )
    parser.add_argument(
        "--skip-generate", action="store_true", help="reuse the artifacts in the work folder"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the results to FILE"
    )

    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(args.tools) - set(DEFAULT_TOOLS) - set(OPTIONAL_TOOLS))
    if unknown:
        parser.error(f"unknown tools {', '.join(unknown)} in --tools")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the artifacts, time every command and print the results."""
    args = parse_args(argv)
    gate = Path(sys.executable).parent / "attestgate"
    args.workdir.mkdir(parents=True, exist_ok=True)
    use_bytecode_cache(args.workdir)
    try:
        artifacts = prepare(args)
        harness = Harness(args.workdir)
        try:
            rows = build_rows(artifacts, args.tools, gate, args.workdir)
            for path in artifacts.values():
                path.read_bytes()
            loads = measure(rows, args.runs, harness)
        finally:
            shutil.rmtree(harness.scratch, ignore_errors=True)
    except BenchError as exc:
        print(f"bench_pickle: {exc}", file=sys.stderr)
        return 1
    in_process = [time_in_process(path, args.runs) for path in artifacts.values()]
    for row, name in zip(in_process, artifacts, strict=True):
        row.artifact = name
    summary = summarize([*rows, *in_process], artifacts, loads, args.runs)
    print_report(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
