"""Measure what ``attestgate admit`` costs compared with hashing the same bytes.

For each size in ``--size-gib``, the benchmark writes two synthetic
safetensors artifacts into the work folder. One is a file of that many GiB
with four F32 tensors. The other is a directory of four shards of a quarter
of that size each, with a Hugging Face style index. It then times, with a
warm page cache, the median of ``--runs`` runs of:

- ``openssl dgst -sha256`` over the file, and over all files of the directory
  in one process (the time to read and hash the bytes once);
- ``model_signing sign key`` over the directory, with a throwaway EC P-256
  key (the OpenSSF Model Signing hashing of the same files);
- ``attestgate admit PATH --format json --home HOME`` on both, each run with
  a fresh gate home;
- ``attestgate --version`` (interpreter start and import cost).

Then, for each worker count in ``--workers``, it starts that many
``attestgate admit`` processes at once, each on its own ``--worker-mib`` MiB
safetensors file and all into one gate home, and as many ``openssl dgst
-sha256`` processes on the same files, and reports the median wall time of
each batch.

Every ratio it prints comes from medians measured in the same invocation.
Peak resident memory of each process comes from GNU time, or from ``wait4``
without it. The load average is recorded before and after every round. Run
it with ``make bench``; see BENCHMARKS.md for how to read the output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORKDIR = BENCH_DIR / "out"
GIB = 1024**3
MIB = 1024**2

# Column count of every generated tensor. A row is then 16 KiB of F32 values.
TENSOR_COLUMNS = 4096
F32_BYTES = 4
WRITE_BLOCK = 4 * MIB
SHARDS = 4
TENSORS_PER_FILE = 4
TENSORS_PER_SHARD = 2
SEED = 20261204
POOL_BLOCKS = 16

# `attestgate admit` exit statuses for allow, quarantine and block. Any other
# status means the gate failed, and the benchmark stops.
ADMIT_DECISION_STATUSES = frozenset({0, 3, 4})


Number = TypeVar("Number", int, float)


class BenchError(RuntimeError):
    """A benchmark step failed, and its numbers would be meaningless."""


@dataclass(frozen=True)
class Command:
    """One timed command line and what it processes."""

    name: str
    case: str
    label: str
    argv: tuple[str, ...]
    artifact_bytes: int
    ok_statuses: frozenset[int] = frozenset({0})
    # When set, each run appends `--home DIR` with a new, empty folder.
    fresh_home: bool = False


@dataclass
class Measurement:
    """Wall times and peak resident memory of every measured run of a command."""

    command: Command
    seconds: list[float] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    stdouts: list[str] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)


# --- Generating the artifacts ------------------------------------------------


def f32_blocks(seed: int) -> Iterator[bytes]:
    """Yield ``WRITE_BLOCK``-sized blocks of random finite little-endian F32.

    Clearing bit 30 of each value keeps its exponent below 128, so no value is
    NaN or infinite and a scanner that checks values reads ordinary weights.
    Making each block costs about as much as writing it, so the blocks repeat
    from a pool of ``POOL_BLOCKS``. Repetition changes neither hashing nor
    scanning cost.
    """
    rng = random.Random(seed)
    mask = int.from_bytes(b"\xff\xff\xff\xbf" * (WRITE_BLOCK // F32_BYTES), "little")
    pool = [
        (int.from_bytes(rng.randbytes(WRITE_BLOCK), "little") & mask).to_bytes(
            WRITE_BLOCK, "little"
        )
        for _ in range(POOL_BLOCKS)
    ]
    return itertools.cycle(pool)


def write_safetensors(
    path: Path, tensors: Sequence[tuple[str, int]], blocks: Iterator[bytes]
) -> int:
    """Write F32 tensors of ``rows`` x ``TENSOR_COLUMNS`` to ``path``.

    ``tensors`` contains (name, rows) pairs. The data is written block by block,
    so memory use stays near ``WRITE_BLOCK`` whatever the file size. Returns
    the size of the data section in bytes.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, rows in tensors:
        length = rows * TENSOR_COLUMNS * F32_BYTES
        header[name] = {
            "dtype": "F32",
            "shape": [rows, TENSOR_COLUMNS],
            "data_offsets": [offset, offset + length],
        }
        offset += length

    # The format pads the JSON header with spaces to a multiple of 8 bytes.
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as stream:
        stream.write(len(encoded).to_bytes(8, "little"))
        stream.write(encoded)
        remaining = offset
        while remaining:
            size = min(WRITE_BLOCK, remaining)
            stream.write(next(blocks)[:size])
            remaining -= size
    return offset


