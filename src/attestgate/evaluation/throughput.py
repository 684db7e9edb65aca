"""Throughput under parallel intake: admissions per second with 1, 2, 4 and 8 worker processes.

Workers are separate processes (``spawn`` start method) that admit into the
same gate home, so that contention on the audit log is part of what is
measured. The workers start and warm up once, and each measured run uses
the first N of them. The clock starts when the run's workers are released
and stops when the last admission has reported. A SHA-256 pass over the
same bytes, in the same run, gives the baseline that "cost follows the
bytes" is judged against.

Only admissions that finished count toward artifacts/s and MiB/s; failed
ones are counted in ``errors``. A baseline that hashed no bytes (the
artifacts are missing, say) gives no ratio (``None``).

Dynamic plug-ins are not run here: they measure the sandbox, not intake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import queue
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attestgate.evaluation.scenario import CLEAN_BASELINE, Corpus
from attestgate.stages import STAGES

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
QUICK_WORKERS = (1, 2, 4)
FULL_WORKERS = (1, 2, 4, 8)

# Admissions per measured run, and the least number of distinct artifacts;
# small corpora are topped up with generated safetensors files.
QUICK_ADMISSIONS = 64
FULL_ADMISSIONS = 256
QUICK_DISTINCT = 8
FULL_DISTINCT = 16

# Seconds a worker may take to start and warm up, and the whole run after that.
READY_TIMEOUT = 300.0
RUN_TIMEOUT = 3600.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One admission for a worker; plain strings so that it pickles across ``spawn``."""

    path: str
    stage: str
    policy: str | None
    evidence: tuple[str, ...] = ()
    trust_keys: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    tier: str | None = None


@dataclass
class RunResult:
    """One measured run at one worker count.

    ``admissions`` were started, ``artifacts`` of them finished with a
    decision and ``errors`` failed; ``bytes`` are those of the finished ones.
    """

    workers: int
    admissions: int
    artifacts: int
    bytes: int
    seconds: float
    errors: int
    first_error: str | None

    @property
    def artifacts_per_s(self) -> float:
        return self.artifacts / self.seconds if self.seconds else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds else 0.0


def jobs_from_corpus(corpus: Corpus, *, quick: bool, scratch: Path) -> tuple[list[Job], str]:
    """Return the admissions to measure and where they came from.

    The clean-baseline cases are admitted at their last labelled stage. With
    fewer than the minimum number of them, generated safetensors files in
    ``scratch`` make up the rest, admitted under the corpus default policy.
    """
    from attestgate.evaluation.runner import admission_inputs

    jobs = []
    default_policy: str | None = None
    for case in corpus.family(CLEAN_BASELINE):
        inputs = admission_inputs(corpus.root, case)
        stage = [s for s in STAGES if s in case.expected][-1]
        jobs.append(
            Job(
                path=str(inputs.path),
                stage=stage,
                policy=str(inputs.policy) if inputs.policy else None,
                evidence=tuple(str(p) for p in inputs.evidence),
                trust_keys=tuple(str(p) for p in inputs.trust_keys),
                env=tuple(sorted(inputs.env.items())),
                tier=inputs.tier,
            )
        )
        if case.policy is None and inputs.policy is not None:
            default_policy = str(inputs.policy)
    minimum = QUICK_DISTINCT if quick else FULL_DISTINCT
    source = CLEAN_BASELINE
    if len(jobs) < minimum:
        generated = generate_artifacts(scratch, minimum - len(jobs))
        if default_policy is None:
            candidate = corpus.root / "policies" / "eval.yaml"
            default_policy = str(candidate) if candidate.is_file() else None
        jobs.extend(Job(str(p), "deployment", default_policy) for p in generated)
        source = "generated" if len(jobs) == len(generated) else f"{CLEAN_BASELINE} and generated"
    return jobs, source


