"""The built-in sandboxed-load plug-in: load the artifact natively in an isolated child.

For each loadable file the plug-in starts one sandbox session and
requests one or more loader runs, chosen from the file's detected format.
``sandbox_isolation`` sets up the isolation, and ``sandbox_child`` is the
code that runs inside:

- pickle: ``pickle.load``, or ``joblib.load`` for a joblib file;
- PyTorch checkpoints: ``torch.load(weights_only=True)``, then
  ``torch.load(weights_only=False)`` as a separate run;
- TorchScript: ``torch.jit.load``;
- NumPy ``.npy`` and ``.npz``: ``numpy.load(allow_pickle=True)``;
- Keras and HDF5: ``keras.models.load_model``, where keras is installed;
- wheels, and the Python files of the artifact: importing their top-level
  modules;
- a directory with ``config.json``: a Transformers ``from_pretrained``,
  where transformers is installed.

The signals recorded in the child become the plug-in's signals. For PyTorch
zip checkpoints the plug-in also hashes every tensor storage stored in the
file and compares the digests with the storages of the loaded object, which
exposes a payload that rewrites weights while it loads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import site
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from attestgate.dynamic import sandbox_child
from attestgate.dynamic.interface import (
    BUILTIN_KINDS,
    MONITOR_TAMPER,
    SENSITIVE_PATH_PATTERNS,
    STANDARD_KINDS,
    TENSOR_MISMATCH,
    ArtifactInput,
    Budget,
    DynamicPlugin,
    KindSpec,
    PluginResult,
    Signal,
)
from attestgate.dynamic.sandbox_isolation import (
    Isolation,
    IsolationUnavailable,
    ResourceLimits,
    build_isolation,
    check_isolation,
    child_environment,
    prepare_scratch,
    remove_leftovers,
)
from attestgate.dynamic.sandbox_outcome import (
    RunState,
    budget_finding,
    incomplete_finding,
    not_run_entry,
    overall_status,
    run_finding,
    run_status,
    staging_cut_finding,
    too_many_files_finding,
    unavailable_finding,
)
from attestgate.dynamic.sandbox_plan import (
    LOADABLE_FORMATS,
    LOADER_LABELS,
    NAME,
    VERSION,
    SandboxLimits,
    SessionPlan,
    plan_sessions,
    torch_zip_digests,
)
from attestgate.dynamic.sandbox_stream import Received, SessionOutput, SessionSpec, run_session
from attestgate.findings import Finding
from attestgate.identify.formats import Format

__all__ = ["SandboxLimits", "SandboxPlugin", "SessionPlan", "plan_sessions", "torch_zip_digests"]

logger = logging.getLogger(__name__)

# Signal kinds the child may report; anything else in the stream is forged.
CHILD_KINDS = frozenset(STANDARD_KINDS) | frozenset(BUILTIN_KINDS)

# Interpreter notes already logged by this process, so each is logged once.
_LOGGED_NOTES: set[str] = set()


class SandboxPlugin(DynamicPlugin):
    """Loads the artifact with its native loaders in an isolated, disposable child process."""

    name: ClassVar[str] = NAME
    version: ClassVar[str] = VERSION
    kinds: ClassVar[Mapping[str, KindSpec]] = BUILTIN_KINDS

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()

    def applies_to(self, formats: frozenset[Format], stage: str, tier: str | None) -> bool:
        return bool(formats & LOADABLE_FORMATS)

    def run(self, artifact: ArtifactInput, budget: Budget) -> PluginResult:
        """Load every loadable file of ``artifact`` in its own sandbox session."""
        plans = plan_sessions(artifact, self.limits)
        result = PluginResult()
        if not plans:
            result.status = "not-applicable"
            return result
        try:
            check_isolation()
        except IsolationUnavailable as exc:
            result.status = "unavailable"
            result.findings.append(unavailable_finding(artifact.name, str(exc)))
            return result

        skipped = plans[self.limits.max_files :]
        for index, plan in enumerate(plans[: self.limits.max_files]):
            if budget.remaining() < 1.0:
                result.findings.append(budget_finding(plans[index:], budget))
                result.runs.extend(not_run_entry(p, "budget") for p in plans[index:])
                break
            self._run_plan(plan, budget, result)
        if skipped:
            result.findings.append(too_many_files_finding(skipped, self.limits.max_files))
            result.runs.extend(not_run_entry(p, "file limit") for p in skipped)
        result.status = overall_status(result.runs)
        return result

    def _run_plan(self, plan: SessionPlan, budget: Budget, result: PluginResult) -> None:
        scratch = Path(tempfile.mkdtemp(prefix="attestgate-sandbox-"))
        fds: list[int] = []
        try:
            session = _Session(plan, self.limits, scratch, budget)
            outcome = session.run(fds)
            result.signals.extend(outcome.signals)
            result.findings.extend(outcome.findings)
            result.runs.extend(outcome.runs)
        except IsolationUnavailable as exc:
            result.findings.append(unavailable_finding(plan.file, str(exc)))
            result.runs.append(not_run_entry(plan, "unavailable"))
        except OSError as exc:
            # The file could not be opened, staged or hashed, or the scratch
            # directory could not be prepared.
            logger.warning("sandbox session for %s failed: %s", plan.file, exc)
            reason = f"{exc.strerror or exc} ({exc.filename or plan.target})"
            result.findings.append(unavailable_finding(plan.file, reason, isolation=False))
            result.runs.append(not_run_entry(plan, "unavailable"))
        finally:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(scratch, ignore_errors=True)
            if scratch.exists():
                logger.warning("could not remove the sandbox scratch directory %s", scratch)


@dataclass
class SessionOutcome:
    signals: list[Signal] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


class _Session:
    """One child process tree: prepare, run, interpret."""

    def __init__(
        self, plan: SessionPlan, limits: SandboxLimits, scratch: Path, budget: Budget
    ) -> None:
        self.plan = plan
        self.limits = limits
        self.scratch = scratch
        self.budget = budget
        self.isolation: Isolation = build_isolation()
        self.resources = ResourceLimits(
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_base_bytes + limits.memory_per_file_byte * plan.size,
            file_size_bytes=max(limits.file_size_bytes, 2 * plan.size),
            processes=limits.processes,
            open_files=limits.open_files,
        )
        self.states = [RunState(loader) for loader in plan.loaders]
        self.outcome = SessionOutcome()
        self.static_digests: set[str] | None = None
        self.tamper: list[str] = []
        self.note = ""

    def run(self, fds: list[int]) -> SessionOutcome:
        prepare_scratch(self.scratch, self.isolation)
        target_fd = _open_target(self.plan)
        fds.append(target_fd)
        staged_dir = self._stage_sources()
        if self.plan.format is Format.PYTORCH_ZIP:
            self.static_digests = torch_zip_digests(self.plan.target, self.limits)

        run_seconds = min(self.limits.run_seconds, max(1.0, self.budget.remaining()))
        event_read, event_write = os.pipe()
        try:
            config = self._config(target_fd, event_write, staged_dir, run_seconds)
            spec = self._spec(config, target_fd, run_seconds)
        except BaseException:
            os.close(event_read)
            os.close(event_write)
            raise
        # run_session owns both ends of the pipe from here on and closes them.
        output = run_session(spec, event_read, event_write, self._check_hello)
        self._interpret(output, run_seconds)
        leftovers = remove_leftovers(self.isolation, self.scratch)
        if leftovers:
            logger.warning(
                "removed %d file(s) that the sandbox left outside its scratch directory: %s",
                len(leftovers),
                ", ".join(leftovers[:5]),
            )
            for run in self.outcome.runs:
                run["removed"] = leftovers[:20]
        return self.outcome

    def _config(
        self, target_fd: int, event_fd: int, staged_dir: Path | None, run_seconds: float
    ) -> dict[str, Any]:
        runs = []
        for loader in self.plan.loaders:
            run: dict[str, Any] = {
                "loader": loader,
                "timeout": run_seconds,
                "fd": target_fd,
                "format": self.plan.format.value,
            }
            if loader == "package":
                if self.plan.format is Format.WHEEL:
                    run["package"] = "wheel"
                    run["max_extract_bytes"] = self.limits.file_size_bytes
                else:
                    run["package"] = "directory"
                    run["path"] = str(staged_dir)
            if loader == "transformers":
                run["path"] = f"/proc/self/fd/{target_fd}"
            if loader.startswith("torch-") and self.static_digests is not None:
                run["digests"] = True
                run["max_storages"] = self.limits.max_storages
            runs.append(run)
        return {
            "event_fd": event_fd,
            "scratch": str(self.scratch),
            "site": _site_directories(),
            "sensitive": list(SENSITIVE_PATH_PATTERNS),
            "nproc": self.limits.processes,
            "runs": runs,
        }

    def _spec(self, config: dict[str, Any], target_fd: int, run_seconds: float) -> SessionSpec:
        runs = len(self.plan.loaders)
        needed = self.limits.setup_seconds + runs * (run_seconds + 5.0) + 5.0
        deadline = time.monotonic() + min(needed, max(1.0, self.budget.remaining()))
        argv = [
            *self.isolation.prefix,
            sys.executable,
            "-I",
            "-S",
            "-B",
            str(Path(sandbox_child.__file__).resolve()),
            _json(config),
        ]
        return SessionSpec(
            argv=argv,
            env=child_environment(self.scratch),
            cwd=self.scratch,
            pass_fds=(target_fd,),
            preexec=self.resources.preexec(
                with_process_limit=self.isolation.sandbox_id is not None
            ),
            deadline=deadline,
            hello_seconds=self.limits.hello_seconds,
            max_message=self.limits.max_message_bytes,
            max_messages=self.limits.max_messages,
            max_output=self.limits.max_output_bytes,
        )

    def _stage_sources(self) -> Path | None:
        if not self.plan.staged:
            return None
        stage = self.scratch / "work" / "src" / sandbox_child.STAGED_PACKAGE
        stage.mkdir(parents=True)
        total = 0
        for copied, file in enumerate(self.plan.staged):
            if (
                copied >= self.limits.max_staged_files
                or total + file.size > self.limits.max_staged_bytes
            ):
                self.outcome.findings.append(
                    staging_cut_finding(self.plan, copied, len(self.plan.staged))
                )
                break
            target = stage.joinpath(*file.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with file.location.open("rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            total += file.size
        init = stage / "__init__.py"
        if not init.exists():
            init.write_bytes(b"")
        for path in (stage.parent, *stage.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        return stage

    def _check_hello(self, hello: dict[str, Any]) -> str:
        """Return why the child's first message does not prove isolation, or ''."""
        if hello.get("t") != "hello":
            return f"the child's first message was {hello.get('t')!r}, not hello"
        try:
            own_netns = os.readlink("/proc/self/ns/net")
        except OSError as exc:
            return f"the gate's own network namespace could not be read: {exc}"
        problems = []
        if not hello.get("netns") or hello.get("netns") == own_netns:
            problems.append("the child shares the gate's network namespace")
        if hello.get("pid") != 1:
            problems.append("the child is not the first process of a new PID namespace")
        if str(hello.get("nnp")) != "1":
            problems.append("no-new-privileges is not set")
        if _hex(hello.get("cap_eff")) != 0:
            problems.append(f"the child has capabilities ({hello.get('cap_eff')})")
        sandbox_id = self.isolation.sandbox_id
        if sandbox_id is not None and (
            hello.get("uid") != sandbox_id or hello.get("gid") != sandbox_id or hello.get("groups")
        ):
            problems.append("the child does not run as the unprivileged sandbox user")
        problems.extend(self._check_limits(hello.get("limits")))
        problems.extend(self._check_interpreter(hello))
        return "; ".join(problems)

    def _check_interpreter(self, hello: dict[str, Any]) -> list[str]:
        version_info = hello.get("version_info")
        if not isinstance(version_info, list) or version_info[:2] != list(sys.version_info[:2]):
            # Compiled loader extensions only work with the same minor version.
            return [
                f"the child runs Python {version_info}, not {sys.version_info[0]}."
                f"{sys.version_info[1]}"
            ]
        stdlib = str(hello.get("stdlib", ""))
        if hello.get("version") != sys.version or stdlib != os.path.dirname(
            os.path.dirname(json.__file__ or "")
        ):
            # The interpreter falls back to another installation's library and
            # standard modules when the sandbox user cannot read its own.
            self.note = (
                "the sandbox user cannot read all of the gate's interpreter files, so the "
                f"child ran Python {str(hello.get('version')).split()[0]} with the standard "
                f"library in {stdlib}"
            )
            if self.note not in _LOGGED_NOTES:
                _LOGGED_NOTES.add(self.note)
                logger.warning("sandbox: %s", self.note)
        return []

    def _check_limits(self, limits: Any) -> list[str]:
        if not isinstance(limits, dict):
            return ["the child did not report its resource limits"]
        ceilings = {
            "RLIMIT_CPU": self.resources.cpu_seconds,
            "RLIMIT_AS": self.resources.memory_bytes,
            "RLIMIT_FSIZE": self.resources.file_size_bytes,
            "RLIMIT_NPROC": self.resources.processes,
            "RLIMIT_NOFILE": self.resources.open_files,
        }
        problems = []
        for name, ceiling in ceilings.items():
            value = limits.get(name)
            soft = value[0] if isinstance(value, list) and value else None
            if not isinstance(soft, int) or soft < 0 or soft > ceiling:
                problems.append(f"{name} is {value}, not at most {ceiling}")
        return problems

    def _interpret(self, output: SessionOutput, run_seconds: float) -> None:
        for received in output.messages:
            self._dispatch(received)
        hello = output.messages[0].message if output.messages else {}
        if hello.get("t") != "hello" or output.hello_error:
            reason = output.hello_error or "the child did not report its isolation"
            tail = output.output_tail.strip()[-300:]
            if tail:
                reason = f"{reason} (child output: {tail})"
            self.outcome.findings.append(unavailable_finding(self.plan.file, reason))
            self.outcome.runs.append(not_run_entry(self.plan, "unavailable"))
            return

        if output.stream_over_limit:
            self.outcome.findings.append(incomplete_finding(self.plan, output.stream_error))
        elif output.stream_error:
            self.tamper.append(output.stream_error)
        self._finish_runs(output, run_seconds)
        if self.tamper:
            self.outcome.signals.append(self._signal(MONITOR_TAMPER, {"reason": self.tamper[0]}))
        self._compare_digests()

    def _dispatch(self, received: Received) -> None:
        message = received.message
        kind = message.get("t")
        index = message.get("r")
        state = (
            self.states[index] if isinstance(index, int) and 0 <= index < len(self.states) else None
        )
        if kind in ("hello", "ready", "bye"):
            return
        if state is None:
            self.tamper.append(f"a {kind!r} message named no planned run")
            return
        if kind == "ev":
            self._event(received, state)
        elif kind == "start":
            state.started = received.at
        elif kind == "skip":
            state.status = "skipped"
            state.reason = str(message.get("reason", ""))[:300]
        elif kind == "end":
            state.got_end = True
            state.ended = received.at
            if message.get("ok") is True:
                state.loaded_type = str(message.get("type", ""))[:100]
            else:
                error = message.get("error")
                state.error = error if isinstance(error, dict) else {"message": str(error)}
                errors = message.get("errors")
                state.errors = errors[:10] if isinstance(errors, list) else []
        elif kind == "exit":
            state.exit = {k: v for k, v in message.items() if k in ("timeout", "signal", "code")}
            state.ended = state.ended or received.at
        elif kind == "digests":
            self._digests(message, state)
        else:
            self.tamper.append(f"a message of unknown type {kind!r}")

    def _event(self, received: Received, state: RunState) -> None:
        kind = received.message.get("k")
        details = received.message.get("d")
        if not isinstance(kind, str) or kind not in CHILD_KINDS or not isinstance(details, dict):
            self.tamper.append(f"an event of unexpected kind {kind!r}")
            return
        signal_time = _iso(received.at)
        details = {**details, "loader": LOADER_LABELS[state.loader]}
        self.outcome.signals.append(
            Signal(kind, details, signal_time, NAME, VERSION, file=self.plan.file)
        )

    def _digests(self, message: dict[str, Any], state: RunState) -> None:
        batch = message.get("d")
        if isinstance(batch, list):
            room = self.limits.max_storages - len(state.digests)
            state.digests.extend(str(d) for d in batch[: max(0, room)])
        if isinstance(message.get("done"), int):
            state.digests_done = message["done"] == len(state.digests)

    def _finish_runs(self, output: SessionOutput, run_seconds: float) -> None:
        for state in self.states:
            if state.status != "skipped":
                state.status, state.limit = run_status(state, output)
            entry: dict[str, Any] = {
                "file": self.plan.file,
                "loader": LOADER_LABELS[state.loader],
                "status": state.status,
            }
            if state.started is not None and state.ended is not None:
                entry["seconds"] = round(max(0.0, state.ended - state.started), 3)
            if state.loaded_type:
                entry["result"] = state.loaded_type
            if state.error:
                entry["error"] = state.error
            if state.errors:
                entry["errors"] = state.errors
            if state.reason:
                entry["reason"] = state.reason
            if state.limit:
                entry["limit"] = state.limit
            if state.exit:
                entry["exit"] = state.exit
            if self.note:
                entry["note"] = self.note
            self.outcome.runs.append(entry)
            finding = run_finding(self.plan, state, run_seconds)
            if finding is not None:
                self.outcome.findings.append(finding)

    def _compare_digests(self) -> None:
        if not self.static_digests:
            return
        for state in self.states:
            if not state.digests_done or not state.digests:
                continue
            mismatched = [d for d in state.digests if d not in self.static_digests]
            if mismatched:
                details = {
                    "loader": LOADER_LABELS[state.loader],
                    "storages": len(state.digests),
                    "mismatched": len(mismatched),
                    "example": mismatched[0],
                }
                self.outcome.signals.append(self._signal(TENSOR_MISMATCH, details))

    def _signal(self, kind: str, details: dict[str, Any]) -> Signal:
        return Signal(kind, details, _iso(time.time()), NAME, VERSION, file=self.plan.file)


def _open_target(plan: SessionPlan) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC
    if plan.is_dir:
        flags |= os.O_DIRECTORY
    return os.open(plan.target, flags)


def _site_directories() -> list[str]:
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    return paths


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _iso(at: float) -> str:
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _hex(value: Any) -> int | None:
    try:
        return int(str(value), 16)
    except ValueError:
        return None