def tensor_rows(total_bytes: int, count: int) -> int:
    rows = total_bytes // count // (TENSOR_COLUMNS * F32_BYTES)
    if rows < 1:
        raise BenchError(
            f"--size-gib is too small: each of {count} tensors needs at least "
            f"{TENSOR_COLUMNS * F32_BYTES} bytes"
        )
    return rows


def generate_single(path: Path, total_bytes: int) -> None:
    rows = tensor_rows(total_bytes, TENSORS_PER_FILE)
    names = [(f"layers.{index}.weight", rows) for index in range(TENSORS_PER_FILE)]
    write_safetensors(path, names, f32_blocks(SEED))


def generate_sharded(directory: Path, total_bytes: int) -> None:
    """Write ``SHARDS`` safetensors shards and their index into ``directory``."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    rows = tensor_rows(total_bytes, SHARDS * TENSORS_PER_SHARD)
    blocks = f32_blocks(SEED + 1)
    weight_map: dict[str, str] = {}
    data_bytes = 0

    for shard in range(SHARDS):
        filename = f"model-{shard + 1:05d}-of-{SHARDS:05d}.safetensors"
        names = [
            (f"layers.{shard * TENSORS_PER_SHARD + index}.weight", rows)
            for index in range(TENSORS_PER_SHARD)
        ]
        data_bytes += write_safetensors(directory / filename, names, blocks)
        weight_map.update(dict.fromkeys((name for name, _ in names), filename))

    index = {"metadata": {"total_size": data_bytes}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_signing_key(path: Path) -> None:
    """Write a new unencrypted EC P-256 private key in PEM for model_signing."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


# --- Running and timing commands ---------------------------------------------


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


def warm_page_cache(paths: Sequence[Path]) -> None:
    """Read every file once so that timed runs read from the page cache."""
    for path in paths:
        with path.open("rb") as stream:
            while stream.read(WRITE_BLOCK):
                pass


def find_gnu_time() -> str | None:
    """Return the path of GNU time, or None when it is not installed."""
    path = shutil.which("time") or "/usr/bin/time"
    try:
        completed = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return path if "GNU" in completed.stdout + completed.stderr else None


def run_once(
    command: Command, logs: Path, homes: Path, gnu_time: str | None
) -> tuple[float, int, int]:
    """Run ``command`` once and return (wall seconds, peak RSS bytes, status).

    The child's output goes to files under ``logs``. With GNU time, the peak
    RSS is that of a process forked by GNU time itself. Without it, the value
    comes from ``os.wait4`` and is at least the benchmark's own peak RSS,
    because Linux carries the parent's high-water mark into a spawned child.
    """
    argv = list(command.argv)
    home: Path | None = None
    if command.fresh_home:
        home = homes / command.name
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        argv += ["--home", str(home)]

    stdout_path = logs / f"{command.name}.stdout"
    stderr_path = logs / f"{command.name}.stderr"
    rss_path = logs / f"{command.name}.maxrss"
    spawned = argv
    if gnu_time is not None:
        spawned = [gnu_time, "-f", "%M", "-o", str(rss_path), *argv]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 1, str(stdout_path), flags, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, str(stderr_path), flags, 0o644),
    ]

    start = time.perf_counter()
    try:
        pid = os.posix_spawnp(spawned[0], spawned, dict(os.environ), file_actions=file_actions)
    except OSError as exc:
        raise BenchError(f"could not start {shlex.join(spawned)}: {exc}") from exc
    _, wait_status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start

    if home is not None:
        shutil.rmtree(home)
    status = os.waitstatus_to_exitcode(wait_status)
    if status not in command.ok_statuses:
        tail = stderr_path.read_text(errors="replace").strip().splitlines()[-10:]
        raise BenchError(
            f"{shlex.join(argv)} exited with status {status}; the last lines of "
            f"its error output were:\n" + "\n".join(tail)
        )
    if gnu_time is not None:
        # GNU time writes "%M" (KiB) on the last line, after a note about a
        # non-zero exit status when there was one.
        peak = int(rss_path.read_text().split()[-1]) * 1024
    else:
        peak = maxrss_bytes(usage)
    return seconds, peak, status


