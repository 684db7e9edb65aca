"""Check an ONNX model's operators and external-data references.

An ONNX file is one serialized ``ModelProto``. Two parts of it reach outside
the model when a runtime loads it:

* operators from a domain that no runtime ships need a custom-operator
  library, which is native code the loader must register first;
* tensors stored as external data name a file by a path relative to the
  model's directory, and a path that leaves that directory makes the loader
  read any file the process can open.

The model is parsed with the ``onnx`` package's protobuf classes, which never
read external data by themselves. Nodes in subgraphs (``If``, ``Loop`` and
``Scan`` bodies), in model-local functions and in training graphs count too.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners.interface import (
    BufferingScanner,
    MiB,
    ReadAt,
    ScanContext,
    ScanResult,
)

logger = logging.getLogger(__name__)

CHECK = "onnx"

# Operator domains that the ONNX specification defines ("ai.onnx" is an
# alias of the default domain "").
STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}
)
# Domains whose kernels ship inside onnxruntime itself (the domain constants
# of onnxruntime's core/graph/constants.h), so they need no extra library.
ONNXRUNTIME_DOMAINS = frozenset(
    {
        "com.microsoft",
        "com.microsoft.experimental",
        "com.microsoft.nchwc",
        "com.microsoft.dml",
        "com.ms.internal.nhwc",
    }
)

# Largest model file parsed in memory. protobuf cannot serialize a message
# over 2 GiB, and models that large keep their weights in external data, so
# a larger .onnx file is unusual enough to go to a reviewer.
MAX_MODEL_BYTES = 512 * MiB
# Nesting of subgraphs below the main graph. protobuf's own recursion limit
# (100 messages, three per subgraph level) stops deeper files first.
MAX_GRAPH_DEPTH = 64
_MAX_FACT_OPS = 200
_MAX_FACT_LOCATIONS = 64
_MAX_FINDINGS_PER_RULE = 20
_MAX_TEXT = 120
# Nodes visited between two looks at the clock.
_CLOCK_INTERVAL = 1000

_DRIVE = re.compile(r"^[A-Za-z]:")

_CUSTOM_OP_FIX = (
    "Custom operators run native code from a library that the loader must register. "
    "Ask the producer for a model that uses standard ONNX operators only, or review "
    "and pin the operator library before admitting the model."
)
_ESCAPE_FIX = (
    "Do not load this model. External-data locations must be relative paths inside "
    "the model's directory; re-export the model with onnx.save_model("
    "save_as_external_data=True) and admit the model directory."
)
_REEXPORT = (
    "Re-export the model with the onnx package (onnx.save_model) from a trusted copy "
    "and admit the new file, or have a reviewer inspect it."
)


def _text(value: str | bytes) -> str:
    """Return a protobuf string field as text that keeps invalid bytes distinct.

    ONNX's .proto files use proto2, whose Python binding returns a string
    field with invalid UTF-8 as bytes. Those bytes are decoded with
    surrogateescape, so two different byte strings never compare equal.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def location_problem(location: str) -> str | None:
    """Return why an external-data location may leave the model directory, or None.

    The check is lexical: it rejects absolute POSIX paths, Windows drive and
    UNC paths, backslashes (a separator on Windows), NUL bytes and any ``..``
    component. :func:`check_external_data_paths` resolves the remaining,
    relative locations on disk.
    """
    if "\x00" in location:
        return "it contains a NUL byte"
    if "\\" in location:
        return "it contains a backslash, which Windows reads as a directory separator"
    if _DRIVE.match(location):
        return "it starts with a Windows drive letter"
    if location.startswith("/"):
        return "it is an absolute path"
    if ".." in PurePosixPath(location).parts:
        return "it contains a '..' component"
    return None


@dataclass
class _Collector:
    """Findings for one model, capped per rule."""

    file: str
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(
        self, rule: str, severity: Severity, message: str, remediation: str, **details: Any
    ) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + 1
        if self.counts[rule] <= _MAX_FINDINGS_PER_RULE:
            self.findings.append(
                Finding(rule, severity, self.file, message, remediation, CHECK, None, details)
            )

    def result(self) -> list[Finding]:
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
                        CHECK,
                        None,
                        {"hidden": hidden},
                    )
                )
        return out


