"""The inside of the sandbox: loads an artifact in a disposable child process.

This is the only code in attestgate that lets artifact content run, and it
never runs in the gate's process. The gate starts this file as a script
(``python -I -S -B sandbox_child.py CONFIG``) inside new network and PID
namespaces, as an unprivileged user, under resource limits. It imports
nothing from attestgate and only the standard library before its audit
hook is in place.

1. The process starts as PID 1 of the new PID namespace, the supervisor. It
   installs the audit hook with recording off, reports its identity and
   isolation (``hello``), adds the interpreter's site-packages, imports the
   loader modules the runs need and reports ``ready``. It never reads
   artifact content.
2. For each run it forks a worker. The worker turns recording on, loads the
   artifact with the run's native loader and reports ``end``. Every audit
   event that matters is written to the event pipe as it happens, so a
   payload that kills its process still leaves its signals behind.
3. The supervisor waits for the worker up to the run's timeout, kills it
   when the time is up, reports ``exit`` with the wait status, kills every
   other process left in the namespace and starts the next run.

Messages are a 4-byte big-endian length and a UTF-8 JSON object, written
with one ``os.write`` of at most PIPE_BUF (4096) bytes, so that messages from
several processes sharing the pipe never interleave. The gate trusts none of
it beyond what it can check; see ``sandbox_stream``.

An in-process audit hook is evidence, not a barrier: a payload that takes
over the interpreter can silence it. Isolation (namespaces, user, limits)
is what protects the host.
"""

from __future__ import annotations

import _thread
import contextlib
import fnmatch
import hashlib
import ipaddress
import json
import os
import resource
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

MAX_MESSAGE = 4096
MAX_STRING = 300
# Distinct events one process reports before it stops; repeats are dropped.
MAX_EVENTS_PER_PROCESS = 5000
# Writes that never leave the process's own reach.
HARMLESS_WRITE_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
OPEN_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Name of the package that staged Python sources are imported under.
STAGED_PACKAGE = "attestgate_artifact"

# Loader name -> the modules the supervisor imports before any worker runs.
LOADER_MODULES: dict[str, tuple[str, ...]] = {
    "pickle": ("pickle",),
    "joblib": ("pickle", "joblib"),
    "torch-weights-only": ("torch",),
    "torch-full": ("torch",),
    "torchscript": ("torch",),
    "numpy": ("numpy",),
    "keras": ("keras",),
    "transformers": ("transformers",),
    "package": ("importlib", "site", "zipfile"),
}
# Loaders that still run when their optional module is missing.
OPTIONAL_MODULES = frozenset({"joblib"})

# Files whose frames call the unpickler directly, so that an ``exec`` event
# raised with one of them as the innermost Python frame came from the payload.
LOADER_FILE_SUFFIXES = (
    "/pickle.py",
    "/torch/serialization.py",
    "/torch/_weights_only_unpickler.py",
    "/torch/jit/_serialization.py",
    "/numpy/lib/format.py",
    "/numpy/lib/_format_impl.py",
    "/numpy/lib/npyio.py",
    "/numpy/lib/_npyio_impl.py",
    "/joblib/numpy_pickle.py",
)


