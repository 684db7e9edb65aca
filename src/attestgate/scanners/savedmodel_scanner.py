"""Check a TensorFlow SavedModel's operations without TensorFlow.

``saved_model.pb`` is a serialized ``SavedModel`` message. The scanner walks
its wire format with :mod:`attestgate.scanners.protobuf_wire` along these
fields, taken from TensorFlow's ``.proto`` files (saved_model.proto,
meta_graph.proto, graph.proto, function.proto, node_def.proto,
attr_value.proto, saved_object_graph.proto)::

    SavedModel.meta_graphs = 2 -> MetaGraphDef
    MetaGraphDef.meta_info_def = 1 (tags = 4, tensorflow_version = 5)
    MetaGraphDef.graph_def = 2 -> GraphDef
    MetaGraphDef.asset_file_def = 6 (filename = 2)
    MetaGraphDef.object_graph_def = 7 -> SavedObjectGraph.nodes = 1
        -> SavedObject.user_object = 4 -> SavedUserObject (identifier = 1, metadata = 3)
    GraphDef.node = 1 -> NodeDef; GraphDef.library = 2 -> FunctionDefLibrary.function = 1
    FunctionDef.signature = 1 (OpDef.name = 1), FunctionDef.node_def = 3 -> NodeDef
    NodeDef.name = 1, .op = 2, .attr = 5 (map entry key = 1, value = 2 -> AttrValue)
    AttrValue.s = 2, AttrValue.list = 1 -> ListValue.s = 2

Operations that run Python, touch the file system or the network are
reported. The Keras metadata that TensorFlow 2.0 to 2.4 kept in
``SavedUserObject.metadata`` is checked like any Keras configuration.

``keras_metadata.pb``, which Keras 2.5 and later write beside
``saved_model.pb``, is a ``SavedMetadata`` message (Keras's
saved_metadata.proto: ``nodes = 1``, ``SavedObject.node_path = 3``,
``identifier = 4``, ``metadata = 5``) read by :class:`KerasMetadataScanner`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import Severity
from attestgate.identify.formats import Format
from attestgate.scanners.interface import (
    BufferingScanner,
    MiB,
    ReadAt,
    ScanContext,
    ScanResult,
)
from attestgate.scanners.keras_scanner import FindingCollector, check_keras_config
from attestgate.scanners.onnx_scanner import location_problem
from attestgate.scanners.protobuf_wire import (
    LEN,
    VARINT,
    Field,
    Walker,
    WireError,
    WireLimitError,
    WireLimits,
)

logger = logging.getLogger(__name__)

CHECK = "savedmodel"

# Operations that call back into the Python interpreter of the loading process.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

# Operations that read or write files named by their inputs or attributes.
# Save, SaveV2, Restore, RestoreV2, MergeV2Checkpoints and
# InitializeTableFromTextFile are left out: every SavedModel uses them on its
# own variables and asset files.
FILESYSTEM_OPS: dict[str, str] = {
    "ReadFile": "reads any file named by its input",
    "WriteFile": "writes its input to any file path",
    "MatchingFiles": "lists the files that match a glob pattern",
    "ImmutableConst": "maps a file named by its attribute into memory",
    "TFRecordReader": "reads files named in its queue",
    "TFRecordReaderV2": "reads files named in its queue",
    "TextLineReader": "reads files named in its queue",
    "TextLineReaderV2": "reads files named in its queue",
    "WholeFileReader": "reads files named in its queue",
    "WholeFileReaderV2": "reads files named in its queue",
    "FixedLengthRecordReader": "reads files named in its queue",
    "FixedLengthRecordReaderV2": "reads files named in its queue",
    "TFRecordDataset": "reads files named by its input",
    "TFRecordDatasetV2": "reads files named by its input",
    "TextLineDataset": "reads files named by its input",
    "FixedLengthRecordDataset": "reads files named by its input",
    "FixedLengthRecordDatasetV2": "reads files named by its input",
    "CSVDataset": "reads files named by its input",
    "CSVDatasetV2": "reads files named by its input",
    "ExperimentalCSVDataset": "reads files named by its input",
    "LMDBDataset": "reads an LMDB database named by its input",
    "ExperimentalLMDBDataset": "reads an LMDB database named by its input",
    "SqlDataset": "opens a SQLite database named by its input",
    "ExperimentalSqlDataset": "opens a SQLite database named by its input",
    "SaveDataset": "writes a dataset to a directory",
    "SaveDatasetV2": "writes a dataset to a directory",
    "LoadDataset": "reads a dataset from a directory",
    "SnapshotDataset": "writes and reads dataset snapshots in a directory",
    "SnapshotDatasetV2": "writes and reads dataset snapshots in a directory",
    "DatasetToTFRecord": "writes a dataset to a file",
    "ExperimentalDatasetToTFRecord": "writes a dataset to a file",
    "CreateSummaryFileWriter": "writes event files to a directory",
    "CreateSummaryDbWriter": "writes to a SQLite database file",
    "DebugIdentity": "writes tensors to its debug URLs (tfdbg)",
    "DebugIdentityV2": "writes tensors to a dump directory (tfdbg)",
    "DebugIdentityV3": "writes tensors to its debug URLs (tfdbg)",
    "DebugNanCount": "writes tensor summaries to its debug URLs (tfdbg)",
    "DebugNumericSummary": "writes tensor summaries to its debug URLs (tfdbg)",
    "DebugNumericSummaryV2": "writes tensor summaries to a dump directory (tfdbg)",
}

# Operations that open network connections.
NETWORK_OPS: dict[str, str] = {
    "Rpc": "calls a remote RPC server",
    "TryRpc": "calls a remote RPC server",
    "RpcCall": "calls a remote RPC server",
    "RpcClient": "connects to a remote RPC server",
    "RpcServer": "starts an RPC server",
    "RpcServerStart": "starts an RPC server",
    "RpcServerRegister": "registers functions on an RPC server",
    "DataServiceDataset": "reads from a tf.data service over the network",
    "DataServiceDatasetV2": "reads from a tf.data service over the network",
    "DataServiceDatasetV3": "reads from a tf.data service over the network",
    "DataServiceDatasetV4": "reads from a tf.data service over the network",
    "RegisterDataset": "registers a dataset with a tf.data service over the network",
    "RegisterDatasetV2": "registers a dataset with a tf.data service over the network",
}

# Operations that are safe unless a string attribute points at a file:
# PrintV2 writes to ``output_stream`` ("file://..." is a file), and
# DecodeProtoV2/EncodeProto read a descriptor set from ``descriptor_source``
# unless it is "local://" (the protos linked into the binary).
_ATTR_FILE_OPS: dict[str, tuple[str, str]] = {
    "PrintV2": ("output_stream", "writes its output to"),
    "DecodeProtoV2": ("descriptor_source", "reads protobuf descriptors from"),
    "EncodeProto": ("descriptor_source", "reads protobuf descriptors from"),
}

# Largest saved_model.pb parsed in memory. protobuf caps a message at 2 GiB;
# TensorFlow writes larger graphs as chunked saved_model.cpb files instead.
MAX_SAVEDMODEL_BYTES = 512 * MiB
_MAX_FACT_OPS = 200
_MAX_FACT_ITEMS = 64
_MAX_NAME = 200
_MAX_TEXT = 120

_PYTHON_FIX = (
    "Do not load this model. A PyFunc operation calls a Python function of the loading "
    "process; re-export the model without tf.py_function or tf.numpy_function."
)
_FILESYSTEM_FIX = (
    "Do not serve this model until a reviewer has confirmed why the graph reads or "
    "writes files. Re-export the serving signature without file operations."
)
_NETWORK_FIX = (
    "Do not serve this model until a reviewer has confirmed why the graph opens network "
    "connections. Re-export the serving signature without them."
)
_CUSTOM_FIX = (
    "The operation comes from a custom-op library (its name has a 'Namespace>' prefix), "
    "which the loader must load as native code. Confirm that the library is a reviewed, "
    "pinned dependency of the deployment."
)
_REEXPORT = (
    "Re-export the SavedModel with a released TensorFlow version from a trusted copy and "
    "admit the new directory, or have a reviewer inspect it."
)


@dataclass
class _Inventory:
    ops: dict[str, int] = field(default_factory=dict)
    nodes: int = 0
    functions: int = 0
    meta_graphs: int = 0
    tags: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    assets: list[str] = field(default_factory=list)
    keras_objects: int = 0


class SavedModelScanner(BufferingScanner):
    """Walks saved_model.pb and reports risky operations and Keras metadata."""

    check = CHECK
    max_model_bytes = MAX_SAVEDMODEL_BYTES

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Walk the buffered SavedModel message.

        1. The file is at most ``max_model_bytes`` long.
        2. Every NodeDef of every MetaGraphDef's GraphDef and of every
           FunctionDef in its library is counted by operation, and Python,
           file-system, network and namespaced custom operations are reported.
        3. Asset file names must stay inside the ``assets`` directory.
        4. Keras metadata JSON in SavedUserObject entries is checked with
           :func:`check_keras_config`.
        A malformed message is reported, together with what was found before
        the malformed bytes.
        """
        collector = FindingCollector(self.ctx.file, check=CHECK)
        result = ScanResult(format=Format.TF_SAVEDMODEL)
        if self._size > self.max_model_bytes:
            collector.add(
                "savedmodel.too-large-to-parse",
                Severity.MEDIUM,
                f"saved_model.pb is {self._size} bytes, over the {self.max_model_bytes} "
                "bytes that the gate parses in memory, so its operations were not checked",
                "Have a reviewer inspect the SavedModel, or re-export it with its "
                "constants in variables so that the graph stays small.",
                size=self._size,
                limit=self.max_model_bytes,
            )
            result.findings = collector.result()
            return result

        walk = _SavedModelWalk(self._buffer, self.ctx, collector)
        walk.run()
        self._buffer = bytearray()
        result.facts = walk.facts()
        result.findings = collector.result() + walk.keras.result()
        return result