class OnnxScanner(BufferingScanner):
    """Parses an ONNX model and checks its operators and external-data paths."""

    check = CHECK
    max_model_bytes = MAX_MODEL_BYTES

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Parse the buffered model and walk every graph in it.

        1. The file is at most ``max_model_bytes`` long and parses as a
           ``ModelProto``.
        2. Every node of the main graph, its subgraphs, model-local
           functions and training graphs is counted by operator. Operators
           from non-standard domains that no local function defines are
           reported.
        3. Every tensor (initializers, sparse initializers and tensor
           attributes) that names an external-data location is checked
           lexically with :func:`location_problem`.
        """
        collector = _Collector(self.ctx.file)
        result = ScanResult(format=Format.ONNX)
        if self._size > self.max_model_bytes:
            collector.add(
                "onnx.too-large-to-parse",
                Severity.MEDIUM,
                f"the ONNX file is {self._size} bytes, over the {self.max_model_bytes} "
                "bytes that the gate parses in memory, so its operators and external-data "
                "paths were not checked",
                "Save the weights as external data (onnx.save_model(..., "
                "save_as_external_data=True)) so the model file stays small, or have a "
                "reviewer inspect the model.",
                size=self._size,
                limit=self.max_model_bytes,
            )
            result.findings = collector.result()
            return result

        model = self._parse(collector)
        self._buffer = bytearray()
        if model is not None:
            walk = _ModelWalk(model, self.ctx, collector)
            walk.run()
            result.facts = walk.facts()
        result.findings = collector.result()
        return result

    def _parse(self, collector: _Collector) -> Any:
        import onnx
        from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]

        model = onnx.ModelProto()
        try:
            model.ParseFromString(self._buffer)
        except DecodeError as exc:
            collector.add(
                "onnx.malformed",
                Severity.MEDIUM,
                f"the file is not a valid ONNX model: protobuf parsing failed ({exc})",
                _REEXPORT,
            )
            return None
        if not model.HasField("graph"):
            collector.add(
                "onnx.malformed",
                Severity.MEDIUM,
                "the ONNX model has no graph, so no runtime can load it",
                _REEXPORT,
            )
        return model


class _ModelWalk:
    """Visits every graph, node and tensor of a parsed ModelProto."""

    def __init__(self, model: Any, ctx: ScanContext, collector: _Collector) -> None:
        self.model = model
        self.ctx = ctx
        self.collector = collector
        self.ops: dict[str, int] = {}
        self.custom: dict[tuple[str, str], list[str]] = {}
        self.locations: list[str] = []
        self.nodes = 0
        self.initializers = 0
        self.subgraphs = 0
        self.local_functions = {
            (_text(function.domain), _text(function.name), _text(function.overload))
            for function in model.functions
        }

    def run(self) -> None:
        # (graph-like message, description for messages, nesting depth)
        stack: list[tuple[Any, str, int]] = []
        if self.model.HasField("graph"):
            stack.append((self.model.graph, "the main graph", 0))
        for index, info in enumerate(self.model.training_info):
            for part in ("initialization", "algorithm"):
                if info.HasField(part):
                    stack.append((getattr(info, part), f"training graph {index} {part}", 0))
        for function in self.model.functions:
            where = f"local function {_quote(function.domain)}:{_quote(function.name)}"
            for attribute in function.attribute_proto:
                self._attribute(attribute, where, 0, stack)
            stack.append((function, where, 0))

        while stack:
            graph, where, depth = stack.pop()
            if depth > MAX_GRAPH_DEPTH:
                self.collector.add(
                    "onnx.malformed",
                    Severity.MEDIUM,
                    f"subgraphs nest more than {MAX_GRAPH_DEPTH} levels in {where}; "
                    "deeper graphs were not checked",
                    _REEXPORT,
                )
                continue
            if not self._graph(graph, where, depth, stack):
                return
        self._report_custom()

    def _graph(self, graph: Any, where: str, depth: int, stack: list[tuple[Any, str, int]]) -> bool:
        """Check one graph's tensors and nodes; return False when time ran out."""
        if hasattr(graph, "initializer"):
            self.initializers += len(graph.initializer)
            for tensor in graph.initializer:
                self._tensor(tensor, f"initializer {_quote(tensor.name)} of {where}")
            for sparse in graph.sparse_initializer:
                self._sparse(sparse, f"sparse initializer of {where}")

        for node in graph.node:
            self.nodes += 1
            if self.nodes % _CLOCK_INTERVAL == 0 and self.ctx.expired():
                self.collector.add(
                    "onnx.scan-incomplete",
                    Severity.MEDIUM,
                    f"the time budget ran out after {self.nodes} nodes; the rest of the "
                    "model was not checked",
                    "Have a reviewer inspect the model, or raise the time budget for this "
                    "artifact.",
                )
                return False
            self._node(node, where)
            node_where = f"node {_quote(_text(node.name) or _text(node.op_type))} in {where}"
            for attribute in node.attribute:
                self._attribute(attribute, node_where, depth, stack)
        return True

    def _node(self, node: Any, where: str) -> None:
        domain, op_type = _text(node.domain), _text(node.op_type)
        key = f"{domain}:{op_type}" if domain not in ("", "ai.onnx") else op_type
        self.ops[key] = self.ops.get(key, 0) + 1
        if (domain, op_type, _text(node.overload)) in self.local_functions:
            return
        if domain not in STANDARD_DOMAINS:
            places = self.custom.setdefault((domain, op_type), [])
            if len(places) < 3:
                places.append(f"node {_quote(_text(node.name) or op_type)} in {where}")
            return
        self._check_known(domain, op_type, where)

    def _check_known(self, domain: str, op_type: str, where: str) -> None:
        import onnx.defs

        schema_domain = "" if domain == "ai.onnx" else domain
        if not _is_text(op_type) or not onnx.defs.has(op_type, schema_domain):
            self.collector.add(
                "onnx.unknown-operator",
                Severity.MEDIUM,
                f"operator {_quote(op_type)} in {where} is not defined in the standard "
                f"domain {_quote(domain or 'ai.onnx')} known to the onnx package, so a "
                "runtime either rejects the model or resolves it from a custom library",
                "Check whether the operator comes from a newer ONNX release (then upgrade "
                "the onnx package of the gate) or from a custom-operator library, which a "
                "reviewer must approve.",
                domain=domain,
                op_type=_shorten(op_type),
            )

    def _attribute(
        self, attribute: Any, where: str, depth: int, stack: list[tuple[Any, str, int]]
    ) -> None:
        # Every populated field is checked, whatever the ``type`` field declares,
        # because a runtime may read a field that ``type`` does not name.
        label = f"attribute {_quote(attribute.name)} of {where}"
        if attribute.HasField("g"):
            self.subgraphs += 1
            stack.append((attribute.g, f"subgraph {label}", depth + 1))
        for graph in attribute.graphs:
            self.subgraphs += 1
            stack.append((graph, f"subgraph {label}", depth + 1))
        if attribute.HasField("t"):
            self._tensor(attribute.t, f"tensor {label}")
        for tensor in attribute.tensors:
            self._tensor(tensor, f"tensor {label}")
        if attribute.HasField("sparse_tensor"):
            self._sparse(attribute.sparse_tensor, f"sparse tensor {label}")
        for sparse in attribute.sparse_tensors:
            self._sparse(sparse, f"sparse tensor {label}")

    def _sparse(self, sparse: Any, where: str) -> None:
        self._tensor(sparse.values, f"values of {where}")
        self._tensor(sparse.indices, f"indices of {where}")

    def _tensor(self, tensor: Any, where: str) -> None:
        import onnx

        locations = [
            _text(entry.value) for entry in tensor.external_data if _text(entry.key) == "location"
        ]
        if tensor.data_location == onnx.TensorProto.EXTERNAL and not locations:
            self.collector.add(
                "onnx.external-data-invalid",
                Severity.MEDIUM,
                f"{where} is stored as external data but names no location, so no runtime "
                "can load it",
                _REEXPORT,
                tensor=_shorten(tensor.name),
            )
        for location in locations:
            self.locations.append(location)
            if not location:
                self.collector.add(
                    "onnx.external-data-invalid",
                    Severity.MEDIUM,
                    f"{where} names an empty external-data location",
                    _REEXPORT,
                    tensor=_shorten(tensor.name),
                )
                continue
            problem = location_problem(location)
            if problem is not None:
                self.collector.add(
                    "onnx.external-data-escape",
                    Severity.HIGH,
                    f"{where} reads its data from {_quote(location)}, and {problem}, so "
                    "the loader would read a file outside the model's directory",
                    _ESCAPE_FIX,
                    tensor=_shorten(tensor.name),
                    location=_shorten(location),
                )

    def _report_custom(self) -> None:
        for (domain, op_type), places in sorted(self.custom.items()):
            count = self.ops.get(f"{domain}:{op_type}", len(places))
            listed = "; ".join(places)
            details = {"domain": _shorten(domain), "op_type": _shorten(op_type), "count": count}
            if domain in ONNXRUNTIME_DOMAINS:
                self.collector.add(
                    "onnx.contrib-operator",
                    Severity.LOW,
                    f"the model uses onnxruntime contrib operator {_quote(op_type)} from "
                    f"domain {_quote(domain)} {count} times ({listed}); onnxruntime ships "
                    "these kernels, other runtimes may not load the model",
                    "No action is needed for onnxruntime. Export with standard operators "
                    "only if other runtimes must load the model.",
                    **details,
                )
            else:
                self.collector.add(
                    "onnx.custom-operator",
                    Severity.HIGH,
                    f"the model uses custom operator {_quote(op_type)} from domain "
                    f"{_quote(domain)} {count} times ({listed}); loading it requires a "
                    "native custom-operator library",
                    _CUSTOM_OP_FIX,
                    **details,
                )

    def facts(self) -> dict[str, Any]:
        model = self.model
        ordered = sorted(self.ops.items(), key=lambda item: (-item[1], item[0]))
        facts: dict[str, Any] = {
            "ir_version": model.ir_version,
            "producer_name": _shorten(model.producer_name),
            "producer_version": _shorten(model.producer_version),
            "opset_imports": {
                _shorten(opset.domain or "ai.onnx"): opset.version
                for opset in list(model.opset_import)[:_MAX_FACT_OPS]
            },
            "node_count": self.nodes,
            "initializer_count": self.initializers,
            "subgraph_count": self.subgraphs,
            "local_function_count": len(model.functions),
            "op_types": {_shorten(key): count for key, count in ordered[:_MAX_FACT_OPS]},
        }
        if len(ordered) > _MAX_FACT_OPS:
            facts["op_types_truncated"] = len(ordered) - _MAX_FACT_OPS
        if self.locations:
            unique = sorted(set(self.locations))
            facts["external_data_locations"] = [_shorten(loc) for loc in unique][
                :_MAX_FACT_LOCATIONS
            ]
            if len(unique) > _MAX_FACT_LOCATIONS:
                facts["external_data_locations_truncated"] = len(unique) - _MAX_FACT_LOCATIONS
        return facts


