"""Run other model scanners on evaluation cases, so that the report can compare them with the gate.

The peers are ModelScan, picklescan, fickling and ModelAudit. Each runs as a
subprocess with a timeout, and none is ever imported into this process. A
tool's executable is taken from the folder named by ``ATTESTGATE_PEERS_BIN``
when that variable is set, and from ``PATH`` otherwise. The tools need
versions of rich and python-dateutil older than the gate's, so they usually
live in a virtual environment of their own.

Every run gets an empty working folder and home folder, proxy variables that
point at an unroutable local address (``http://127.0.0.1:9``), ModelAudit's
telemetry switches turned off and, where ``unshare --net`` works, a network
namespace without any interface. No tool is given a URL or a Hub name.

How each tool's output becomes ``detected`` (versions as tested):

- **ModelScan** 0.8.8, ``modelscan scan -p PATH -r json -o REPORT``:
  detected when the report lists at least one issue. Every ModelScan issue is
  an import of a global on its unsafe-globals list (severity CRITICAL to
  LOW), and any issue sets exit status 1. Entries under ``errors`` with no
  issue make the run a failure. Exit status 3 without errors means that no
  file was in a format ModelScan reads, which counts as not detected.
- **picklescan** 1.0.5, ``picklescan -p PATH``, which has no JSON output:
  detected when the summary counts at least one dangerous global, the count
  behind its exit status 1. Suspicious globals (on neither its safe nor its
  unsafe list) do not count, as in picklescan's own exit status. Exit status
  2 with no dangerous global is a failure.
- **fickling** 0.1.12, ``fickling --check-safety --json-output REPORT FILE``:
  detected when any pickle in the file gets a severity above
  ``LIKELY_SAFE``, the threshold behind its exit status 1 and the default of
  ``fickling.load``. Its command line reads one stream of stacked pickles
  and neither ZIP archives nor folders. So a ZIP archive (a PyTorch
  checkpoint) is scanned member by member, taking the members named
  ``*.pkl``, ``*.pickle`` or ``*.bin`` as fickling's own Hub scan does, and
  a folder file by file. Files that are neither ZIP archives nor pickles are
  skipped. Exit status 2 (the pickle could not be parsed) is a failure.
- **ModelAudit** 0.2.54, ``modelaudit scan --format json --no-cache -o REPORT
  PATH``: detected when at least one issue has severity ``critical``, which
  ModelAudit defines as a definite security concern. Its exit status 1 also
  counts ``warning`` issues ("potential issue, needs review"), which it
  raises on ordinary PyTorch checkpoints, so warnings are listed in the
  detail but not counted. Exit status 2 with no critical issue is a failure.

Tools that scan folders (ModelScan, picklescan, ModelAudit) get a folder
artifact as a whole. For fickling, a folder is detected when any file in it
is. A failure or timeout gives ``detected: None`` with the error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from attestgate.errors import UsageError
from attestgate.evaluation.scenario import Case

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

TOOLS = ("modelscan", "picklescan", "fickling", "modelaudit")
PEERS_BIN_ENV = "ATTESTGATE_PEERS_BIN"

# Nothing listens on port 9 (discard) of the loopback address, so a tool that
# ignores every other switch still cannot reach a host through this proxy.
UNROUTABLE_PROXY = "http://127.0.0.1:9"
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
# Variables removed from a tool's environment: proxy exceptions would let a
# host through, and Python path settings of the gate's process would leak
# the gate's packages into the tool's interpreter.
DROPPED_VARIABLES = ("NO_PROXY", "no_proxy", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")

PROBE_TIMEOUT = 60.0
# Output kept from a tool's stdout and stderr, from the end of each stream.
OUTPUT_TAIL_BYTES = 1024 * 1024
# Bounds for fickling's per-file scans of ZIP members and folders.
MAX_MEMBER_BYTES = 1024 * 1024 * 1024
MAX_FOLDER_FILES = 10_000

FICKLING_MEMBER_SUFFIXES = frozenset({".pkl", ".pickle", ".bin"})
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib"})
PICKLE_PROTO = 0x80


class ToolFailure(Exception):
    """A peer tool could not scan a case: it crashed, timed out or wrote no usable report."""


@dataclass(frozen=True)
class Outcome:
    """The result of one tool on one case."""

    detected: bool | None
    detail: str
    error: str | None = None


@dataclass(frozen=True)
class Completed:
    """Exit status and the tail of the output of one tool process."""

    returncode: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 5) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-lines:]) if text else "no output"


class Runner:
    """Start tool processes in a scratch folder, with network isolation and a deadline."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.home = workspace / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.environment = tool_environment(self.home)
        self.prefix = network_isolation_prefix()
        self._count = 0

    def scratch(self) -> Path:
        """Create a new, empty folder for one process's working directory and reports."""
        self._count += 1
        folder = self.workspace / f"run-{self._count:05d}"
        folder.mkdir()
        return folder

    def run(self, argv: Sequence[str], *, cwd: Path, timeout: float) -> Completed:
        """Run ``argv`` and return its status; raise :class:`ToolFailure` on a timeout."""
        if timeout <= 0:
            raise ToolFailure("timed out before the tool could start")
        stdout_path = cwd / ".stdout"
        stderr_path = cwd / ".stderr"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            try:
                process = subprocess.Popen(
                    [*self.prefix, *argv],
                    cwd=cwd,
                    env=self.environment,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ToolFailure(f"failed to start {argv[0]}: {exc}") from exc
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # The tool may have started children of its own. They share
                # its new session's process group, so one signal ends them all.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise ToolFailure(f"timed out after {timeout:.0f} s") from None
        return Completed(returncode, read_tail(stdout_path), read_tail(stderr_path))


def read_tail(path: Path) -> str:
    with path.open("rb") as stream:
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(max(0, size - OUTPUT_TAIL_BYTES))
        return stream.read().decode("utf-8", errors="replace")


def tool_environment(home: Path) -> dict[str, str]:
    """Return the environment for tool processes: no proxy exceptions, no telemetry, own home."""
    environment = {k: v for k, v in os.environ.items() if k not in DROPPED_VARIABLES}
    environment.update(dict.fromkeys(PROXY_VARIABLES, UNROUTABLE_PROXY))
    environment.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            # ModelAudit's telemetry switches; it checks each of them.
            "PROMPTFOO_DISABLE_TELEMETRY": "1",
            "NO_ANALYTICS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_COLOR": "1",
        }
    )
    return environment


