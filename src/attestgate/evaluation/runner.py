"""Admit every case of a corpus through the pipeline and collect what the gate decided.

Each case is admitted in this process with :func:`attestgate.pipeline.admit`,
once for every stage its label names, into one gate home per evaluation run.
The case supplies the policy (or the corpus default ``policies/eval.yaml``,
else the built-in policy), evidence files, trusted keys, criticality tier,
dynamic plug-ins and the environment of the dependency checks.

An exception from an admission becomes an ``error`` result for that stage:
it never counts as an allow, and the evaluation goes on with the next one.
A case path that leaves the corpus is an ``error`` result too. That second
check runs in case the corpus changed after :func:`~attestgate.evaluation.scenario.load`
checked every path.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestgate.deps.config import (
    INTERNAL_PACKAGES_VARIABLE,
    OSV_DB_VARIABLE,
    PUBLIC_INDEX_VARIABLE,
)
from attestgate.errors import UsageError
from attestgate.evaluation.scenario import Case, Corpus, CorpusError, inside
from attestgate.pipeline import admit
from attestgate.stages import STAGES

if TYPE_CHECKING:
    from attestgate.evidence import TrustConfig
    from attestgate.policy import Policy

logger = logging.getLogger(__name__)

DEFAULT_POLICY = Path("policies") / "eval.yaml"
ERROR = "error"
# The lock file in the output folder that one evaluation holds at a time.
LOCK_FILE = ".attestgate-eval.lock"

# The dependency checks read these from os.environ (attestgate.deps.config).
# Every admission starts with all of them unset, so that the caller's own
# environment cannot change a case's outcome.
DEPENDENCY_VARIABLES = (INTERNAL_PACKAGES_VARIABLE, PUBLIC_INDEX_VARIABLE, OSV_DB_VARIABLE)

_environ_lock = threading.Lock()

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReasonResult:
    """One reason of a decision, as the record lists it."""

    rule: str
    action: str
    severity: str
    remediation: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "action": self.action,
            "severity": self.severity,
            "remediation": self.remediation,
        }


@dataclass
class StageResult:
    """The gate's decision for one case at one stage, or the error that stopped it.

    ``action`` is ``allow``, ``quarantine``, ``block`` or ``error``.
    ``timings`` are the record's seconds per pipeline step and ``seconds``
    the wall-clock time of the whole ``admit`` call.
    """

    action: str
    reasons: list[ReasonResult] = field(default_factory=list)
    findings: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def reason_rules(self) -> list[str]:
        return [reason.rule for reason in self.reasons]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "reasons": [reason.to_json() for reason in self.reasons],
            "findings": [{"rule": rule, "severity": sev} for rule, sev in self.findings],
            "timings": self.timings,
            "seconds": round(self.seconds, 6),
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class CaseResult:
    """The results of one case at every stage its label names."""

    case: Case
    size: int
    stages: dict[str, StageResult]

    @property
    def seconds(self) -> float:
        return sum(result.seconds for result in self.stages.values())

    @property
    def errors(self) -> dict[str, str]:
        return {
            stage: result.error for stage, result in self.stages.items() if result.error is not None
        }

    def to_json(self) -> dict[str, Any]:
        case = self.case
        return {
            "id": case.id,
            "scenario": case.scenario,
            "family": case.family,
            "hostile": case.hostile,
            "step": case.step,
            "twin": case.twin,
            "tags": list(case.tags),
            "tier": case.tier,
            "dynamic": list(case.dynamic),
            "size": self.size,
            "expected": dict(case.expected),
            "actual": {stage: result.action for stage, result in self.stages.items()},
            "reasons": {stage: result.reason_rules for stage, result in self.stages.items()},
            "seconds": round(self.seconds, 6),
            "stages": {stage: result.to_json() for stage, result in self.stages.items()},
        }


@dataclass(frozen=True)
class AdmissionInputs:
    """The resolved inputs of one case's admission, all as paths on this machine."""

    path: Path
    policy: Path | None
    evidence: tuple[Path, ...]
    trust_keys: tuple[Path, ...]
    env: dict[str, str]
    tier: str | None
    dynamic: tuple[str, ...]