# --- On-disk resolution of external-data locations -----------------------------

# Directory entries listed when counting an inode's hard links inside the root.
MAX_LINK_SEARCH_ENTRIES = 1_000_000


def check_external_data_paths(
    model_dir: Path,
    artifact_root: Path,
    locations: Iterable[str],
    *,
    model_file: str | None = None,
) -> list[Finding]:
    """Resolve external-data locations on disk and report those that leave the root.

    ``model_dir`` is the directory of the ``.onnx`` file on disk, against
    which a runtime resolves each location, and ``artifact_root`` the
    directory admitted as the artifact. ``locations`` come from the
    scanner's ``external_data_locations`` fact. ``model_file`` locates the
    findings (the model's path relative to the root; by default its
    directory's). Locations that fail :func:`location_problem` are skipped,
    because :class:`OnnxScanner` already reports them.

    1. A location that does not exist is missing data (MEDIUM).
    2. Its real path, with every symbolic link resolved, must lie inside the
       root (HIGH otherwise).
    3. It must be a regular file (MEDIUM otherwise).
    4. A file with more than one hard link must have all of them inside the
       root, or the loader reads a file that also lives elsewhere (HIGH).
    """
    root = Path(os.path.realpath(artifact_root))
    where = model_file or _relative(Path(os.path.realpath(model_dir)), root)
    collector = _Collector(where)
    links = _HardLinkIndex(root)
    for location in dict.fromkeys(locations):
        if not location or location_problem(location) is not None:
            continue
        _check_on_disk(model_dir / location, location, root, links, collector)
    return collector.result()


