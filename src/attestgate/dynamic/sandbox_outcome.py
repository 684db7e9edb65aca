"""The outcome of sandbox runs: their status, the limit that stopped them, and findings."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

from attestgate.dynamic.interface import (
    CRASHED,
    INCOMPLETE,
    TIMEOUT,
    UNAVAILABLE,
    Budget,
    evidence_finding,
)
from attestgate.dynamic.sandbox_plan import LOADER_LABELS, NAME, SessionPlan
from attestgate.dynamic.sandbox_stream import SessionOutput
from attestgate.findings import Finding

_LIMIT_SIGNALS: dict[int, str] = {
    signal.SIGXCPU: "CPU time limit (RLIMIT_CPU)",
    signal.SIGXFSZ: "file size limit (RLIMIT_FSIZE)",
    signal.SIGKILL: "kernel (SIGKILL: the CPU time hard limit or an out-of-memory kill)",
}
_LIMIT_ERRNOS = {
    11: "process limit (RLIMIT_NPROC)",  # EAGAIN from fork or thread creation
    24: "open file limit (RLIMIT_NOFILE)",  # EMFILE
    27: "file size limit (RLIMIT_FSIZE)",  # EFBIG
}


@dataclass
class RunState:
    """The gate's view of one loader run, built from the child's messages."""

    loader: str
    status: str = "not-run"
    started: float | None = None
    ended: float | None = None
    error: dict[str, Any] | None = None
    errors: list[Any] = field(default_factory=list)
    reason: str = ""
    limit: str = ""
    exit: dict[str, Any] = field(default_factory=dict)
    digests: list[str] = field(default_factory=list)
    digests_done: bool = False
    loaded_type: str = ""
    got_end: bool = False


def run_status(state: RunState, output: SessionOutput) -> tuple[str, str]:
    """Return the run's status and, for a run that a limit stopped, which limit."""
    wall_clock = "wall-clock time limit"
    if state.exit.get("timeout") is True:
        return "timeout", wall_clock
    if state.got_end:
        return _end_status(state.error)
    if state.started is None:
        if output.stopped == "deadline":
            return "timeout", wall_clock
        return "not-run", ""
    number = state.exit.get("signal")
    if isinstance(number, int):
        return "crashed", _LIMIT_SIGNALS.get(number, f"signal {_signal_name(number)}")
    if output.stopped == "deadline":
        return "timeout", wall_clock
    code = state.exit.get("code")
    if code is None:
        return "crashed", "end of the sandbox session before the loader returned"
    return "crashed", f"exit of the worker with status {code} before the loader returned"


def _end_status(error: dict[str, Any] | None) -> tuple[str, str]:
    if not error:
        return "loaded", ""
    if error.get("type") == "MemoryError":
        return "crashed", "memory limit (RLIMIT_AS)"
    errno = error.get("errno")
    if isinstance(errno, int) and errno in _LIMIT_ERRNOS:
        return "crashed", _LIMIT_ERRNOS[errno]
    return "load-failed", ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def run_finding(plan: SessionPlan, state: RunState, run_seconds: float) -> Finding | None:
    label = LOADER_LABELS[state.loader]
    if state.status == "timeout":
        return evidence_finding(
            TIMEOUT,
            NAME,
            plan.file,
            f"loading {plan.file} with {label} did not finish within {run_seconds:g} s, so "
            "the sandbox stopped it and its behaviour after that point is unknown",
            "Have a reviewer inspect the file before it is loaded anywhere. If the file is "
            "legitimately slow to load, admit it again with a larger sandbox time budget.",
            loader=label,
            limit=state.limit,
        )
    if state.status == "not-run":
        return evidence_finding(
            CRASHED,
            NAME,
            plan.file,
            f"the sandbox session for {plan.file} ended before loading it with {label} "
            "started, so that load gave no evidence",
            "Admit the artifact again; if the sandbox keeps ending early, run the gate with "
            "-vv to see the child's output and report it.",
            loader=label,
        )
    if state.status == "crashed":
        return evidence_finding(
            CRASHED,
            NAME,
            plan.file,
            f"loading {plan.file} with {label} was stopped by the {state.limit}, so its "
            "behaviour after that point is unknown",
            "Have a reviewer inspect the file before it is loaded anywhere: a model file "
            "that exhausts a sandbox limit while loading is either corrupt or hostile. If it "
            "is a legitimately large model, admit it again with larger sandbox limits.",
            loader=label,
            limit=state.limit,
        )
    return None