class Monitor:
    """The audit hook's state, shared by the supervisor and the workers it forks."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.fd: int = int(config["event_fd"])
        self.scratch = os.path.realpath(str(config["scratch"]))
        self.sensitive: list[str] = [str(p) for p in config.get("sensitive", [])]
        self.code_dirs: list[str] = []
        self.recording = False
        self.run = -1
        self.busy: set[int] = set()
        self.seen: set[str] = set()
        self.sent = 0
        self.loader_codes: set[object] = set()

    def send(self, message: dict[str, Any]) -> None:
        """Write one framed message; drop it if the pipe is closed or it cannot be cut to size."""
        data = json.dumps(message, separators=(",", ":"), default=repr).encode("utf-8", "replace")
        if len(data) + 4 > MAX_MESSAGE and "d" in message:
            short = {k: _short(v, 60) for k, v in message["d"].items()}
            data = json.dumps({**message, "d": short}, separators=(",", ":"), default=repr).encode()
            if len(data) + 4 > MAX_MESSAGE:
                data = json.dumps({**message, "d": {"truncated": True}}).encode()
        if len(data) + 4 > MAX_MESSAGE:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, struct.pack(">I", len(data)) + data)

    def emit(self, kind: str, details: dict[str, Any]) -> None:
        details = {k: _short(v, MAX_STRING) for k, v in details.items()}
        key = kind + json.dumps(details, sort_keys=True, default=repr)
        if key in self.seen or self.sent >= MAX_EVENTS_PER_PROCESS:
            return
        self.seen.add(key)
        self.sent += 1
        self.send({"t": "ev", "r": self.run, "k": kind, "d": details})

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording:
            return
        handler = HANDLERS.get(event)
        if handler is None:
            return
        thread = _thread.get_ident()
        if thread in self.busy:
            return
        self.busy.add(thread)
        try:
            found = handler(self, event, args)
            if found is not None:
                self.emit(*found)
        # An audit hook that raises aborts the audited call and changes what
        # the loader does, so the hook swallows its own failures.
        except Exception:  # noqa: BLE001, S110
            pass
        finally:
            self.busy.discard(thread)

    def is_inside_scratch(self, path: str) -> bool:
        return path == self.scratch or path.startswith(self.scratch + os.sep)

    def is_sensitive(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.sensitive)

    def is_loader_frame(self, frame: Any) -> bool:
        code = frame.f_code
        if code in self.loader_codes:
            return True
        filename = str(code.co_filename)
        if filename.endswith(LOADER_FILE_SUFFIXES):
            return True
        return any(filename.startswith(d + os.sep) for d in self.code_dirs)


# A handler's result: the signal kind and its details, or None for no signal.
Observation = tuple[str, dict[str, Any]] | None
Handler = Callable[[Monitor, str, tuple[Any, ...]], Observation]


def _short(value: Any, limit: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, list | tuple):
        return [_short(v, limit) for v in value[:16]]
    return repr(value)[:limit]


def _path_text(path: Any) -> str | None:
    if isinstance(path, int):
        return None
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        return None
    return os.path.realpath(os.path.join(os.getcwd(), text))


def _address(address: Any) -> dict[str, Any]:
    if isinstance(address, tuple) and len(address) >= 2:
        return {"host": _short(address[0], MAX_STRING), "port": address[1]}
    if isinstance(address, str | bytes):
        return {"path": _short(address, MAX_STRING)}
    return {"address": _short(address, MAX_STRING)}


def _is_ip_literal(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _on_socket(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("network.connect", {"call": event, **_address(args[1])})


def _on_host_port(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("network.connect", {"call": event, "host": args[1], "port": args[2]})


def _on_url(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("network.connect", {"call": event, "url": args[0]})


def _on_resolve(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    host = args[0]
    if event == "socket.getnameinfo":
        return ("dns.query", {"call": event, "address": _short(args[0], MAX_STRING)})
    if host is None or _is_ip_literal(host):
        return None
    port = args[1] if event == "socket.getaddrinfo" else None
    return ("dns.query", {"call": event, "host": host, "port": port})


def _on_popen(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    executable, argv = args[0], args[1]
    argv_list = list(argv) if isinstance(argv, list | tuple) else [argv]
    binary = executable
    if binary is None and argv_list:
        binary = argv_list[0]
    return ("process.exec", {"call": event, "binary": binary, "argv": argv_list})


def _on_system(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("process.exec", {"call": event, "command": args[0]})


def _on_exec(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    # os.exec: (path, args, env); os.posix_spawn: (path, argv, env);
    # os.spawn: (mode, path, args, env); pty.spawn: (argv,).
    if event == "os.spawn":
        path, argv = args[1], args[2]
    elif event == "pty.spawn":
        argv = args[0]
        path = argv[0] if isinstance(argv, list | tuple) and argv else argv
    else:
        path, argv = args[0], args[1]
    argv_list = list(argv) if isinstance(argv, list | tuple) else [argv]
    return ("process.exec", {"call": event, "binary": path, "argv": argv_list})


def _on_fork(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("process.exec", {"call": event})


def _on_open(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    path, mode, flags = args[0], args[1], args[2]
    full = _path_text(path)
    if full is None:
        return None
    writing = isinstance(mode, str) and any(c in mode for c in "wax+")
    if isinstance(flags, int) and flags & OPEN_WRITE_FLAGS:
        writing = True
    if writing and not monitor.is_inside_scratch(full) and full not in HARMLESS_WRITE_TARGETS:
        return ("file.write", {"call": "open", "path": full, "mode": mode})
    if monitor.is_sensitive(full):
        return ("file.read.sensitive", {"call": "open", "path": full})
    return None


# Audit event -> index of the argument that names the path it changes.
_PATH_EVENTS = {
    "os.chmod": 0,
    "os.chown": 0,
    "os.link": 1,
    "os.mkdir": 0,
    "os.remove": 0,
    "os.removexattr": 0,
    "os.rename": 1,
    "os.rmdir": 0,
    "os.setxattr": 0,
    "os.symlink": 1,
    "os.truncate": 0,
    "os.utime": 0,
    "shutil.chown": 0,
    "shutil.copyfile": 1,
    "shutil.copytree": 1,
    "shutil.move": 1,
    "shutil.rmtree": 0,
    "shutil.unpack_archive": 1,
    "tempfile.mkdtemp": 0,
    "tempfile.mkstemp": 0,
}


def _on_path_change(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    # NOTE: a path relative to a dir_fd argument is resolved against the
    # working directory instead, which can misplace it.
    full = _path_text(args[_PATH_EVENTS[event]])
    if full is None or monitor.is_inside_scratch(full) or full in HARMLESS_WRITE_TARGETS:
        return None
    return ("file.write", {"call": event, "path": full})


def _on_import(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("module.import", {"module": args[0]})


def _on_code_exec(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    caller = sys._getframe(2)
    code = args[0]
    target = f"{getattr(code, 'co_filename', '?')}:{getattr(code, 'co_name', '?')}"
    if event == "exec" and not monitor.is_loader_frame(caller):
        # Imports and the standard library (dataclasses, namedtuple) exec
        # code of their own. Only an exec called straight from a loader frame
        # or from staged artifact code comes from the payload.
        return None
    where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
    return ("x-attestgate.code-exec", {"call": event, "code": target, "caller": where})


def _on_native(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    target = args[1] if event in ("ctypes.dlsym", "sqlite3.load_extension") else args[0]
    return ("x-attestgate.native-code", {"call": event, "target": _short(target, MAX_STRING)})


def _on_tamper(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("x-attestgate.monitor-tamper", {"call": event})


def _on_find_class(monitor: Monitor, event: str, args: tuple[Any, ...]) -> Observation:
    return ("x-attestgate.pickle-global", {"module": args[0], "name": args[1]})


HANDLERS: dict[str, Handler] = {
    "socket.connect": _on_socket,
    "socket.sendto": _on_socket,
    "socket.sendmsg": _on_socket,
    "socket.bind": _on_socket,
    "http.client.connect": _on_host_port,
    "ftplib.connect": _on_host_port,
    "smtplib.connect": _on_host_port,
    "poplib.connect": _on_host_port,
    "imaplib.open": _on_host_port,
    "nntplib.connect": _on_host_port,
    "telnetlib.Telnet.open": _on_host_port,
    "urllib.Request": _on_url,
    "webbrowser.open": _on_url,
    "socket.getaddrinfo": _on_resolve,
    "socket.gethostbyname": _on_resolve,
    "socket.gethostbyname_ex": _on_resolve,
    "socket.gethostbyaddr": _on_resolve,
    "socket.getnameinfo": _on_resolve,
    "subprocess.Popen": _on_popen,
    "os.system": _on_system,
    "os.exec": _on_exec,
    "os.posix_spawn": _on_exec,
    "os.spawn": _on_exec,
    "pty.spawn": _on_exec,
    "os.fork": _on_fork,
    "os.forkpty": _on_fork,
    "open": _on_open,
    **dict.fromkeys(_PATH_EVENTS, _on_path_change),
    "import": _on_import,
    "exec": _on_code_exec,
    "code.__new__": _on_code_exec,
    "function.__new__": _on_code_exec,
    "ctypes.dlopen": _on_native,
    "ctypes.dlsym": _on_native,
    "ctypes.call_function": _on_native,
    "ctypes.cdata": _on_native,
    "ctypes.string_at": _on_native,
    "sqlite3.enable_load_extension": _on_native,
    "sqlite3.load_extension": _on_native,
    "sys.addaudithook": _on_tamper,
    "sys.settrace": _on_tamper,
    "sys.setprofile": _on_tamper,
    "sys._current_frames": _on_tamper,
    "gc.get_objects": _on_tamper,
    "gc.get_referrers": _on_tamper,
    "gc.get_referents": _on_tamper,
    "pickle.find_class": _on_find_class,
}

MONITOR: Monitor
MODULES: dict[str, Any] = {}


def _describe_error(exc: BaseException) -> dict[str, Any]:
    try:
        text = str(exc)[:MAX_STRING]
    except Exception:  # noqa: BLE001 - a payload's exception may fail to render
        text = "(message could not be rendered)"
    return {"type": type(exc).__name__, "message": text, "errno": getattr(exc, "errno", None)}


# Loaders. Each receives the run's configuration and returns the loaded
# object; the worker reports only the object's type to the gate.


def _artifact_file(run: dict[str, Any]) -> BinaryIO:
    fd = os.dup(int(run["fd"]))
    os.lseek(fd, 0, os.SEEK_SET)
    return os.fdopen(fd, "rb")


def load_pickle(run: dict[str, Any]) -> Any:
    with _artifact_file(run) as fh:
        return MODULES["pickle"].load(fh)


def load_joblib(run: dict[str, Any]) -> Any:
    with _artifact_file(run) as fh:
        if "joblib" in MODULES:
            return MODULES["joblib"].load(fh)
        return MODULES["pickle"].load(fh)


def load_torch_weights_only(run: dict[str, Any]) -> Any:
    with _artifact_file(run) as fh:
        return MODULES["torch"].load(fh, map_location="cpu", weights_only=True)


def load_torch_full(run: dict[str, Any]) -> Any:
    with _artifact_file(run) as fh:
        return MODULES["torch"].load(fh, map_location="cpu", weights_only=False)


def load_torchscript(run: dict[str, Any]) -> Any:
    with _artifact_file(run) as fh:
        return MODULES["torch"].jit.load(fh, map_location="cpu")


def load_numpy(run: dict[str, Any]) -> Any:
    with _artifact_file(run) as fh:
        loaded = MODULES["numpy"].load(fh, allow_pickle=True)
        # An .npz archive loads its members lazily, on first access.
        for name in getattr(loaded, "files", []):
            loaded[name]
        return loaded


def _copy_to_scratch(run: dict[str, Any], suffix: str) -> str:
    target = os.path.join(MONITOR.scratch, "work", "artifact" + suffix)
    with _artifact_file(run) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    return target


def load_keras(run: dict[str, Any]) -> Any:
    suffix = ".h5" if run.get("format") == "hdf5" else ".keras"
    return MODULES["keras"].models.load_model(_copy_to_scratch(run, suffix))


def load_transformers(run: dict[str, Any]) -> Any:
    # NOTE: written against the transformers 4.x API and not yet run in a
    # test, because transformers is not a test dependency.
    return MODULES["transformers"].AutoModel.from_pretrained(
        str(run["path"]), local_files_only=True, trust_remote_code=False
    )


def _extract_wheel(run: dict[str, Any], dest: str) -> list[str]:
    zipfile = MODULES["zipfile"]
    limit = int(run.get("max_extract_bytes", 1 << 30))
    total = 0
    names: set[str] = set()
    top_level: list[str] = []
    with _artifact_file(run) as fh, zipfile.ZipFile(fh) as archive:
        for info in archive.infolist()[:50_000]:
            parts = info.filename.replace("\\", "/").split("/")
            if info.filename.startswith("/") or ".." in parts or info.is_dir():
                continue
            total += info.file_size
            if total > limit:
                break
            target = os.path.join(dest, *parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            first = parts[0]
            if first.endswith(".dist-info") and parts[-1] == "top_level.txt":
                with open(target, encoding="utf-8", errors="replace") as listing:
                    top_level = [line.strip() for line in listing if line.strip()]
            elif len(parts) == 1 and first.endswith(".py"):
                names.add(first[:-3])
            elif len(parts) > 1 and parts[1] == "__init__.py":
                names.add(first)
            elif len(parts) == 1 and ".so" in first:
                names.add(first.split(".", 1)[0])
    return top_level or sorted(n for n in names if n.isidentifier())


def _staged_modules(stage: str) -> list[str]:
    names = [STAGED_PACKAGE]
    for entry in sorted(os.listdir(stage)):
        full = os.path.join(stage, entry)
        if entry.endswith(".py") and entry != "__init__.py" and entry[:-3].isidentifier():
            names.append(f"{STAGED_PACKAGE}.{entry[:-3]}")
        elif os.path.isfile(os.path.join(full, "__init__.py")) and entry.isidentifier():
            names.append(f"{STAGED_PACKAGE}.{entry}")
    return names


def import_package(run: dict[str, Any]) -> Any:
    importlib = MODULES["importlib"]
    if run.get("package") == "wheel":
        dest = os.path.join(MONITOR.scratch, "work", "site")
        os.makedirs(dest, exist_ok=True)
        MONITOR.code_dirs.append(os.path.realpath(dest))
        names = _extract_wheel(run, dest)
        # addsitedir runs the wheel's .pth files, as installing it would.
        MODULES["site"].addsitedir(dest)
    else:
        stage = os.path.realpath(str(run["path"]))
        MONITOR.code_dirs.append(stage)
        sys.path[:0] = [stage, os.path.dirname(stage)]
        names = _staged_modules(stage)
    errors = []
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - every import failure is reported
            errors.append({"module": name, **_describe_error(exc)})
    if errors:
        raise PackageImportError(names, errors)
    return names


class PackageImportError(Exception):
    """Some of the package's modules failed to import."""

    def __init__(self, names: list[str], errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} of {len(names)} modules failed to import")
        self.errors = errors


LOADERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "pickle": load_pickle,
    "joblib": load_joblib,
    "torch-weights-only": load_torch_weights_only,
    "torch-full": load_torch_full,
    "torchscript": load_torchscript,
    "numpy": load_numpy,
    "keras": load_keras,
    "transformers": load_transformers,
    "package": import_package,
}


def _storage_digests(loaded: Any, limit: int) -> list[str]:
    """Return the SHA-256 of every distinct CPU tensor storage reachable from ``loaded``."""
    torch = MODULES["torch"]
    digests: list[str] = []
    storages: set[int] = set()
    visited: set[int] = set()
    stack = [loaded]
    steps = 0
    while stack and steps < 1_000_000 and len(digests) < limit:
        steps += 1
        item = stack.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, torch.Tensor):
            if item.device.type != "cpu" or item.layout != torch.strided or item.is_quantized:
                continue
            storage = item.untyped_storage()
            if storage.nbytes() == 0 or storage.data_ptr() in storages:
                continue
            storages.add(storage.data_ptr())
            flat = torch.empty(0, dtype=torch.uint8).set_(storage)
            digests.append(hashlib.sha256(memoryview(flat.numpy())).hexdigest())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend(vars(item).values())
    return digests


def worker(index: int, run: dict[str, Any]) -> None:
    """Load the artifact for one run and report how it went; never returns."""
    MONITOR.run = index
    MONITOR.seen = set()
    MONITOR.sent = 0
    own_pid = os.getpid()
    MONITOR.recording = True
    try:
        loaded = LOADERS[str(run["loader"])](run)
    except BaseException as exc:  # noqa: BLE001 - the load's failure is the result
        if os.getpid() != own_pid:
            os._exit(0)
        end: dict[str, Any] = {"t": "end", "r": index, "ok": False, "error": _describe_error(exc)}
        if isinstance(exc, PackageImportError):
            end["errors"] = exc.errors[:10]
        MONITOR.send(end)
        os._exit(0)
    if os.getpid() != own_pid:
        os._exit(0)
    MONITOR.send({"t": "end", "r": index, "ok": True, "type": type(loaded).__name__})
    if run.get("digests") and "torch" in MODULES:
        try:
            digests = _storage_digests(loaded, int(run.get("max_storages", 100_000)))
        except Exception as exc:  # noqa: BLE001 - a failed comparison is reported, not fatal
            MONITOR.send({"t": "digests", "r": index, "error": _describe_error(exc)})
            os._exit(0)
        for start in range(0, len(digests), 40):
            MONITOR.send({"t": "digests", "r": index, "d": digests[start : start + 40]})
        MONITOR.send({"t": "digests", "r": index, "done": len(digests)})
    os._exit(0)