def _check_on_disk(
    path: Path, location: str, root: Path, links: _HardLinkIndex, collector: _Collector
) -> None:
    quoted = _quote(location)
    if not os.path.lexists(path):
        collector.add(
            "onnx.external-data-missing",
            Severity.MEDIUM,
            f"external-data file {quoted} does not exist beside the model, so the "
            "weights it holds are not part of the admitted artifact",
            "Admit the model directory together with its external-data files.",
            location=_shorten(location),
        )
        return

    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        collector.add(
            "onnx.external-data-escape",
            Severity.HIGH,
            f"external-data location {quoted} resolves through a symbolic link to "
            f"{_quote(str(real))}, outside the artifact",
            _ESCAPE_FIX,
            location=_shorten(location),
            resolved=_shorten(str(real)),
        )
        return

    try:
        info = os.stat(real)
    except OSError as exc:
        collector.add(
            "onnx.external-data-missing",
            Severity.MEDIUM,
            f"external-data file {quoted} cannot be examined: {exc.strerror or exc}",
            "Admit the model directory together with its external-data files.",
            location=_shorten(location),
        )
        return
    if not stat.S_ISREG(info.st_mode):
        collector.add(
            "onnx.external-data-invalid",
            Severity.MEDIUM,
            f"external-data location {quoted} is not a regular file (it is a directory, "
            "FIFO, socket or device)",
            _REEXPORT,
            location=_shorten(location),
        )
        return

    if info.st_nlink > 1:
        inside = links.count(info.st_dev, info.st_ino)
        if inside is None or inside < info.st_nlink:
            counted = "could not be counted" if inside is None else f"only {inside} are"
            collector.add(
                "onnx.external-data-escape",
                Severity.HIGH,
                f"external-data file {quoted} has {info.st_nlink} hard links, and {counted} "
                "inside the artifact, so it is the same file as one outside the artifact",
                "Replace the hard link with a copy of the data that belongs to the model, "
                "or remove it, and admit the artifact again.",
                location=_shorten(location),
                hard_links=info.st_nlink,
                inside=inside,
            )