def generate_artifacts(folder: Path, count: int, seed: int = 20240601) -> list[Path]:
    """Write ``count`` small safetensors files (16 KiB to 1 MiB) of seeded random float32 data."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # noqa: S311 - reproducible filler bytes, not a secret
    paths = []
    for index in range(count):
        elements = rng.choice((4096, 16384, 65536, 262144))
        header = {
            "__metadata__": {"format": "pt"},
            "weight": {"dtype": "F32", "shape": [elements], "data_offsets": [0, elements * 4]},
        }
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        path = folder / f"generated-{index:03d}.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + rng.randbytes(elements * 4))
        paths.append(path)
    return paths


def schedule(jobs: Sequence[Job], quick: bool) -> list[Job]:
    """Repeat the jobs so that each measured run admits at least the target number."""
    if not jobs:
        return []
    target = QUICK_ADMISSIONS if quick else FULL_ADMISSIONS
    repeats = max(1, math.ceil(target / len(jobs)))
    return [job for _ in range(repeats) for job in jobs]


def measure(
    jobs: Sequence[Job],
    *,
    workers: Sequence[int],
    folder: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Admit ``jobs`` with each worker count and hash the same bytes; return JSON-ready data."""
    from attestgate.evaluation.runner import artifact_size

    if not jobs:
        raise RuntimeError("no artifacts to admit for the throughput measurement")
    sizes = {job.path: artifact_size(Path(job.path)) for job in jobs}
    job_sizes = [sizes[job.path] for job in jobs]
    total_bytes = sum(job_sizes)
    runs: dict[str, Any] = {}
    if progress is not None:
        progress(f"throughput: starting and warming up {max(workers)} worker process(es)")
    with WorkerPool(max(workers), folder, jobs) as pool:
        for count in workers:
            if progress is not None:
                progress(f"throughput: {len(jobs)} admissions with {count} worker(s)")
            run = pool.run(jobs, count, folder / f"workers-{count}", job_sizes)
            runs[str(count)] = {
                "artifacts_per_s": run.artifacts_per_s,
                "mib_per_s": run.mib_per_s,
                **asdict(run),
            }

    baseline = sha256_baseline([job.path for job in jobs])
    for entry in runs.values():
        entry["ratio_to_sha256"] = ratio_to_sha256(entry["mib_per_s"], entry["artifacts"], baseline)
    return {
        "workers": runs,
        "sha256": baseline,
        "admissions": len(jobs),
        "distinct": len(sizes),
        "bytes": total_bytes,
        "cpus": os.cpu_count(),
    }


def ratio_to_sha256(mib_per_s: float, artifacts: int, baseline: dict[str, Any]) -> float | None:
    """Return a run's MiB/s over the baseline's, or ``None`` when either measured nothing."""
    if not artifacts or not baseline["bytes"] or not baseline["mib_per_s"]:
        return None
    return float(mib_per_s / baseline["mib_per_s"])


def sha256_baseline(paths: Sequence[str]) -> dict[str, Any]:
    """Hash every file of ``paths`` in order, in one thread, as the floor of intake cost."""
    started = time.perf_counter()
    total = 0
    for path in paths:
        for file in _files(Path(path)):
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                while chunk := handle.read(MIB):
                    digest.update(chunk)
                    total += len(chunk)
    seconds = time.perf_counter() - started
    return {
        "bytes": total,
        "seconds": seconds,
        "mib_per_s": total / MIB / seconds if seconds else 0.0,
    }


def _files(path: Path) -> list[Path]:
    if path.is_symlink():
        return []
    if path.is_file():
        return [path]
    found = []
    for folder, _dirs, names in os.walk(path, followlinks=False):
        for name in sorted(names):
            entry = Path(folder) / name
            if not entry.is_symlink() and entry.is_file():
                found.append(entry)
    return sorted(found)