class _SavedModelWalk:
    """Follows the SavedModel schema through the wire format."""

    def __init__(self, buf: bytearray, ctx: ScanContext, collector: FindingCollector) -> None:
        self.walker = Walker(buf, WireLimits(deadline=ctx.deadline))
        self.ctx = ctx
        self.collector = collector
        self.inventory = _Inventory()
        self.schema_version: int | None = None
        # Keras findings carry the keras check, so they are collected apart.
        self.keras = FindingCollector(ctx.file)

    def run(self) -> None:
        try:
            for top in self.walker.fields():
                if top.number == 1 and top.wire_type == VARINT:
                    self.schema_version = top.value
                elif top.number == 2 and top.wire_type == LEN:
                    self.inventory.meta_graphs += 1
                    self._meta_graph(top)
        except WireLimitError as exc:
            self.collector.add(
                "savedmodel.scan-incomplete",
                Severity.MEDIUM,
                f"the SavedModel was only partly checked: {exc}",
                "Have a reviewer inspect the SavedModel, or raise the time budget for this "
                "artifact.",
                offset=exc.offset,
            )
        except WireError as exc:
            self.collector.add(
                "savedmodel.malformed",
                Severity.MEDIUM,
                f"saved_model.pb is not a valid SavedModel message: {exc}; TensorFlow "
                "cannot load it and the rest of the file was not checked",
                _REEXPORT,
                offset=exc.offset,
            )

    def _meta_graph(self, meta: Field) -> None:
        for part in self.walker.fields(meta.start, meta.end, 1):
            if part.wire_type != LEN:
                continue
            if part.number == 1:
                self._meta_info(part)
            elif part.number == 2:
                self._graph_def(part)
            elif part.number == 6:
                self._asset(part)
            elif part.number == 7:
                self._object_graph(part)

    def _meta_info(self, info: Field) -> None:
        for part in self.walker.fields(info.start, info.end, 2):
            if part.wire_type != LEN:
                continue
            if part.number == 4 and len(self.inventory.tags) < _MAX_FACT_ITEMS:
                self.inventory.tags.append(self.walker.string(part, _MAX_TEXT))
            elif part.number == 5 and len(self.inventory.versions) < _MAX_FACT_ITEMS:
                self.inventory.versions.append(self.walker.string(part, _MAX_TEXT))

    def _graph_def(self, graph: Field) -> None:
        for part in self.walker.fields(graph.start, graph.end, 2):
            if part.wire_type != LEN:
                continue
            if part.number == 1:
                self._node(part, "the graph", 3)
            elif part.number == 2:
                for entry in self.walker.fields(part.start, part.end, 3):
                    if entry.number == 1 and entry.wire_type == LEN:
                        self._function(entry)

    def _function(self, function: Field) -> None:
        self.inventory.functions += 1
        name = ""
        for part in self.walker.fields(function.start, function.end, 4):
            if part.number == 1 and part.wire_type == LEN:
                for signature in self.walker.fields(part.start, part.end, 5):
                    if signature.number == 1 and signature.wire_type == LEN:
                        name = self.walker.string(signature, _MAX_NAME)
        where = f"function {name!r}" if name else "an unnamed function"
        for part in self.walker.fields(function.start, function.end, 4):
            if part.number == 3 and part.wire_type == LEN:
                self._node(part, where, 5)

    def _node(self, node: Field, where: str, depth: int) -> None:
        self.inventory.nodes += 1
        name = ""
        op = ""
        attributes: list[Field] = []
        # Singular string fields keep their last occurrence, as protobuf
        # parsers do when a field repeats.
        for part in self.walker.fields(node.start, node.end, depth):
            if part.wire_type != LEN:
                continue
            if part.number == 1:
                name = self.walker.string(part, _MAX_NAME)
            elif part.number == 2:
                op = self.walker.string(part, _MAX_NAME)
            elif part.number == 5:
                attributes.append(part)
        self.inventory.ops[op] = self.inventory.ops.get(op, 0) + 1
        self._check_op(op, f"node {name!r} in {where}", node.start, attributes, depth)

    def _check_op(
        self, op: str, where: str, offset: int, attributes: list[Field], depth: int
    ) -> None:
        details = {"op": op, "node": _shorten(where)}
        if op in PYTHON_OPS:
            self.collector.add(
                "savedmodel.python-op",
                Severity.CRITICAL,
                f"operation {op} at {where} calls a Python function of the loading process",
                _PYTHON_FIX,
                offset=offset,
                **details,
            )
        elif op in FILESYSTEM_OPS:
            self.collector.add(
                "savedmodel.filesystem-op",
                Severity.HIGH,
                f"operation {op} at {where} {FILESYSTEM_OPS[op]}",
                _FILESYSTEM_FIX,
                offset=offset,
                **details,
            )
        elif op in NETWORK_OPS:
            self.collector.add(
                "savedmodel.network-op",
                Severity.HIGH,
                f"operation {op} at {where} {NETWORK_OPS[op]}",
                _NETWORK_FIX,
                offset=offset,
                **details,
            )
        elif op in _ATTR_FILE_OPS:
            self._check_attr_file(op, where, offset, attributes, depth)
        elif ">" in op:
            self.collector.add(
                "savedmodel.custom-op",
                Severity.MEDIUM,
                f"operation {_shorten(op)!r} at {where} comes from a custom-op library",
                _CUSTOM_FIX,
                offset=offset,
                **details,
            )

    def _check_attr_file(
        self, op: str, where: str, offset: int, attributes: list[Field], depth: int
    ) -> None:
        key, verb = _ATTR_FILE_OPS[op]
        value = self._string_attr(attributes, key, depth + 1)
        if value is None:
            return
        is_file = value.startswith("file://") if op == "PrintV2" else value != "local://"
        if is_file:
            self.collector.add(
                "savedmodel.filesystem-op",
                Severity.HIGH,
                f"operation {op} at {where} {verb} {_shorten(value)!r}",
                _FILESYSTEM_FIX,
                offset=offset,
                op=op,
                node=_shorten(where),
                target=_shorten(value),
            )

    def _string_attr(self, attributes: list[Field], key: str, depth: int) -> str | None:
        """Return the string value of attribute ``key``, or None when it is absent."""
        found: str | None = None
        for entry in attributes:
            entry_key = ""
            value: Field | None = None
            for part in self.walker.fields(entry.start, entry.end, depth):
                if part.number == 1 and part.wire_type == LEN:
                    entry_key = self.walker.string(part, _MAX_NAME)
                elif part.number == 2 and part.wire_type == LEN:
                    value = part
            if entry_key != key or value is None:
                continue
            for part in self.walker.fields(value.start, value.end, depth + 1):
                if part.number == 2 and part.wire_type == LEN:
                    found = self.walker.string(part, 4096)
        return found

    def _asset(self, asset: Field) -> None:
        for part in self.walker.fields(asset.start, asset.end, 2):
            if part.number != 2 or part.wire_type != LEN:
                continue
            filename = self.walker.string(part, 4096)
            if len(self.inventory.assets) < _MAX_FACT_ITEMS:
                self.inventory.assets.append(_shorten(filename))
            problem = location_problem(filename) if filename else None
            if problem is not None:
                self.collector.add(
                    "savedmodel.asset-path-escape",
                    Severity.HIGH,
                    f"asset file name {_shorten(filename)!r} {problem.removeprefix('it ')}, "
                    "so TensorFlow would read a file outside the SavedModel's assets "
                    "directory",
                    "Do not load this model. Asset file names must be plain names inside "
                    "the assets directory; re-export the SavedModel from a trusted copy.",
                    offset=part.start,
                    filename=_shorten(filename),
                )

    def _object_graph(self, graph: Field) -> None:
        for node in self.walker.fields(graph.start, graph.end, 2):
            if node.number != 1 or node.wire_type != LEN:
                continue
            for kind in self.walker.fields(node.start, node.end, 3):
                if kind.number == 4 and kind.wire_type == LEN:
                    self._user_object(kind)

    def _user_object(self, user: Field) -> None:
        identifier = ""
        metadata: Field | None = None
        for part in self.walker.fields(user.start, user.end, 4):
            if part.wire_type != LEN:
                continue
            if part.number == 1:
                identifier = self.walker.string(part, _MAX_NAME)
            elif part.number == 3:
                metadata = part
        if metadata is None or metadata.value == 0:
            return
        self.inventory.keras_objects += 1
        self._keras_metadata(metadata, identifier)

    def _keras_metadata(self, metadata: Field, identifier: str) -> None:
        if metadata.value > self.ctx.limits.max_json_bytes:
            self.keras.add(
                "keras.config-too-large",
                Severity.MEDIUM,
                f"the Keras metadata of object {identifier!r} is {metadata.value} bytes, "
                f"over the limit of {self.ctx.limits.max_json_bytes} bytes that the gate "
                "parses",
                _REEXPORT,
                offset=metadata.start,
            )
            return
        check_keras_config(self.walker.payload(metadata), self.ctx, self.keras)

    def facts(self) -> dict[str, Any]:
        inventory = self.inventory
        ordered = sorted(inventory.ops.items(), key=lambda item: (-item[1], item[0]))
        facts: dict[str, Any] = {
            "saved_model_schema_version": self.schema_version,
            "meta_graph_count": inventory.meta_graphs,
            "node_count": inventory.nodes,
            "function_count": inventory.functions,
            "op_types": {_shorten(op): count for op, count in ordered[:_MAX_FACT_OPS]},
        }
        if len(ordered) > _MAX_FACT_OPS:
            facts["op_types_truncated"] = len(ordered) - _MAX_FACT_OPS
        if inventory.tags:
            facts["tags"] = sorted(set(inventory.tags))
        if inventory.versions:
            facts["tensorflow_versions"] = sorted(set(inventory.versions))
        if inventory.assets:
            facts["asset_files"] = inventory.assets
        if inventory.keras_objects:
            facts["keras_objects"] = inventory.keras_objects
        return facts