class _HardLinkIndex:
    """Counts, on first use, how many paths under the root share each inode."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._counts: dict[tuple[int, int], int] | None = None
        self._complete = True

    def count(self, device: int, inode: int) -> int | None:
        """Return the number of paths under the root for an inode, None if unknown."""
        if self._counts is None:
            self._counts = self._build()
        if not self._complete:
            return None
        return self._counts.get((device, inode), 0)

    def _build(self) -> dict[tuple[int, int], int]:
        counts: dict[tuple[int, int], int] = {}
        seen = 0
        for directory, _dirs, files in os.walk(self.root, followlinks=False):
            for name in files:
                seen += 1
                if seen > MAX_LINK_SEARCH_ENTRIES:
                    self._complete = False
                    return counts
                try:
                    info = os.lstat(os.path.join(directory, name))
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    counts[key] = counts.get(key, 0) + 1
        return counts


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _is_text(value: str) -> bool:
    """Return whether ``value`` came from valid UTF-8 (has no escaped bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shorten(text: str | bytes) -> str:
    """Return printable, bounded text for messages and details.

    Escaped invalid bytes become U+FFFD, so the result always encodes as UTF-8.
    """
    value = _text(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(value) <= _MAX_TEXT:
        return value
    return value[:_MAX_TEXT] + f"... ({len(value)} characters)"


def _quote(text: str | bytes) -> str:
    return repr(_shorten(text))