@functools.cache
def network_isolation_prefix() -> tuple[str, ...]:
    """Return the ``unshare`` arguments that start a process without network, or ``()``.

    ``unshare --net`` creates a network namespace with only a loopback
    interface that is down. Without root it needs ``--map-root-user`` and
    unprivileged user namespaces, which some systems forbid; the proxy
    variables are then the only guard.
    """
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        logger.warning("unshare not found, so peer tools run with proxy variables as the guard")
        return ()
    prefix = [unshare, "--net"]
    if os.geteuid() != 0:
        prefix.append("--map-root-user")
    try:
        completed = subprocess.run(
            [*prefix, "true"], capture_output=True, check=False, timeout=PROBE_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("unshare --net failed (%s), so proxy variables are the only guard", exc)
        return ()
    if completed.returncode != 0:
        logger.warning(
            "unshare --net failed with status %d, so proxy variables are the only guard",
            completed.returncode,
        )
        return ()
    return tuple(prefix)


# --- Finding the tools ---------------------------------------------------------


def find_executable(name: str) -> Path | None:
    """Return the path of tool ``name`` in ``ATTESTGATE_PEERS_BIN`` or on ``PATH``."""
    folder = os.environ.get(PEERS_BIN_ENV)
    if folder:
        # The tools run in a scratch working folder, so a relative folder is
        # resolved here, against the caller's.
        candidate = Path(folder).absolute() / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        return None
    found = shutil.which(name)
    return Path(found) if found else None


VERSION_PATTERN = re.compile(r"(\d+\.\d+(?:\.\d+)?(?:[.\-+]?\w+)*)")


def probe(name: str, executable: Path, runner: Runner) -> dict[str, Any]:
    """Run the tool's version (or help) command and return its ``tools`` entry."""
    argv = {
        "modelscan": [str(executable), "scan", "--version"],
        "picklescan": [str(executable), "--help"],
        "fickling": [str(executable), "--version"],
        "modelaudit": [str(executable), "--version"],
    }[name]
    try:
        completed = runner.run(argv, cwd=runner.scratch(), timeout=PROBE_TIMEOUT)
    except ToolFailure as exc:
        return {"available": False, "version": None, "error": f"{name} {argv[1]}: {exc}"}
    if completed.returncode != 0:
        return {
            "available": False,
            "version": None,
            "error": f"{name} {' '.join(argv[1:])} exited with status "
            f"{completed.returncode}: {completed.tail()}",
        }
    if name == "picklescan":
        version = distribution_version(executable, name, runner)
    else:
        match = VERSION_PATTERN.search(completed.stdout)
        version = match.group(1) if match else None
    return {"available": True, "version": version, "error": None, "path": str(executable)}


def distribution_version(executable: Path, name: str, runner: Runner) -> str | None:
    """Ask the Python interpreter named in the tool's ``#!`` line for the package version."""
    try:
        with executable.open("rb") as stream:
            first = stream.readline(4096).decode("utf-8", errors="replace")
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    interpreter = first[2:].split()
    script = f"import importlib.metadata as m; print(m.version({name!r}))"
    try:
        completed = runner.run(
            [*interpreter, "-c", script], cwd=runner.scratch(), timeout=PROBE_TIMEOUT
        )
    except ToolFailure:
        return None
    version = completed.stdout.strip()
    return version if completed.returncode == 0 and version else None


# --- Reading each tool's output ------------------------------------------------


def load_report(path: Path, completed: Completed, tool: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolFailure(
            f"{tool} exited with status {completed.returncode} and wrote no report: "
            f"{completed.tail()}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ToolFailure(f"{tool} wrote an unreadable report: {exc}") from None


def run_modelscan(executable: Path, target: Path, runner: Runner, deadline: float) -> Outcome:
    cwd = runner.scratch()
    report_path = cwd / "report.json"
    argv = [str(executable), "scan", "-p", str(target), "-r", "json", "-o", str(report_path)]
    completed = runner.run(argv, cwd=cwd, timeout=deadline - time.monotonic())
    report = load_report(report_path, completed, "modelscan")
    issues = [i for i in report.get("issues") or [] if isinstance(i, dict)]
    errors = [e for e in report.get("errors") or [] if isinstance(e, dict)]
    if issues:
        named = sorted(
            {f"{i.get('severity')} {i.get('module')}.{i.get('operator')}" for i in issues}
        )
        return Outcome(True, f"{len(issues)} unsafe operators: {', '.join(named)}")
    if errors:
        described = "; ".join(str(e.get("description")) for e in errors[:3])
        raise ToolFailure(f"modelscan reported {len(errors)} errors: {described}")
    if completed.returncode == 3:
        return Outcome(False, "no file in a format that modelscan scans")
    if completed.returncode != 0:
        raise ToolFailure(f"modelscan exited with status {completed.returncode}")
    scanned = (report.get("summary") or {}).get("scanned") or {}
    return Outcome(False, f"no unsafe operator in {scanned.get('total_scanned', 0)} files")


PICKLESCAN_COUNT = re.compile(
    r"^(Scanned files|Dangerous globals|Suspicious globals): (\d+)$", re.M
)
PICKLESCAN_FOUND = re.compile(r"dangerous import '([^']*)' FOUND")


def run_picklescan(executable: Path, target: Path, runner: Runner, deadline: float) -> Outcome:
    argv = [str(executable), "-p", str(target)]
    completed = runner.run(argv, cwd=runner.scratch(), timeout=deadline - time.monotonic())
    counts = {key: int(value) for key, value in PICKLESCAN_COUNT.findall(completed.stdout)}
    if "Dangerous globals" not in counts:
        raise ToolFailure(
            f"picklescan exited with status {completed.returncode} and printed no summary: "
            f"{completed.tail()}"
        )
    dangerous = counts["Dangerous globals"]
    if dangerous:
        found = sorted(set(PICKLESCAN_FOUND.findall(completed.stdout)))
        return Outcome(True, f"{dangerous} dangerous globals: {', '.join(found)}")
    if completed.returncode != 0:
        raise ToolFailure(
            f"picklescan exited with status {completed.returncode}: {completed.tail()}"
        )
    if counts.get("Scanned files", 0) == 0:
        return Outcome(False, "no file in a format that picklescan scans")
    return Outcome(
        False,
        f"no dangerous global in {counts['Scanned files']} files, "
        f"{counts.get('Suspicious globals', 0)} suspicious",
    )


def run_fickling(executable: Path, target: Path, runner: Runner, deadline: float) -> Outcome:
    outcomes: list[tuple[str, Outcome | ToolFailure]] = []
    files = sorted(folder_files(target)) if target.is_dir() else [target]
    for path in files:
        name = str(path.relative_to(target)) if target.is_dir() else path.name
        try:
            inputs = list(fickling_inputs(path, name, runner))
        except (ToolFailure, OSError, zipfile.BadZipFile) as exc:
            outcomes.append((name, ToolFailure(str(exc))))
            continue
        for label, pickle_path in inputs:
            try:
                outcome = fickling_once(executable, pickle_path, runner, deadline)
            except ToolFailure as exc:
                outcomes.append((label, exc))
            else:
                outcomes.append((label, outcome))
    return combine(outcomes, "fickling")


def folder_files(folder: Path) -> Iterator[Path]:
    """Yield the regular files under ``folder``, without following links."""
    count = 0
    for base, directories, names in os.walk(folder, followlinks=False):
        directories.sort()
        for name in sorted(names):
            path = Path(base) / name
            if path.is_symlink() or not path.is_file():
                continue
            count += 1
            if count > MAX_FOLDER_FILES:
                raise ToolFailure(f"{folder} has more than {MAX_FOLDER_FILES} files")
            yield path


def fickling_inputs(path: Path, name: str, runner: Runner) -> Iterator[tuple[str, Path]]:
    """Yield (label, file) pairs that fickling's command line can read for ``path``."""
    if zipfile.is_zipfile(path):
        folder = runner.scratch()
        with zipfile.ZipFile(path) as archive:
            for index, info in enumerate(archive.infolist()):
                member = PurePosixPath(info.filename)
                if info.is_dir() or member.suffix.lower() not in FICKLING_MEMBER_SUFFIXES:
                    continue
                extracted = folder / f"member-{index:05d}{member.suffix.lower()}"
                copy_member(archive, info, extracted)
                yield f"{name}:{info.filename}", extracted
        return
    if path.suffix.lower() in PICKLE_SUFFIXES or starts_with_pickle_proto(path):
        yield name, path


def copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Copy one ZIP member to ``target``, stopping at ``MAX_MEMBER_BYTES`` of output."""
    copied = 0
    with archive.open(info) as source, target.open("wb") as sink:
        while chunk := source.read(1024 * 1024):
            copied += len(chunk)
            if copied > MAX_MEMBER_BYTES:
                raise ToolFailure(f"member {info.filename} expands past {MAX_MEMBER_BYTES} bytes")
            sink.write(chunk)


def starts_with_pickle_proto(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            head = stream.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == PICKLE_PROTO and 2 <= head[1] <= 5


def fickling_once(executable: Path, target: Path, runner: Runner, deadline: float) -> Outcome:
    cwd = runner.scratch()
    report_path = cwd / "report.json"
    argv = [str(executable), "--check-safety", "--json-output", str(report_path), str(target)]
    completed = runner.run(argv, cwd=cwd, timeout=deadline - time.monotonic())
    if completed.returncode not in (0, 1):
        raise ToolFailure(f"fickling exited with status {completed.returncode}: {completed.tail()}")
    severities = fickling_severities(report_path)
    if not severities:
        if completed.returncode == 0:
            return Outcome(False, "LIKELY_SAFE")
        raise ToolFailure(f"fickling exited with status 1 and wrote no report: {completed.tail()}")
    unsafe = [s for s in severities if s != "LIKELY_SAFE"]
    return Outcome(bool(unsafe), ", ".join(unsafe or severities[:1]))


def fickling_severities(path: Path) -> list[str]:
    """Return the severity of each pickle from fickling's report file.

    fickling appends one JSON object per stacked pickle to the same file,
    so the file is a sequence of objects rather than one document.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    decoder = json.JSONDecoder()
    severities: list[str] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        try:
            document, position = decoder.raw_decode(text, position)
        except ValueError as exc:
            raise ToolFailure(f"fickling wrote an unreadable report: {exc}") from None
        if isinstance(document, dict):
            severities.append(str(document.get("severity")))
    return severities


def run_modelaudit(executable: Path, target: Path, runner: Runner, deadline: float) -> Outcome:
    cwd = runner.scratch()
    report_path = cwd / "report.json"
    argv = [
        str(executable),
        "scan",
        "--format",
        "json",
        "--no-cache",
        "-o",
        str(report_path),
        str(target),
    ]
    completed = runner.run(argv, cwd=cwd, timeout=deadline - time.monotonic())
    report = load_report(report_path, completed, "modelaudit")

    issues = [i for i in report.get("issues") or [] if isinstance(i, dict)]
    critical = [i for i in issues if str(i.get("severity")).lower() == "critical"]
    warnings = [i for i in issues if str(i.get("severity")).lower() == "warning"]
    if critical:
        messages = sorted({str(i.get("message")) for i in critical})
        return Outcome(True, f"{len(critical)} critical issues: {'; '.join(messages[:3])}")
    if completed.returncode not in (0, 1) or report.get("has_errors"):
        # Status 2 also covers a scan that stopped at ModelAudit's own
        # resource bounds ("coverage incomplete").
        raise ToolFailure(
            f"modelaudit exited with status {completed.returncode}, which it uses for a "
            f"failed or incomplete scan: {completed.tail()}"
        )

    codes = sorted({str(i.get("rule_code")) for i in warnings})
    note = f", {len(warnings)} warnings ({', '.join(codes)})" if warnings else ""
    return Outcome(False, f"no critical issue in {report.get('files_scanned', 0)} files{note}")


def combine(outcomes: Sequence[tuple[str, Outcome | ToolFailure]], tool: str) -> Outcome:
    """Merge per-file outcomes: detected if any file is, failed if any file failed."""
    if not outcomes:
        return Outcome(False, f"no file that {tool} reads")
    detected = [(label, o) for label, o in outcomes if isinstance(o, Outcome) and o.detected]
    if detected:
        return Outcome(True, "; ".join(f"{label}: {o.detail}" for label, o in detected[:5]))
    failed = [(label, o) for label, o in outcomes if isinstance(o, ToolFailure)]
    if failed:
        raise ToolFailure("; ".join(f"{label}: {error}" for label, error in failed[:3]))
    return Outcome(False, f"nothing unsafe in {len(outcomes)} pickles")


Scan = Callable[[Path, Path, Runner, float], Outcome]
SCANS: Mapping[str, Scan] = {
    "modelscan": run_modelscan,
    "picklescan": run_picklescan,
    "fickling": run_fickling,
    "modelaudit": run_modelaudit,
}


# --- The entry point -----------------------------------------------------------


def run_peers(
    root: Path,
    cases: Sequence[Case],
    *,
    tools: Sequence[str] | None = None,
    timeout: float = 300.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run each available peer tool on each case and return JSON-ready results.

    ``tools`` selects peers by name (default: all of :data:`TOOLS`), and
    ``timeout`` bounds the seconds one tool may spend on one case. Tools
    that are not installed appear under ``tools`` with ``available`` false
    and get no results.
    """
    selected = list(TOOLS if tools is None else tools)
    unknown = sorted(set(selected) - set(TOOLS))
    if unknown:
        raise UsageError(
            f"unknown peer tools {', '.join(unknown)}", hint=f"choose from {', '.join(TOOLS)}"
        )
    with tempfile.TemporaryDirectory(prefix="attestgate-peers-") as scratch:
        runner = Runner(Path(scratch))
        inventory: dict[str, dict[str, Any]] = {}
        executables: dict[str, Path] = {}
        for name in selected:
            inventory[name], found = describe_tool(name, runner)
            if found is not None:
                executables[name] = found

        results: list[dict[str, Any]] = []
        total = len(cases) * len(executables)
        for case in cases:
            target = case.path(root).absolute()
            for name, executable in executables.items():
                if progress is not None:
                    progress(f"peer scan {len(results) + 1} of {total}: {name} on {case.id}")
                results.append(scan_case(name, executable, case.id, target, runner, timeout))
    return {"tools": inventory, "results": results}


def describe_tool(name: str, runner: Runner) -> tuple[dict[str, Any], Path | None]:
    executable = find_executable(name)
    if executable is None:
        where = os.environ.get(PEERS_BIN_ENV) or "PATH"
        entry = {"available": False, "version": None, "error": f"{name} not found in {where}"}
        logger.info("peer tool %s not found in %s", name, where)
        return entry, None
    entry = probe(name, executable, runner)
    entry["network"] = "namespace" if runner.prefix else "proxy variables"
    if not entry["available"]:
        logger.warning("peer tool %s is unusable: %s", name, entry["error"])
        return entry, None
    return entry, executable


def scan_case(
    name: str, executable: Path, case_id: str, target: Path, runner: Runner, timeout: float
) -> dict[str, Any]:
    start = time.monotonic()
    deadline = start + timeout
    try:
        if not target.exists():
            raise ToolFailure(f"artifact {target} does not exist")
        outcome = SCANS[name](executable, target, runner, deadline)
    except (ToolFailure, OSError, zipfile.BadZipFile) as exc:
        outcome = Outcome(None, "", f"{exc}")
        logger.warning("peer tool %s failed on case %s: %s", name, case_id, exc)
    return {
        "case": case_id,
        "tool": name,
        "detected": outcome.detected,
        "seconds": round(time.monotonic() - start, 4),
        "error": outcome.error,
        "detail": outcome.detail,
    }