def overall_status(runs: list[dict[str, Any]]) -> str:
    statuses = {run["status"] for run in runs}
    bad = statuses & {"timeout", "crashed", "not-run"}
    if not runs or statuses <= {"not-run"}:
        return "unavailable"
    if not bad:
        return "ok"
    if statuses <= bad:
        return "timeout" if statuses == {"timeout"} else "crashed"
    return "partial"


def not_run_entry(plan: SessionPlan, reason: str) -> dict[str, Any]:
    return {
        "file": plan.file,
        "loader": ", ".join(LOADER_LABELS[x] for x in plan.loaders),
        "status": "not-run",
        "reason": reason,
    }


def unavailable_finding(file: str, reason: str, *, isolation: bool = True) -> Finding:
    if isolation:
        message = f"the sandbox could not load {file} in isolation"
        remediation = (
            "Run the gate where unshare and setpriv (util-linux) can create network and PID "
            "namespaces, as root or with unprivileged user namespaces enabled, and admit the "
            "artifact again. Until then a reviewer must decide without dynamic evidence."
        )
    else:
        message = f"the sandbox could not prepare the load of {file}"
        remediation = (
            "Make the file readable by the gate and the temporary directory writable, and "
            "admit the artifact again. Until then a reviewer must decide without dynamic "
            "evidence."
        )
    return evidence_finding(
        UNAVAILABLE,
        NAME,
        file,
        f"{message}, so no dynamic evidence was collected for it: {reason}",
        remediation,
        reason=reason,
    )


def budget_finding(plans: list[SessionPlan], budget: Budget) -> Finding:
    names = [p.file for p in plans]
    return evidence_finding(
        TIMEOUT,
        NAME,
        names[0],
        f"the sandbox time budget of {budget.seconds:g} s ran out before {len(names)} "
        f"file(s) were loaded: {', '.join(names[:10])}",
        "Admit the artifact again with a larger dynamic time budget, or have a reviewer "
        "inspect the files that were not loaded.",
        files=names[:100],
    )


def too_many_files_finding(plans: list[SessionPlan], limit: int) -> Finding:
    names = [p.file for p in plans]
    return evidence_finding(
        INCOMPLETE,
        NAME,
        names[0],
        f"the sandbox loads at most {limit} files per artifact, so {len(names)} file(s) "
        f"were not loaded: {', '.join(names[:10])}",
        "Have a reviewer inspect the files that were not loaded, or raise the sandbox's "
        "file limit for this artifact.",
        files=names[:100],
    )


def staging_cut_finding(plan: SessionPlan, copied: int, total: int) -> Finding:
    return evidence_finding(
        INCOMPLETE,
        NAME,
        plan.file,
        f"only {copied} of the {total} Python files of {plan.file} were staged for the import "
        "run, because the rest exceed the sandbox's staging limits",
        "Have a reviewer inspect the Python files, or raise the staging limits and admit the "
        "artifact again.",
    )


def incomplete_finding(plan: SessionPlan, reason: str) -> Finding:
    return evidence_finding(
        INCOMPLETE,
        NAME,
        plan.file,
        f"the sandbox stopped reading events while loading {plan.file} because {reason}; "
        "later events were not recorded",
        "Have a reviewer inspect the file: a legitimate load does not produce that many "
        "distinct events.",
        reason=reason,
    )