def admission_inputs(root: Path, case: Case) -> AdmissionInputs:
    """Resolve the case's artifact, policy, evidence, keys and environment against ``root``."""
    if case.policy is not None:
        policy: Path | None = inside(root, case.policy)
    else:
        default = inside(root, DEFAULT_POLICY.as_posix())
        policy = default if default.is_file() else None
    return AdmissionInputs(
        path=case.path(root),
        policy=policy,
        evidence=tuple(inside(root, item) for item in case.evidence),
        trust_keys=tuple(inside(root, item) for item in case.trust_keys),
        env=case.environment(root),
        tier=case.tier,
        dynamic=case.dynamic,
    )


@contextmanager
def dependency_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the duration, with the other dependency variables unset.

    The lock serialises callers in this process. The previous values come
    back on exit, also when the body raises.
    """
    names = set(DEPENDENCY_VARIABLES) | set(env)
    with _environ_lock:
        saved = {name: os.environ.get(name) for name in names}
        try:
            for name in names:
                os.environ.pop(name, None)
            os.environ.update(env)
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class PolicyCache:
    """Policies loaded once per path; ``None`` stands for the built-in policy."""

    def __init__(self) -> None:
        self._loaded: dict[Path | None, Policy] = {}

    def get(self, path: Path | None) -> Policy:
        policy = self._loaded.get(path)
        if policy is None:
            from attestgate.policy import load_default_policy, load_policy

            policy = load_default_policy() if path is None else load_policy(path)
            self._loaded[path] = policy
        return policy


def admit_once(
    inputs: AdmissionInputs,
    stage: str,
    *,
    home: Path,
    policies: PolicyCache,
    dynamic: bool = True,
) -> StageResult:
    """Admit the resolved case at ``stage``; an exception becomes an ``error`` result."""
    started = time.perf_counter()
    try:
        policy = policies.get(inputs.policy)
        trust = _trust(inputs.trust_keys)
        with dependency_environment(inputs.env):
            admission = admit(
                inputs.path,
                stage=stage,
                policy=policy,
                home=home,
                evidence=inputs.evidence,
                trust=trust,
                dynamic=list(inputs.dynamic) if dynamic and inputs.dynamic else None,
                tier=inputs.tier,
            )
    except Exception as exc:  # noqa: BLE001 - any failure is an error result, never an allow
        # Counted against the gate, and the evaluation goes on.
        logger.warning("admission of %s for %s failed: %s", inputs.path, stage, exc)
        return StageResult(
            action=ERROR,
            seconds=time.perf_counter() - started,
            error=f"{type(exc).__name__}: {exc}",
        )
    seconds = time.perf_counter() - started
    return stage_result(admission.record, seconds)


def _trust(keys: Sequence[Path]) -> TrustConfig | None:
    if not keys:
        return None
    from attestgate.evidence import TrustConfig

    return TrustConfig.from_options(trusted_keys=list(keys))


def stage_result(record: Mapping[str, Any], seconds: float) -> StageResult:
    """Extract the decision, reasons, findings and timings from a decision record."""
    reasons = [
        ReasonResult(
            rule=str(item.get("rule", "")),
            action=str(item.get("action", "")),
            severity=str(item.get("severity", "")),
            remediation=str(item.get("remediation", "")),
        )
        for item in record.get("reasons", [])
    ]
    findings = [
        (str(item.get("rule", "")), str(item.get("severity", "")))
        for item in record.get("findings", [])
    ]
    timings = {str(k): float(v) for k, v in dict(record.get("timings", {})).items()}
    return StageResult(
        action=str(record["decision"]),
        reasons=reasons,
        findings=findings,
        timings=timings,
        seconds=seconds,
    )


def artifact_size(path: Path) -> int:
    """Return the bytes of the regular files at ``path``, without following links."""
    if path.is_symlink():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            entry = Path(folder) / name
            if not entry.is_symlink() and entry.is_file():
                total += entry.stat().st_size
    return total


def labelled_stages(case: Case) -> list[str]:
    """Return the stages the case is labelled for, in pipeline order."""
    return [stage for stage in STAGES if stage in case.expected]


def run_case(
    root: Path, case: Case, *, home: Path, policies: PolicyCache | None = None
) -> CaseResult:
    """Admit one case at each labelled stage."""
    policies = policies or PolicyCache()
    try:
        inputs = admission_inputs(root, case)
    except CorpusError as exc:
        failed = {
            stage: StageResult(action=ERROR, error=f"CorpusError: {exc}")
            for stage in labelled_stages(case)
        }
        return CaseResult(case, 0, failed)
    stages = {
        stage: admit_once(inputs, stage, home=home, policies=policies)
        for stage in labelled_stages(case)
    }
    try:
        size = artifact_size(inputs.path)
    except OSError:
        size = 0
    return CaseResult(case, size, stages)


def warm_up(folder: Path) -> None:
    """Admit a small generated file into a scratch home, so that later timings exclude imports.

    The first admission in a process imports the policy engine, the
    evidence verifiers and the database driver, which takes about a second
    and would otherwise be charged to whichever case comes first.
    """
    from attestgate.evaluation.throughput import generate_artifacts

    (artifact,) = generate_artifacts(folder / "artifact", 1)
    inputs = AdmissionInputs(artifact, None, (), (), {}, None, ())
    result = admit_once(inputs, STAGES[-1], home=folder / "home", policies=PolicyCache())
    if result.error is not None:
        logger.warning("the warm-up admission failed: %s", result.error)


def run_corpus(corpus: Corpus, *, home: Path, progress: Progress | None = None) -> list[CaseResult]:
    """Admit every case of ``corpus`` in order, into the gate home ``home``.

    Cases run one after another because the dependency checks read the
    process environment, which each case sets for its own admissions.
    """
    home.mkdir(parents=True, exist_ok=True)
    policies = PolicyCache()
    results = []
    total = len(corpus.cases)
    for index, case in enumerate(corpus.cases, start=1):
        result = run_case(corpus.root, case, home=home, policies=policies)
        results.append(result)
        if progress is not None:
            actions = ", ".join(f"{s}={r.action}" for s, r in result.stages.items())
            progress(f"[{index}/{total}] {case.id}: {actions}")
    return results


@contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``out``'s lock file, creating ``out`` if needed.

    Raises :class:`UsageError` at once when another evaluation holds it. The
    lock is released when the file descriptor closes, also when the process
    dies, so a stale lock file never blocks a later run.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"output folder {out} is locked by another attestgate eval ({path})",
                hint="wait for that run to finish, or pass another --out",
            ) from None
        yield path
    finally:
        os.close(descriptor)


def run_evaluation(
    corpus: Corpus,
    out: Path,
    *,
    quick: bool,
    workers: Sequence[int],
    peers: bool = False,
    progress: Progress | None = None,
    corpus_seconds: float | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Admit the corpus, compute every metric, measure throughput and write the report.

    Returns the results document (as written to ``results.json``) and the
    absolute paths of the files written. The gate home is a new folder under
    ``out`` for each run, and a warm-up admission before the first case
    keeps import time out of the latencies. A throughput run that fails is
    reported in the results under ``throughput.error`` instead of stopping
    the evaluation, and failed admissions under ``failed_admissions``.
    ``corpus_seconds`` is the time the caller took to generate the corpus,
    if it did, and is reported beside the corpus. The caller holds
    :func:`output_lock` on ``out`` when other runs may share it.
    """
    import tempfile
    from datetime import UTC, datetime

    from attestgate.evaluation import metrics, throughput
    from attestgate.evaluation.report import machine_info, write_report

    started = datetime.now(UTC)
    clock = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Absolute paths in the results, whatever the working directory was.
    corpus = replace(corpus, root=corpus.root.resolve())
    run_folder = Path(tempfile.mkdtemp(prefix="run-", dir=out))
    home = run_folder / "home"
    if progress is not None:
        progress(f"admitting {len(corpus.cases)} cases into {home}")
    warm_up(run_folder / "warm-up")
    results = run_corpus(corpus, home=home, progress=progress)

    decisions = metrics.confusion(results)
    document: dict[str, Any] = {
        "version": 1,
        "quick": quick,
        "started": started.isoformat(timespec="seconds"),
        "out": str(out),
        "corpus": {**_corpus_summary(corpus), "seconds": corpus_seconds},
        "home": str(home),
        "labels": metrics.labels(results),
        "failed_admissions": metrics.failures(results),
        "coverage": metrics.coverage(results),
        "false_positives": metrics.false_positives(results),
        "confusion": decisions.pop("table"),
        "accuracy": decisions["accuracy"],
        "decisions": decisions,
        "actionable_remediation": metrics.actionable_remediation(results),
        "latency": metrics.latency(results),
    }

    if workers:
        try:
            jobs, source = throughput.jobs_from_corpus(
                corpus, quick=quick, scratch=run_folder / "throughput-artifacts"
            )
            measured = throughput.measure(
                throughput.schedule(jobs, quick),
                workers=workers,
                folder=run_folder / "throughput",
                progress=progress,
            )
            document["throughput"] = {"source": source, **measured}
        except (OSError, RuntimeError, CorpusError) as exc:
            logger.error("throughput measurement failed: %s", exc)
            document["throughput"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        document["throughput"] = {"skipped": "no worker counts were given"}

    document["peers"] = (
        _peers(corpus, results, progress)
        if peers
        else {
            "available": False,
            "reason": "not requested; pass --peers to compare with other scanners",
        }
    )
    document["machine"] = machine_info()
    document["cases"] = [result.to_json() for result in results]
    document["seconds"] = time.perf_counter() - clock
    files = write_report(document, out)
    return document, files


def _corpus_summary(corpus: Corpus) -> dict[str, Any]:
    families: dict[str, int] = {}
    for case in corpus.cases:
        families[case.family] = families.get(case.family, 0) + 1
    return {
        "root": str(corpus.root),
        "cases": len(corpus.cases),
        "hostile": sum(1 for case in corpus.cases if case.hostile),
        "scenarios": len(corpus.scenarios),
        "families": families,
        "generator": corpus.generator,
    }


def _peers(
    corpus: Corpus, results: Sequence[CaseResult], progress: Progress | None
) -> dict[str, Any]:
    """Run the other scanners on the malicious-hub and clean-baseline cases, if installed."""
    from attestgate.evaluation.metrics import peer_summary
    from attestgate.evaluation.scenario import CLEAN_BASELINE, MALICIOUS_HUB

    # Imported by name: the peer comparison is an optional part of the package.
    try:
        run_peers = importlib.import_module("attestgate.evaluation.peers").run_peers
    except (ImportError, AttributeError) as exc:
        return {"available": False, "reason": f"the peer comparison is not installed: {exc}"}
    cases = [c for c in corpus.cases if c.family in (MALICIOUS_HUB, CLEAN_BASELINE)]
    try:
        data = dict(run_peers(corpus.root, cases, progress=progress))
    except Exception as exc:  # noqa: BLE001 - the optional comparison must not stop the run
        # The failure is reported in the results instead.
        logger.error("peer comparison failed: %s", exc)
        return {"available": False, "reason": f"the peer comparison failed: {exc}"}
    tools: Mapping[str, Any] = data.get("tools", {})
    if not any(info.get("available") for info in tools.values()):
        missing = "; ".join(
            f"{name}: {info.get('error') or 'not installed'}" for name, info in tools.items()
        )
        return {**data, "available": False, "reason": f"no other scanner ran ({missing})"}
    return {**data, "available": True, "summary": peer_summary(data, results)}