def maxrss_bytes(usage: resource.struct_rusage) -> int:
    # Linux reports ru_maxrss in KiB and macOS in bytes.
    if sys.platform == "darwin":
        return usage.ru_maxrss
    return usage.ru_maxrss * 1024


def measure(
    commands: Sequence[Command],
    runs: int,
    workdir: Path,
    gnu_time: str | None,
    loads: list[tuple[float, float]],
) -> dict[str, Measurement]:
    """Run every command once to warm up, then ``runs`` rounds in turn.

    Rounds interleave the commands, so a slow drift of the machine (another
    tenant, thermal limits) affects all of them alike. The one-minute load
    average before and after each round is appended to ``loads``.
    """
    logs = workdir / "logs"
    homes = workdir / "homes"
    logs.mkdir(parents=True, exist_ok=True)
    homes.mkdir(parents=True, exist_ok=True)
    results = {command.name: Measurement(command) for command in commands}

    for command in commands:
        run_once(command, logs, homes, gnu_time)
    for round_number in range(1, runs + 1):
        before = os.getloadavg()[0]
        print(
            f"round {round_number} of {runs} (load average {before:.2f})",
            file=sys.stderr,
            flush=True,
        )
        for command in commands:
            seconds, peak, status = run_once(command, logs, homes, gnu_time)
            result = results[command.name]
            result.seconds.append(seconds)
            result.peak_rss_bytes.append(peak)
            result.statuses.append(status)
            stdout = (logs / f"{command.name}.stdout").read_text(errors="replace")
            result.stdouts.append(stdout)
        loads.append((before, os.getloadavg()[0]))
    return results


# --- Collecting and reporting results -----------------------------------------


def build_commands(
    gate: Sequence[str],
    single: Path,
    sharded: Path,
    key: Path,
    signature: Path,
) -> list[Command]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("openssl not found on PATH; install OpenSSL to run this")
    model_signing = Path(sys.executable).parent / "model_signing"
    if not model_signing.is_file():
        raise BenchError(
            f"model_signing not found at {model_signing}; install the test extra "
            "with `pip install -e '.[test]'`"
        )

    shard_files = sorted(str(path) for path in sharded.iterdir() if path.is_file())
    single_bytes = single.stat().st_size
    sharded_bytes = sum(Path(path).stat().st_size for path in shard_files)
    admit_args = ("--format", "json")
    decisions = ADMIT_DECISION_STATUSES
    return [
        Command(
            "openssl_file",
            "single file",
            "openssl dgst -sha256",
            (openssl, "dgst", "-sha256", str(single)),
            single_bytes,
        ),
        Command(
            "admit_file",
            "single file",
            "attestgate admit",
            (*gate, "admit", str(single), *admit_args),
            single_bytes,
            decisions,
            fresh_home=True,
        ),
        Command(
            "openssl_dir",
            f"sharded, {len(shard_files)} files",
            "openssl dgst -sha256",
            (openssl, "dgst", "-sha256", *shard_files),
            sharded_bytes,
        ),
        Command(
            "model_signing_dir",
            f"sharded, {len(shard_files)} files",
            "model_signing sign key",
            (
                str(model_signing),
                "--log-level",
                "WARNING",
                "sign",
                "key",
                str(sharded),
                "--private_key",
                str(key),
                "--signature",
                str(signature),
            ),
            sharded_bytes,
        ),
        Command(
            "admit_dir",
            f"sharded, {len(shard_files)} files",
            "attestgate admit",
            (*gate, "admit", str(sharded), *admit_args),
            sharded_bytes,
            decisions,
            fresh_home=True,
        ),
        Command("startup", "no artifact", "attestgate --version", (*gate, "--version"), 0),
    ]


