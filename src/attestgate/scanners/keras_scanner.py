"""Check Keras model configurations and legacy HDF5 model files.

Keras rebuilds a model from a JSON configuration: ``config.json`` inside a
``.keras`` archive (Keras 3), the ``model_config`` attribute of a legacy
``.h5`` file, or the metadata strings of a SavedModel written by Keras. The
configuration can make Keras run code at load time. A ``Lambda`` layer
carries marshalled Python bytecode or names a Python function. Any object can
name a Python module that Keras imports. A ``TFSMLayer`` loads a SavedModel
from a path outside the artifact. This module reads the JSON only;
it never imports Keras or TensorFlow.

An HDF5 file is opened with h5py in a child process (see
:mod:`attestgate.scanners.hdf5_probe`) that reads the file's bytes on request,
so a crafted file cannot hang or crash the gate and large weight files are
never buffered in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners.hdf5_probe import (
    CONFIG_ATTRIBUTES,
    INFO_ATTRIBUTES,
    MAX_H5_LINKS,
    probe_hdf5,
)
from attestgate.scanners.interface import MiB, ReadAt, ScanContext, Scanner, ScanResult

logger = logging.getLogger(__name__)

CHECK = "keras"

# Top-level packages whose objects ship with Keras itself. keras_hub,
# keras_nlp and keras_cv are Keras's own model libraries, and tf_keras is the
# Keras 2 package that TensorFlow 2.16 and later install under that name.
# Keras imports the module an object names when it loads the model, so any
# other package is code that the loading process must trust.
KERAS_PACKAGES = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras"})

# Modules whose import or whose functions give a configuration direct access
# to processes, files, the network or code loading. No Keras model needs them.
DANGEROUS_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "importlib",
        "runpy",
        "shutil",
        "socket",
        "pickle",
        "_pickle",
        "marshal",
        "code",
        "codeop",
        "pty",
        "ctypes",
        "multiprocessing",
        "webbrowser",
        "urllib",
        "http",
        "requests",
        "io",
        "_io",
        "pathlib",
        "tempfile",
        "signal",
        "operator",
        "functools",
        "types",
    }
)
# Functions of the builtins module that evaluate code or reach objects by name.
DANGEROUS_BUILTINS = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "__import__",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
    }
)

# Preprocessing layers whose ``vocabulary`` may be a path that Keras reads
# when it builds the layer.
_VOCABULARY_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})
# Config keys that name a file or a model location outside the artifact:
# TFSMLayer's ``filepath`` and tensorflow_hub.KerasLayer's ``handle``.
_PATH_KEYS = ("filepath", "handle")

# Nesting of JSON containers that the walk follows. A Functional model nests
# about six levels per sub-model, so this allows dozens of nested models.
MAX_CONFIG_DEPTH = 256
# Findings per rule before the rest are summed up in one finding.
_MAX_FINDINGS_PER_RULE = 20
_MAX_FACT_CLASSES = 200
_MAX_TEXT = 120
_MAX_PATH = 400
# JSON values visited between two looks at the clock.
_CLOCK_INTERVAL = 10_000

_NO_LAMBDA = (
    "Do not load this model with safe_mode=False. Ask the producer to replace the "
    "Lambda layer or lambda function with a registered custom layer whose source "
    "code is reviewed and shipped separately, then admit the re-saved model."
)
_CUSTOM_CODE = (
    "Keras imports this module when it loads the model, so its code runs in the "
    "loading process. Confirm that the package is a reviewed, pinned dependency of "
    "the deployment, or re-save the model with built-in Keras objects only."
)
_DANGEROUS = (
    "Do not load this model. No Keras model needs this module; the configuration "
    "uses it to run commands, touch files or load code when the model is loaded."
)
_EXTERNAL = (
    "The model loads content from outside the artifact, which the gate has not "
    "inspected. Ship the referenced model or file inside the artifact (for a "
    "TFSMLayer, admit the SavedModel itself) or re-save the model without it."
)
_REEXPORT_CONFIG = (
    "The configuration cannot be checked. Re-save the model with a released Keras "
    "version and admit the new file, or have a reviewer inspect the configuration."
)


@dataclass
class FindingCollector:
    """Findings for one file, capped per rule so that a hostile file stays readable."""

    file: str
    check: str = CHECK
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        rule: str,
        severity: Severity,
        message: str,
        remediation: str,
        *,
        offset: int | None = None,
        **details: Any,
    ) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + 1
        if self.counts[rule] <= _MAX_FINDINGS_PER_RULE:
            self.findings.append(
                Finding(
                    rule, severity, self.file, message, remediation, self.check, offset, details
                )
            )

    def result(self) -> list[Finding]:
        """Return the findings plus one summary per rule that hit the cap."""
        out = list(self.findings)
        first = {finding.rule: finding for finding in reversed(self.findings)}
        for rule, count in self.counts.items():
            hidden = count - _MAX_FINDINGS_PER_RULE
            if hidden > 0:
                out.append(
                    Finding(
                        rule,
                        first[rule].severity,
                        self.file,
                        f"{hidden} more {rule} findings were found beyond the "
                        f"{_MAX_FINDINGS_PER_RULE} listed",
                        first[rule].remediation,
                        self.check,
                        None,
                        {"hidden": hidden},
                    )
                )
        return out


def scan_keras_config(config_json: bytes | str, ctx: ScanContext) -> list[Finding]:
    """Check a Keras model configuration and return its findings.

    ``ctx.file`` locates the findings, for example ``model.keras:config.json``.
    """
    return inspect_keras_config(config_json, ctx).findings


def inspect_keras_config(config_json: bytes | str, ctx: ScanContext) -> ScanResult:
    """Check a Keras model configuration and return findings and facts."""
    collector = FindingCollector(ctx.file)
    facts = check_keras_config(config_json, ctx, collector)
    return ScanResult(findings=collector.result(), facts=facts)


def check_keras_config(
    config_json: bytes | str, ctx: ScanContext, collector: FindingCollector
) -> dict[str, Any]:
    """Check a Keras model configuration, add findings to ``collector``, return facts.

    Callers that check many configurations in one file share one collector,
    so that the per-rule cap applies across all of them.

    1. The JSON is at most ``ctx.limits.max_json_bytes`` long and parses.
    2. Every JSON object is visited, down to ``MAX_CONFIG_DEPTH`` levels, so
       layers nested in sub-models, wrappers and ``inner_layer`` are covered.
    3. Each serialized object is checked for Lambda layers and lambda
       functions, modules and registered names outside Keras, and paths to
       content outside the artifact.
    """
    config = _parse_config(config_json, ctx, collector)
    if config is None:
        return {}
    walk = _ConfigWalk(collector, ctx)
    walk.run(config)
    return walk.facts(config)


def _parse_config(raw: bytes | str, ctx: ScanContext, collector: FindingCollector) -> Any:
    limit = ctx.limits.max_json_bytes
    if len(raw) > limit:
        collector.add(
            "keras.config-too-large",
            Severity.MEDIUM,
            f"the Keras configuration is {len(raw)} bytes, over the limit of {limit} "
            "bytes that the gate parses",
            _REEXPORT_CONFIG,
            size=len(raw),
            limit=limit,
        )
        return None
    try:
        return json.loads(raw)
    except RecursionError:
        problem = "it nests too deeply to parse"
    except (ValueError, UnicodeDecodeError) as exc:
        # json.JSONDecodeError and the int-size limit of int() are ValueErrors.
        problem = _shorten(str(exc))
    collector.add(
        "keras.invalid-config",
        Severity.MEDIUM,
        f"the Keras configuration is not valid JSON: {problem}",
        _REEXPORT_CONFIG,
    )
    return None


class _ConfigWalk:
    """Visits every JSON object of a configuration and checks the serialized ones."""

    def __init__(self, collector: FindingCollector, ctx: ScanContext) -> None:
        self.collector = collector
        self.ctx = ctx
        self.classes: dict[str, int] = {}
        # Objects already covered by a Lambda layer finding, by id(), so
        # that the layer's own function is not reported a second time.
        self.covered: set[int] = set()
        self.too_deep = False

    def run(self, root: Any) -> None:
        stack: list[tuple[Any, str, int]] = [(root, "$", 0)]
        visited = 0
        while stack:
            value, path, depth = stack.pop()
            visited += 1
            if visited % _CLOCK_INTERVAL == 0 and self.ctx.expired():
                self._report_incomplete("the time budget for this file ran out")
                return
            if depth > MAX_CONFIG_DEPTH:
                if not self.too_deep:
                    self.too_deep = True
                    self.collector.add(
                        "keras.config-too-deep",
                        Severity.MEDIUM,
                        f"the Keras configuration nests more than {MAX_CONFIG_DEPTH} "
                        f"levels at {_shorten(path)}; deeper objects were not checked",
                        _REEXPORT_CONFIG,
                        path=_shorten(path),
                    )
                continue
            # Children are pushed in reverse so that objects are checked in
            # document order. Paths are built for containers only, because a
            # serialized array can hold millions of numbers.
            if isinstance(value, dict):
                self._check_object(value, path)
                keys = [key for key, child in value.items() if isinstance(child, dict | list)]
                for key in reversed(keys):
                    stack.append((value[key], _join_path(path, f".{key}"), depth + 1))
            elif isinstance(value, list):
                for index in range(len(value) - 1, -1, -1):
                    if isinstance(value[index], dict | list):
                        stack.append((value[index], _join_path(path, f"[{index}]"), depth + 1))

    def facts(self, root: Any) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        if isinstance(root, dict):
            for key in ("class_name", "keras_version", "backend"):
                if isinstance(root.get(key), str):
                    facts[key if key != "class_name" else "model_class"] = _shorten(root[key])
        ordered = sorted(self.classes.items(), key=lambda item: (-item[1], item[0]))
        facts["classes"] = dict(ordered[:_MAX_FACT_CLASSES])
        if len(ordered) > _MAX_FACT_CLASSES:
            facts["classes_truncated"] = len(ordered) - _MAX_FACT_CLASSES
        return facts

    def _check_object(self, obj: dict[str, Any], path: str) -> None:
        class_name = obj.get("class_name")
        if isinstance(class_name, str):
            key = _shorten(class_name)
            self.classes[key] = self.classes.get(key, 0) + 1
            if class_name == "Lambda":
                self._check_lambda_layer(obj, path)
            elif class_name == "__lambda__" and id(obj) not in self.covered:
                self._report_lambda_function(obj, path, "a __lambda__ object")
            self._check_module(obj, class_name, path)
            self._check_paths(obj, class_name, path)
        if obj.get("function_type") == "lambda" and id(obj) not in self.covered:
            # Keras 2 stores a lambda as bytecode beside "function_type".
            self._report_lambda_function(obj, path, 'a "function_type": "lambda" entry')

    def _check_lambda_layer(self, layer: dict[str, Any], path: str) -> None:
        config = layer.get("config")
        config = config if isinstance(config, dict) else {}
        self.covered.add(id(config))
        function = config.get("function")
        if isinstance(function, dict):
            self.covered.add(id(function))
        name = _text(config.get("name")) or "(unnamed)"
        kind, detail = _describe_lambda(config)
        self.collector.add(
            "keras.lambda-layer",
            Severity.HIGH,
            f"Lambda layer {name!r} at {_shorten(path)} {detail}; Keras runs it when "
            "the model is loaded with safe_mode=False or by Keras 2",
            _NO_LAMBDA,
            layer=name,
            path=_shorten(path),
            function_kind=kind,
        )

    def _report_lambda_function(self, obj: dict[str, Any], path: str, description: str) -> None:
        self.collector.add(
            "keras.lambda-function",
            Severity.HIGH,
            f"the Keras configuration contains {description} at {_shorten(path)}, which is "
            "marshalled Python bytecode that Keras turns back into a function",
            _NO_LAMBDA,
            path=_shorten(path),
        )

    def _check_module(self, obj: dict[str, Any], class_name: str, path: str) -> None:
        module = obj.get("module")
        registered = obj.get("registered_name")
        inner = obj.get("config")
        function_name = inner if class_name == "function" and isinstance(inner, str) else ""
        name = function_name or class_name

        if isinstance(module, str) and module:
            top = module.split(".", 1)[0]
            if top in DANGEROUS_MODULES or (
                top == "builtins"
                and (name in DANGEROUS_BUILTINS or class_name in DANGEROUS_BUILTINS)
            ):
                self.collector.add(
                    "keras.dangerous-module",
                    Severity.CRITICAL,
                    f"the Keras configuration at {_shorten(path)} names {_shorten(name)!r} "
                    f"from module {_shorten(module)!r}, which Keras imports and calls "
                    "when it loads the model",
                    _DANGEROUS,
                    module=_shorten(module),
                    name=_shorten(name),
                    path=_shorten(path),
                )
                return
            if top not in KERAS_PACKAGES:
                self._report_custom(path, name, f"module {_shorten(module)!r}", module=module)
                return

        if isinstance(registered, str) and ">" in registered:
            package = registered.split(">", 1)[0]
            if package not in KERAS_PACKAGES:
                self._report_custom(
                    path, name, f"registered name {_shorten(registered)!r}", registered=registered
                )

    def _report_custom(self, path: str, name: str, origin: str, **details: str) -> None:
        shortened: dict[str, Any] = {key: _shorten(value) for key, value in details.items()}
        self.collector.add(
            "keras.custom-module",
            Severity.MEDIUM,
            f"the Keras configuration at {_shorten(path)} uses {_shorten(name)!r} from "
            f"{origin}, which is not part of Keras",
            _CUSTOM_CODE,
            path=_shorten(path),
            name=_shorten(name),
            **shortened,
        )

    def _check_paths(self, obj: dict[str, Any], class_name: str, path: str) -> None:
        config = obj.get("config")
        if not isinstance(config, dict):
            config = {}
        for key in _PATH_KEYS:
            target = config.get(key)
            if (isinstance(target, str) and target) or (
                key == "filepath" and class_name == "TFSMLayer"
            ):
                target = target if isinstance(target, str) else ""
                endpoint = _text(config.get("call_endpoint"))
                suffix = f" (call endpoint {endpoint!r})" if endpoint else ""
                self.collector.add(
                    "keras.external-reference",
                    Severity.HIGH,
                    f"{_shorten(class_name)} at {_shorten(path)} loads {_shorten(target)!r}"
                    f"{suffix} from outside the artifact when the model is loaded",
                    _EXTERNAL,
                    path=_shorten(path),
                    target=_shorten(target),
                    key=key,
                )
        vocabulary = config.get("vocabulary")
        if class_name in _VOCABULARY_LAYERS and isinstance(vocabulary, str) and vocabulary:
            self.collector.add(
                "keras.external-vocabulary",
                Severity.MEDIUM,
                f"{class_name} at {_shorten(path)} reads its vocabulary from the file "
                f"{_shorten(vocabulary)!r}, which is outside the artifact",
                "Save the vocabulary inside the model (Keras 3 stores it in the .keras "
                "archive's assets) and admit the re-saved model.",
                path=_shorten(path),
                target=_shorten(vocabulary),
            )

    def _report_incomplete(self, reason: str) -> None:
        self.collector.add(
            "keras.scan-incomplete",
            Severity.MEDIUM,
            f"the Keras configuration was only partly checked: {reason}",
            "Have a reviewer inspect the configuration, or raise the time budget for "
            "this artifact.",
        )


def _join_path(path: str, step: str) -> str:
    """Append one step to a JSON path, keeping only its last ``_MAX_PATH`` characters.

    Without the bound, a deep chain of long keys would make the paths on the
    walk's stack grow with the square of the nesting depth.
    """
    if len(step) > _MAX_TEXT:
        step = step[:_MAX_TEXT] + "..."
    joined = path + step
    if len(joined) > _MAX_PATH:
        joined = "..." + joined[-_MAX_PATH:]
    return joined


def _describe_lambda(config: dict[str, Any]) -> tuple[str, str]:
    """Return the kind of a Lambda layer's function and a phrase describing it."""
    function = config.get("function")
    function_type = config.get("function_type")
    if isinstance(function, dict) and function.get("class_name") == "__lambda__":
        return "bytecode", "carries marshalled Python bytecode"
    if function_type == "lambda" or isinstance(function, list):
        return "bytecode", "carries marshalled Python bytecode"
    if isinstance(function, dict) and function.get("class_name") == "__tuple__":
        return "bytecode", "carries marshalled Python bytecode"
    if isinstance(function, str):
        module = _text(config.get("module")) or _text(config.get("function_module"))
        where = f" of module {module!r}" if module else ""
        return "named", f"calls the Python function {_shorten(function)!r}{where}"
    if isinstance(function, dict):
        name = _text(function.get("config")) or _text(function.get("class_name"))
        module = _text(function.get("module"))
        where = f" of module {module!r}" if module else ""
        return "named", f"calls the Python function {name!r}{where}"
    return "unknown", "wraps a Python function"