def _wait_status(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"code": os.waitstatus_to_exitcode(status)}


def _reap(pid: int, timeout: float) -> tuple[int | None, bool]:
    """Wait for ``pid`` while reaping orphans; kill it when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    timed_out = False
    pause = 0.005
    while True:
        try:
            done, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None, timed_out
        if done == pid:
            return status, timed_out
        if not timed_out and time.monotonic() > deadline:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        if done == 0:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _kill_namespace() -> None:
    # As PID 1 of the namespace, kill(-1) reaches every other process in it.
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if done == 0:
            time.sleep(0.01)


def _status_field(name: str) -> str:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _limit_processes(count: int) -> None:
    # In a user namespace the gate cannot set this limit before the namespace
    # exists without counting all of its user's processes against it, so the
    # supervisor lowers it on itself and every worker inherits it.
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard == resource.RLIM_INFINITY or hard > count:
        resource.setrlimit(resource.RLIMIT_NPROC, (count, count))


def _hello() -> dict[str, Any]:
    limits = {
        name: resource.getrlimit(getattr(resource, name))
        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_NOFILE")
    }
    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = ""
    return {
        "t": "hello",
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "netns": netns,
        "nnp": _status_field("NoNewPrivs"),
        "cap_eff": _status_field("CapEff"),
        "limits": limits,
        "version": sys.version,
        "version_info": list(sys.version_info[:3]),
        "stdlib": os.path.dirname(os.path.dirname(json.__file__ or "")),
    }


def _setup(config: dict[str, Any]) -> dict[str, str]:
    """Import what the runs need and return the loaders that cannot run, with the reason."""
    import importlib
    import site

    for path in config.get("site", []):
        site.addsitedir(str(path))
    missing: dict[str, str] = {}
    wanted = {str(run["loader"]) for run in config["runs"]}
    for loader in sorted(wanted):
        for module in LOADER_MODULES[loader]:
            if module in MODULES:
                continue
            try:
                MODULES[module] = importlib.import_module(module)
            except ImportError as exc:
                if module not in OPTIONAL_MODULES:
                    missing[loader] = f"{module} is not installed ({exc})"
    for name in ("load_pickle", "load_joblib", "load_torch_weights_only", "load_torch_full"):
        MONITOR.loader_codes.add(globals()[name].__code__)
    MONITOR.loader_codes.update(f.__code__ for f in (load_torchscript, load_numpy))
    return missing


def main() -> None:
    global MONITOR  # noqa: PLW0603 - the audit hook reads the one monitor of this process
    config = json.loads(sys.argv[1])
    MONITOR = Monitor(config)
    sys.addaudithook(MONITOR.hook)
    _limit_processes(int(config["nproc"]))
    MONITOR.send(_hello())

    missing = _setup(config)
    MONITOR.send({"t": "ready", "missing": missing})

    for index, run in enumerate(config["runs"]):
        loader = str(run["loader"])
        if loader in missing:
            MONITOR.send({"t": "skip", "r": index, "reason": missing[loader]})
            continue
        MONITOR.send({"t": "start", "r": index})
        pid = os.fork()
        if pid == 0:
            try:
                worker(index, run)
            finally:
                os._exit(70)
        status, timed_out = _reap(pid, float(run["timeout"]))
        exit_info = _wait_status(status) if status is not None else {}
        MONITOR.send({"t": "exit", "r": index, "timeout": timed_out, **exit_info})
        _kill_namespace()
    MONITOR.send({"t": "bye"})
    os._exit(0)


if __name__ == "__main__":
    main()