class KerasMetadataScanner(BufferingScanner):
    """Checks the Keras configurations stored in a SavedModel's keras_metadata.pb."""

    check = "keras"
    max_model_bytes = MAX_SAVEDMODEL_BYTES

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Extract each SavedObject's metadata JSON and check it as a Keras config."""
        result = ScanResult()
        if self._size > self.max_model_bytes:
            collector = FindingCollector(self.ctx.file)
            collector.add(
                "keras.config-too-large",
                Severity.MEDIUM,
                f"keras_metadata.pb is {self._size} bytes, over the "
                f"{self.max_model_bytes} bytes that the gate parses in memory",
                _REEXPORT,
            )
            result.findings = collector.result()
            return result
        result = scan_keras_metadata(bytes(self._buffer), self.ctx)
        self._buffer = bytearray()
        return result


def scan_keras_metadata(data: bytes, ctx: ScanContext) -> ScanResult:
    """Check the JSON metadata of every object in a keras_metadata.pb message."""
    collector = FindingCollector(ctx.file)
    result = ScanResult()
    walker = Walker(data, WireLimits(deadline=ctx.deadline))
    objects = 0
    identifiers: dict[str, int] = {}
    try:
        for node in walker.fields():
            if node.number != 1 or node.wire_type != LEN:
                continue
            objects += 1
            identifier = ""
            metadata: Field | None = None
            for part in walker.fields(node.start, node.end, 1):
                if part.number == 4 and part.wire_type == LEN:
                    identifier = walker.string(part, _MAX_NAME)
                elif part.number == 5 and part.wire_type == LEN:
                    metadata = part
            identifiers[identifier] = identifiers.get(identifier, 0) + 1
            if metadata is not None and metadata.value:
                check_keras_config(walker.payload(metadata), ctx, collector)
    except WireError as exc:
        collector.add(
            "keras.invalid-config",
            Severity.MEDIUM,
            f"keras_metadata.pb is not a valid SavedMetadata message: {exc}; the rest of "
            "the file was not checked",
            _REEXPORT,
            offset=exc.offset,
        )
    result.findings = collector.result()
    ordered = sorted(identifiers.items(), key=lambda item: (-item[1], item[0]))
    result.facts = {
        "keras_objects": objects,
        "identifiers": {_shorten(key): count for key, count in ordered[:_MAX_FACT_ITEMS]},
    }
    return result


def _shorten(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"... ({len(text)} characters)"