def _text(value: object) -> str:
    return _shorten(value) if isinstance(value, str) else ""


def _shorten(text: str) -> str:
    """Return bounded text that encodes as UTF-8.

    JSON can spell lone surrogates ("\\udc80"), which no UTF-8 writer accepts,
    so they become "?".
    """
    value = text.encode("utf-8", "replace").decode("utf-8")
    if len(value) <= _MAX_TEXT:
        return value
    return value[:_MAX_TEXT] + f"... ({len(value)} characters)"


# --- .keras archives -----------------------------------------------------------

# Members that Keras 3 writes into a .keras archive (keras/src/saving/saving_lib.py),
# besides files under "assets/". Keras ignores any other member when loading.
KERAS_ARCHIVE_MEMBERS = frozenset(
    {"config.json", "metadata.json", "model.weights.h5", "model.weights.npz"}
)
_MAX_FACT_MEMBERS = 20


def scan_keras_zip_members(
    names: Sequence[str],
    read_member: Callable[[str], bytes | None],
    ctx: ScanContext,
) -> ScanResult:
    """Check the Keras configuration of a ``.keras`` archive.

    ``names`` lists the archive's members and ``read_member`` returns a
    member's bytes, or None when the caller would not read it (too large,
    say). ``ctx`` is the archive's own context. Only ``config.json`` and
    ``metadata.json`` are read here; the caller scans ``model.weights.h5``
    like any other member, with :class:`Hdf5Scanner`.
    """
    result = ScanResult(format=Format.KERAS)
    present = set(names)
    if "config.json" not in present:
        result.findings.append(
            Finding(
                "keras.missing-config",
                Severity.MEDIUM,
                ctx.file,
                "the .keras archive has no config.json, so Keras cannot load it and the "
                "gate cannot check which layers it builds",
                "Re-save the model with model.save('model.keras') and admit the new archive.",
                CHECK,
            )
        )
        return result

    data = read_member("config.json")
    member_ctx = ctx.member("config.json", None if data is None else len(data))
    if data is None:
        result.findings.append(
            Finding(
                "keras.config-too-large",
                Severity.MEDIUM,
                member_ctx.file,
                "config.json of the .keras archive was not read because the archive "
                "reader rejected its size",
                _REEXPORT_CONFIG,
                CHECK,
            )
        )
        return result
    inspected = inspect_keras_config(data, member_ctx)
    result.findings.extend(inspected.findings)
    result.facts.update(inspected.facts)

    metadata = read_member("metadata.json") if "metadata.json" in present else None
    if metadata is not None and len(metadata) <= ctx.limits.max_json_bytes:
        result.facts.update(_archive_metadata(metadata))
    extra = sorted(
        name
        for name in present
        if name not in KERAS_ARCHIVE_MEMBERS and not name.startswith("assets/")
    )
    if extra:
        result.facts["other_members"] = [_shorten(name) for name in extra[:_MAX_FACT_MEMBERS]]
    return result