def ratio(results: dict[str, Measurement], numerator: str, denominator: str) -> float:
    return results[numerator].median_seconds / results[denominator].median_seconds


def admit_details(result: Measurement) -> dict[str, Any]:
    """Return the decision and median per-stage times from the JSON records."""
    decisions: set[str] = set()
    stages: dict[str, list[float]] = {}
    for stdout in result.stdouts:
        try:
            record = json.loads(stdout)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        decisions.add(str(record.get("decision")))
        timings = record.get("timings")
        if isinstance(timings, dict):
            for stage, seconds in timings.items():
                if isinstance(seconds, int | float):
                    stages.setdefault(stage, []).append(float(seconds))
    return {
        "decisions": sorted(decisions),
        "stage_median_seconds": {
            stage: statistics.median(values) for stage, values in stages.items()
        },
    }


def command_version(argv: Sequence[str]) -> str:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = (completed.stdout or completed.stderr).strip().splitlines()
    return lines[0] if lines else "unavailable"


def machine_info(gate: Sequence[str]) -> dict[str, Any]:
    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": cpu_model,
        "cpus": len(os.sched_getaffinity(0)),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "openssl": command_version(["openssl", "version"]),
        "model_signing": command_version(
            [str(Path(sys.executable).parent / "model_signing"), "--version"]
        ),
        "attestgate": command_version([*gate, "--version"]),
    }