class WorkerPool:
    """Spawned worker processes, warmed up once and reused for every worker count.

    Each worker admits every distinct job once into its own scratch home
    before it reports ready. That imports the scanners those jobs need,
    which takes seconds per process, so the measured runs see warm
    processes only. A run with ``count`` workers
    activates the first ``count`` of them; the rest wait idle.
    """

    def __init__(self, size: int, folder: Path, jobs: Sequence[Job]) -> None:
        context = multiprocessing.get_context("spawn")
        folder.mkdir(parents=True, exist_ok=True)
        self._tasks: Any = context.Queue()
        self._results: Any = context.Queue()
        self._ready: Any = context.Queue()
        self._controls: list[Any] = [context.Queue() for _ in range(size)]
        warm = list(dict.fromkeys(jobs))
        self._processes = [
            context.Process(
                target=worker_main,
                args=(control, self._tasks, self._results, self._ready, folder / f"warm-{i}", warm),
                name=f"attestgate-eval-worker-{i}",
            )
            for i, control in enumerate(self._controls)
        ]

    def __enter__(self) -> WorkerPool:
        for process in self._processes:
            process.start()
        try:
            _wait_ready(self._ready, self._processes)
        except BaseException:
            self._stop(force=True)
            raise
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._stop(force=error is not None)

    def run(self, jobs: Sequence[Job], count: int, folder: Path, sizes: Sequence[int]) -> RunResult:
        """Admit ``jobs`` with the first ``count`` workers into one new gate home in ``folder``.

        ``sizes`` are the bytes of each job's artifact, in the order of ``jobs``.
        """
        home = folder / "home"
        home.mkdir(parents=True, exist_ok=True)

        # Every task and one stop sentinel per active worker are queued before
        # the clock starts; the control message then releases the workers.
        for index, job in enumerate(jobs):
            self._tasks.put((index, job))
        for _ in range(count):
            self._tasks.put(None)
        active = self._processes[:count]
        started = time.perf_counter()
        for control in self._controls[:count]:
            control.put(str(home))
        failed, first_error = _collect(self._results, active, len(jobs))
        seconds = time.perf_counter() - started

        return RunResult(
            workers=count,
            admissions=len(jobs),
            artifacts=len(jobs) - len(failed),
            bytes=sum(size for index, size in enumerate(sizes) if index not in failed),
            seconds=seconds,
            errors=len(failed),
            first_error=first_error,
        )

    def _stop(self, *, force: bool) -> None:
        if force:
            # Unconsumed tasks must not keep this process waiting on the queue at exit.
            self._tasks.cancel_join_thread()
            for process in self._processes:
                if process.is_alive():
                    process.terminate()
        else:
            for control in self._controls:
                control.put(None)
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()


def _wait_ready(ready: Any, processes: Sequence[Any]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    seen = 0
    while seen < len(processes):
        try:
            ready.get(timeout=1.0)
            seen += 1
        except queue.Empty:
            if any(p.exitcode is not None for p in processes):
                raise RuntimeError("a throughput worker exited before it was ready") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"throughput workers were not ready after {READY_TIMEOUT:.0f} s"
                ) from None


def _collect(results: Any, active: Sequence[Any], expected: int) -> tuple[set[int], str | None]:
    """Wait for ``expected`` results; return the indexes of failed jobs and the first error."""
    deadline = time.monotonic() + RUN_TIMEOUT
    done = 0
    failed: set[int] = set()
    first_error: str | None = None
    while done < expected:
        try:
            index, error = results.get(timeout=1.0)
        except queue.Empty:
            if any(p.exitcode is not None for p in active) or time.monotonic() > deadline:
                raise RuntimeError(
                    f"throughput workers stopped after {done} of {expected} admissions"
                ) from None
            continue
        done += 1
        if error is not None:
            failed.add(index)
            first_error = first_error or error
    return failed, first_error


def worker_main(
    control: Any, tasks: Any, results: Any, ready: Any, warm_home: Path, warm: Sequence[Job]
) -> None:
    """Warm up, report ready, then admit from ``tasks`` into each gate home ``control`` sends.

    A ``None`` task ends one run; a ``None`` control message ends the worker.
    """
    from attestgate.evaluation.runner import AdmissionInputs, PolicyCache, admit_once

    # Failed admissions are counted and the first one reported by the parent,
    # so one warning per failure on stderr would only repeat them.
    logging.getLogger("attestgate").setLevel(logging.ERROR)
    policies = PolicyCache()

    def admit_job(job: Job, into: Path) -> str | None:
        inputs = AdmissionInputs(
            path=Path(job.path),
            policy=Path(job.policy) if job.policy else None,
            evidence=tuple(Path(p) for p in job.evidence),
            trust_keys=tuple(Path(p) for p in job.trust_keys),
            env=dict(job.env),
            tier=job.tier,
            dynamic=(),
        )
        return admit_once(inputs, job.stage, home=into, policies=policies, dynamic=False).error

    warm_home.mkdir(parents=True, exist_ok=True)
    for job in warm:
        admit_job(job, warm_home)
    ready.put(os.getpid())

    while (home := control.get()) is not None:
        while (item := tasks.get()) is not None:
            index, job = item
            results.put((index, admit_job(job, Path(home))))