def _archive_metadata(raw: bytes) -> dict[str, Any]:
    try:
        metadata = json.loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}
    if not isinstance(metadata, dict):
        return {}
    return {
        key: _shorten(metadata[key])
        for key in ("keras_version", "date_saved")
        if isinstance(metadata.get(key), str)
    }


# --- Legacy HDF5 model files ---------------------------------------------------

# Bytes buffered from a member stream that the caller cannot read twice;
# a larger member of that kind is reported instead of opened.
MAX_UNREREADABLE_BYTES = 16 * MiB
_MAX_FACT_ATTRIBUTES = 64

_H5_UNREADABLE = (
    "The gate could not read this HDF5 file, so it cannot vouch for it. Copy the "
    "file again from its source and compare its digest, or re-save the model with "
    "a released Keras version and admit the new file."
)
_TIMEOUT_FIX = (
    "Have a reviewer inspect the file: a valid HDF5 file opens in well under a "
    "second, so a file that keeps the reader busy may be crafted to hang loaders."
)


class Hdf5Scanner(Scanner):
    """Checks the Keras configuration and external references of an HDF5 file."""

    check = CHECK

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._size = 0
        # Top-level files always get read_at, so only members are buffered.
        self._buffer: bytearray | None = bytearray() if ctx.depth > 0 else None

    def feed(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        buffer = self._buffer
        if buffer is not None and len(buffer) < MAX_UNREREADABLE_BYTES:
            buffer += chunk[: MAX_UNREREADABLE_BYTES - len(buffer)]

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Open the file with h5py in a child process and check what Keras would read.

        1. The child opens the file read-only over bytes served from
           ``read_at`` (or the buffered member) and reads the root attributes.
        2. ``model_config`` and ``training_config`` are checked here, in the
           gate, with :func:`check_keras_config`.
        3. The child visits every link without following any. External
           links, external raw-data files and virtual datasets that map
           other files are reported, because Keras reads them when it loads
           weights.
        4. A child that runs out of time, crashes or returns an invalid
           report yields a MEDIUM finding.
        """
        collector = FindingCollector(self.ctx.file)
        result = ScanResult(format=Format.HDF5)
        source = read_at or self._buffered_reader()
        if source is None:
            collector.add(
                "keras.h5-unreadable",
                Severity.MEDIUM,
                f"the HDF5 member is {self._size} bytes, over the {MAX_UNREREADABLE_BYTES} "
                "bytes the gate buffers from a stream it cannot read twice, so it was "
                "not opened",
                "Extract the archive and admit the HDF5 file on its own, so that the gate "
                "can read it from disk.",
            )
            result.findings = collector.result()
            return result

        probe = probe_hdf5(
            source,
            self._size,
            max_text=self.ctx.limits.max_json_bytes,
            deadline=self.ctx.deadline,
        )
        if probe.failure:
            rule = "keras.scan-incomplete" if probe.timed_out else "keras.h5-unreadable"
            fix = _TIMEOUT_FIX if probe.timed_out else _H5_UNREADABLE
            collector.add(rule, Severity.MEDIUM, probe.failure, fix)
        if probe.report is not None:
            result.facts = self._check_report(probe.report, probe.texts, collector)
        result.findings = collector.result()
        return result

    def _buffered_reader(self) -> ReadAt | None:
        buffer = self._buffer
        if buffer is None or len(buffer) < self._size:
            return None
        data = bytes(buffer)

        def read_at(offset: int, length: int) -> bytes:
            return data[offset : offset + length]

        return read_at

    def _check_report(
        self, report: dict[str, Any], texts: dict[str, bytes], collector: FindingCollector
    ) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "root_attributes": [_shorten(name) for name in report["attribute_names"]][
                :_MAX_FACT_ATTRIBUTES
            ],
            "links": report["links"],
            "datasets": report["datasets"],
        }
        for name in INFO_ATTRIBUTES:
            if name in texts:
                facts[name] = _shorten(texts[name].decode("utf-8", "replace"))

        for name in CONFIG_ATTRIBUTES:
            if name in texts:
                config_facts = check_keras_config(texts[name], self.ctx, collector)
                if name == "model_config":
                    facts.update(config_facts)
            elif name in report["invalid"]:
                collector.add(
                    "keras.invalid-config",
                    Severity.MEDIUM,
                    f"the {name} attribute is not a single UTF-8 string of at most "
                    f"{self.ctx.limits.max_json_bytes} bytes, so Keras cannot read it as "
                    "JSON and the gate cannot check it",
                    _REEXPORT_CONFIG,
                    attribute=name,
                )

        for entry in report["external"]:
            collector.add(
                "keras.h5-external-reference",
                Severity.HIGH,
                f"{_describe_external(entry)}; libhdf5 opens that file when Keras reads "
                "the object, so the model reads content from outside the artifact",
                _EXTERNAL,
                object=_shorten(entry["object"]),
                target=_shorten(entry["target"]),
            )
        if report["error"]:
            collector.add(
                "keras.h5-unreadable",
                Severity.MEDIUM,
                f"h5py could not read the HDF5 file: {_shorten(report['error'])}",
                _H5_UNREADABLE,
            )
        if report["stopped"]:
            collector.add(
                "keras.scan-incomplete",
                Severity.MEDIUM,
                f"the HDF5 file has more than {MAX_H5_LINKS} links; links past that point "
                "were not checked for external references",
                "Have a reviewer inspect the file, or re-save the model with fewer objects.",
            )
        return facts


def _describe_external(entry: dict[str, str]) -> str:
    name, target, inner = entry["object"], entry["target"], entry["inner"]
    if entry["kind"] == "link":
        return (
            f"external link {_shorten(name)!r} points to object {_shorten(inner)!r} in file "
            f"{_shorten(target)!r}"
        )
    if entry["kind"] == "storage":
        return (
            f"dataset {_shorten(name)!r} stores its raw data in the external file "
            f"{_shorten(target)!r}"
        )
    return (
        f"virtual dataset {_shorten(name)!r} maps data from dataset {_shorten(inner)!r} in "
        f"file {_shorten(target)!r}"
    )