def summarize(
    results: dict[str, Measurement], size_gib: float, loads: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """Return the measurements, ratios and memory shares of one artifact size."""
    measurements = {
        name: {
            "case": result.command.case,
            "command": result.command.label,
            "argv": list(result.command.argv),
            "artifact_bytes": result.command.artifact_bytes,
            "seconds": result.seconds,
            "median_seconds": result.median_seconds,
            "peak_rss_bytes": max(result.peak_rss_bytes),
            "exit_statuses": sorted(set(result.statuses)),
        }
        for name, result in results.items()
    }
    ratios = {
        "admit_file_vs_openssl": ratio(results, "admit_file", "openssl_file"),
        "admit_dir_vs_openssl": ratio(results, "admit_dir", "openssl_dir"),
        "admit_dir_vs_model_signing": ratio(results, "admit_dir", "model_signing_dir"),
    }
    rss_share = {
        name: max(results[name].peak_rss_bytes) / results[name].command.artifact_bytes
        for name in ("admit_file", "admit_dir")
    }
    return {
        "size_gib": size_gib,
        "load_average": [list(pair) for pair in loads],
        "measurements": measurements,
        "ratios": ratios,
        "admit_peak_rss_share_of_artifact": rss_share,
        "admit_records": {
            name: admit_details(results[name]) for name in ("admit_file", "admit_dir")
        },
    }


def print_report(summary: dict[str, Any]) -> None:
    machine = summary["machine"]
    parameters = summary["parameters"]
    print(f"attestgate admit benchmark: median of {parameters['runs']} runs, warm page cache")
    print(
        f"machine: {machine['cpu_model']}, {machine['cpus']} CPUs, "
        f"{machine['system']}, Python {machine['python']}, {machine['openssl']}"
    )
    for size in summary["sizes"].values():
        print_size(size)
    if summary.get("throughput"):
        print_throughput(summary["throughput"])


def load_range(loads: Sequence[Sequence[float]]) -> str:
    values = [value for pair in loads for value in pair]
    if not values:
        return "not recorded"
    return f"{min(values):.2f} to {max(values):.2f}"


def print_size(summary: dict[str, Any]) -> None:
    print()
    print(
        f"{summary['size_gib']:g} GiB per artifact; load average during the rounds "
        f"{load_range(summary['load_average'])}"
    )
    header = f"{'case':<18} {'command':<24} {'median s':>9} {'MiB/s':>8} {'peak RSS MiB':>13}"
    print(header)
    print("-" * len(header))
    for entry in summary["measurements"].values():
        median = entry["median_seconds"]
        size = entry["artifact_bytes"]
        rate = f"{size / MIB / median:8.1f}" if size else f"{'-':>8}"
        print(
            f"{entry['case']:<18} {entry['command']:<24} {median:9.3f} {rate} "
            f"{entry['peak_rss_bytes'] / MIB:13.1f}"
        )

    ratios = summary["ratios"]
    print()
    print("wall-time ratios, medians of this run:")
    print(f"  single file, admit / openssl        {ratios['admit_file_vs_openssl']:6.2f}")
    print(f"  sharded, admit / openssl            {ratios['admit_dir_vs_openssl']:6.2f}")
    print(f"  sharded, admit / model_signing      {ratios['admit_dir_vs_model_signing']:6.2f}")
    print("peak RSS of admit as a share of artifact size:")
    for name, share in summary["admit_peak_rss_share_of_artifact"].items():
        print(f"  {name:<34} {share * 100:6.2f} %")
    print("admit decision and median stage times (from the JSON records):")
    for name, details in summary["admit_records"].items():
        stages = ", ".join(
            f"{stage} {seconds:.3f}s" for stage, seconds in details["stage_median_seconds"].items()
        )
        decision = "/".join(details["decisions"]) or "no JSON record"
        print(f"  {name:<12} {decision}: {stages or 'no stage timings'}")


# --- Parallel intake ---------------------------------------------------------------


def generate_parallel(folder: Path, count: int, mib: int, reuse: bool) -> list[Path]:
    """Write ``count`` single-file artifacts of ``mib`` MiB, each from its own seed.

    Distinct contents give distinct digests, so no admission finds another's
    stored copy.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = tensor_rows(mib * MIB, TENSORS_PER_FILE)
    paths = [folder / f"model-{index}.safetensors" for index in range(count)]
    for index, path in enumerate(paths):
        if reuse and path.is_file():
            continue
        names = [(f"layers.{tensor}.weight", rows) for tensor in range(TENSORS_PER_FILE)]
        write_safetensors(path, names, f32_blocks(SEED + 100 + index))
    return paths


def run_batch(
    argvs: Sequence[Sequence[str]], logs: Path, name: str, ok_statuses: frozenset[int]
) -> float:
    """Start every command at once and return the wall time until the last one exits."""
    processes: list[tuple[Sequence[str], subprocess.Popen[bytes]]] = []
    start = time.perf_counter()
    for index, argv in enumerate(argvs):
        stdout = logs / f"{name}-{index}.stdout"
        stderr = logs / f"{name}-{index}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            except OSError as exc:
                raise BenchError(f"could not start {shlex.join(argv)}: {exc}") from exc
        processes.append((argv, process))
    statuses = [process.wait() for _, process in processes]
    seconds = time.perf_counter() - start

    for index, ((argv, _), status) in enumerate(zip(processes, statuses, strict=True)):
        if status not in ok_statuses:
            tail = (logs / f"{name}-{index}.stderr").read_text(errors="replace")
            raise BenchError(
                f"{shlex.join(argv)} exited with status {status}; the last lines of its "
                "error output were:\n" + "\n".join(tail.strip().splitlines()[-10:])
            )
    return seconds


def measure_throughput(
    gate: Sequence[str], files: Sequence[Path], workers: Sequence[int], runs: int, workdir: Path
) -> dict[str, Any]:
    """Time batches of parallel admissions and of parallel ``openssl dgst`` runs.

    A batch of ``n`` workers is ``n`` processes started together, each on its
    own file. All admissions of a batch go into one new gate home, so that
    they contend for its audit log as replicas of one gate would.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("openssl not found on PATH; install OpenSSL to run this")
    logs = workdir / "logs"
    homes = workdir / "homes"
    logs.mkdir(parents=True, exist_ok=True)
    loads: list[tuple[float, float]] = []
    results: dict[str, Any] = {}

    for count in workers:
        chosen = files[:count]
        hash_argvs = [[openssl, "dgst", "-sha256", str(path)] for path in chosen]
        hash_seconds: list[float] = []
        admit_seconds: list[float] = []
        for round_number in range(runs + 1):
            before = os.getloadavg()[0]
            hashed = run_batch(hash_argvs, logs, f"openssl-{count}", frozenset({0}))
            home = homes / f"parallel-{count}"
            if home.exists():
                shutil.rmtree(home)
            home.mkdir(parents=True)
            admit_argvs = [
                [*gate, "admit", str(path), "--format", "json", "--home", str(home)]
                for path in chosen
            ]
            admitted = run_batch(admit_argvs, logs, f"admit-{count}", ADMIT_DECISION_STATUSES)
            shutil.rmtree(home)
            # Round 0 warms the page cache and the Python modules.
            if round_number:
                hash_seconds.append(hashed)
                admit_seconds.append(admitted)
                loads.append((before, os.getloadavg()[0]))
        print(f"parallel intake with {count} workers done", file=sys.stderr, flush=True)

        size = sum(path.stat().st_size for path in chosen)
        admit_median = statistics.median(admit_seconds)
        hash_median = statistics.median(hash_seconds)
        results[str(count)] = {
            "artifacts": count,
            "bytes": size,
            "openssl_seconds": hash_seconds,
            "admit_seconds": admit_seconds,
            "openssl_median_seconds": hash_median,
            "admit_median_seconds": admit_median,
            "openssl_mib_per_s": size / MIB / hash_median,
            "admit_mib_per_s": size / MIB / admit_median,
            "admit_artifacts_per_s": count / admit_median,
            "admit_vs_openssl": admit_median / hash_median,
        }
    return {"load_average": [list(pair) for pair in loads], "workers": results}


def print_throughput(throughput: dict[str, Any]) -> None:
    print()
    print(
        f"parallel intake, one {throughput['worker_mib']} MiB file per worker; load average "
        f"during the rounds {load_range(throughput['load_average'])}"
    )
    header = (
        f"{'workers':>7} {'openssl s':>10} {'admit s':>9} {'admit / openssl':>16} "
        f"{'artifacts/s':>12} {'admit MiB/s':>12}"
    )
    print(header)
    print("-" * len(header))
    for count, entry in throughput["workers"].items():
        print(
            f"{count:>7} {entry['openssl_median_seconds']:10.3f} "
            f"{entry['admit_median_seconds']:9.3f} {entry['admit_vs_openssl']:16.2f} "
            f"{entry['admit_artifacts_per_s']:12.2f} {entry['admit_mib_per_s']:12.1f}"
        )


# --- Command line ---------------------------------------------------------------


def number_list(kind: Callable[[str], Number]) -> Callable[[str], list[Number]]:
    """Return an argparse type that reads a comma-separated list of ``kind``."""

    def parse(text: str) -> list[Number]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one number")
        return values

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help=f"folder for generated artifacts, keys and logs (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--size-gib",
        type=number_list(float),
        default=[1.0],
        metavar="GIB[,GIB...]",
        help="sizes of the single file and of the sharded directory in GiB, one benchmark "
        "per size (default: 1)",
    )
    parser.add_argument(
        "--workers",
        type=number_list(int),
        default=[1, 2, 4],
        metavar="N[,N...]",
        help="numbers of parallel admissions to time, each on its own file (default: 1,2,4)",
    )
    parser.add_argument(
        "--worker-mib",
        type=int,
        default=256,
        metavar="MIB",
        help="size of each file in the parallel intake runs, in MiB (default: 256)",
    )
    parser.add_argument(
        "--no-throughput",
        action="store_true",
        help="skip the parallel intake runs",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        metavar="N",
        help="measured runs per command; the median is reported (default: 5)",
    )
    parser.add_argument(
        "--skip-generate",
        action="store_true",
        help="reuse the artifacts already in the work folder",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write every measurement and ratio to FILE as JSON",
    )
    # Replaces the attestgate console script, to exercise the benchmark with
    # a stand-in program that accepts the same arguments.
    parser.add_argument("--gate-cmd", default=None, help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if min(args.size_gib) <= 0:
        parser.error(f"every --size-gib must be positive, got {args.size_gib}")
    if min(args.workers) < 1:
        parser.error(f"every --workers count must be at least 1, got {args.workers}")
    if args.worker_mib < 1:
        parser.error(f"--worker-mib must be at least 1, got {args.worker_mib}")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    return args


def prepare_artifacts(
    args: argparse.Namespace, size_gib: float, workdir: Path
) -> tuple[Path, Path]:
    single = workdir / "single" / "model.safetensors"
    sharded = workdir / "sharded"
    total_bytes = int(size_gib * GIB)

    if args.skip_generate:
        if not single.is_file() or not sharded.is_dir():
            raise BenchError(
                f"no generated artifacts in {workdir}; run once without --skip-generate"
            )
        return single, sharded

    single.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    generate_single(single, total_bytes)
    generate_sharded(sharded, total_bytes)
    seconds = time.perf_counter() - start
    print(f"generated artifacts in {workdir} in {seconds:.1f} s", file=sys.stderr)
    return single, sharded


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the artifacts, time every command and print the results."""
    args = parse_args(argv)
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    use_bytecode_cache(workdir)
    if args.gate_cmd:
        gate = shlex.split(args.gate_cmd)
    else:
        gate = [str(Path(sys.executable).parent / "attestgate")]
    gnu_time = find_gnu_time()
    if gnu_time is None:
        print(
            "GNU time not found, so peak RSS values include the benchmark's own "
            "peak RSS; install GNU time for exact values",
            file=sys.stderr,
        )

    sizes: dict[str, Any] = {}
    throughput: dict[str, Any] | None = None
    try:
        key = workdir / "bench-signing-key.pem"
        write_signing_key(key)
        for size_gib in args.size_gib:
            folder = workdir / f"{size_gib:g}gib"
            single, sharded = prepare_artifacts(args, size_gib, folder)
            commands = build_commands(gate, single, sharded, key, folder / "model.sig")
            warm_page_cache([single, *sorted(sharded.iterdir())])
            loads: list[tuple[float, float]] = []
            results = measure(commands, args.runs, folder, gnu_time, loads)
            sizes[f"{size_gib:g}"] = summarize(results, size_gib, loads)
        if not args.no_throughput:
            folder = workdir / "parallel"
            files = generate_parallel(
                folder, max(args.workers), args.worker_mib, args.skip_generate
            )
            warm_page_cache(files)
            throughput = measure_throughput(gate, files, args.workers, args.runs, folder)
            throughput["worker_mib"] = args.worker_mib
    except BenchError as exc:
        print(f"bench_admit: {exc}", file=sys.stderr)
        return 1

    summary = {
        "machine": machine_info(gate),
        "parameters": {
            "size_gib": args.size_gib,
            "runs": args.runs,
            "workers": [] if args.no_throughput else args.workers,
            "worker_mib": args.worker_mib,
        },
        "sizes": sizes,
        "throughput": throughput,
        "peak_rss_method": "GNU time %M" if gnu_time else "os.wait4",
    }

    print_report(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
