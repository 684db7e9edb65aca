"""Default-deny classification of the globals that a pickle imports.

A global is the ``module.name`` pair that the GLOBAL, STACK_GLOBAL and INST
opcodes ask the unpickler to import. Every global falls in one of three
classes: allowed (the reconstruction helpers of tensors, arrays and standard
containers), critical (reaches the operating system or runs code) or unknown
(anything else, which needs review because importing it runs its module).
"""

from __future__ import annotations

import _compat_pickle
import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ARGUMENT_CALLS",
    "Classification",
    "Kind",
    "argument_calls",
    "classify",
    "normalize",
]


class Kind(enum.Enum):
    """The class of a global under the default-deny list."""

    ALLOWED = "allowed"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Classification:
    """The class of one global and, for a critical one, what it can do."""

    kind: Kind
    reason: str = ""
    # Importing the module alone runs a program, so a pickle that only
    # names the global has already run code when the name is resolved.
    on_import: bool = False


def _expand(prefix: str, names: Iterable[str]) -> set[str]:
    return {f"{prefix}.{name}" for name in names}


_TORCH_DTYPES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "complex32",
    "complex64",
    "complex128",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
)
_TORCH_QSCHEMES = (
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
)
_TORCH_STORAGE_PREFIXES = (
    "Float",
    "Double",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
    "ComplexFloat",
    "ComplexDouble",
    "QInt8",
    "QUInt8",
    "QInt32",
    "QUInt4x2",
    "QUInt2x4",
)
_TORCH_TENSOR_PREFIXES = (
    "Float",
    "Double",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
)
_TORCH_REBUILD_FUNCTIONS = (
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_sparse_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_nested_tensor",
    "_rebuild_wrapper_subclass",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_device_tensor_from_cpu_tensor",
)


def _build_allowlist() -> frozenset[str]:
    # Modelled on what the weights-only unpickler of torch 2.13 accepts
    # (torch._weights_only_unpickler._get_allowed_globals), plus the NumPy
    # array helpers, joblib's array wrapper and the builtin types that plain
    # containers pickle to.
    allowed = {
        "collections.OrderedDict",
        "collections.Counter",
        "collections.deque",
        "collections.defaultdict",
        "_codecs.encode",
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch._tensor._rebuild_from_type_v2",
    }
    # Builtin types that construct plain values and never call their
    # arguments. Protocols 0 to 2 spell them with __builtin__, which
    # normalize() maps to builtins.
    allowed |= _expand(
        "builtins",
        (
            "set",
            "frozenset",
            "slice",
            "complex",
            "bytearray",
            "bytes",
            "object",
            "range",
            "list",
            "dict",
            "tuple",
            "int",
            "float",
            "bool",
            "str",
            "Ellipsis",
            "NotImplemented",
        ),
    )
    allowed |= _expand("torch", _TORCH_DTYPES)
    allowed |= _expand("torch", _TORCH_QSCHEMES)
    allowed |= _expand("torch._utils", _TORCH_REBUILD_FUNCTIONS)
    for namespace in ("torch", "torch.cuda"):
        allowed |= _expand(namespace, (f"{p}Storage" for p in _TORCH_STORAGE_PREFIXES))
        allowed |= _expand(namespace, (f"{p}Tensor" for p in _TORCH_TENSOR_PREFIXES))
    for namespace in ("torch.sparse", "torch.cuda.sparse"):
        allowed |= _expand(
            namespace,
            (f"{p}Tensor" for p in _TORCH_TENSOR_PREFIXES if p != "Bool"),
        )
    # NumPy 2 moved numpy.core to numpy._core; files written by either exist.
    for core in ("numpy.core", "numpy._core"):
        allowed |= {
            f"{core}.multiarray._reconstruct",
            f"{core}.multiarray.scalar",
            f"{core}.numeric._frombuffer",
        }
    allowed |= {"numpy.ndarray", "numpy.dtype"}
    # joblib's stand-in for a pickled array. Its __init__ only stores its
    # arguments. joblib.load reads the array's bytes after its BUILD, and
    # the pickle scanner sizes or reports them.
    allowed.add("joblib.numpy_pickle.NumpyArrayWrapper")
    return frozenset(allowed)


ALLOWLIST = _build_allowlist()

# Allowed callables that call some of their positional arguments. The
# unpickler runs copyreg._reconstructor(cls, base, state) as base.__new__(cls)
# and base.__init__(obj, state), so cls and base are the real callees. Maps
# the global to (index of the called argument, index of the argument that
# contains that call's own arguments, or -1).
ARGUMENT_CALLS: dict[str, tuple[tuple[int, int], ...]] = {
    "copyreg._reconstructor": ((0, -1), (1, -1)),
    "copyreg.__newobj__": ((0, -1),),
    "copyreg.__newobj_ex__": ((0, -1),),
    # _rebuild_from_type_v2(func, new_type, args, state) calls func(*args)
    # and converts the result to new_type.
    "torch._tensor._rebuild_from_type_v2": ((0, 2), (1, -1)),
    "torch._utils._rebuild_wrapper_subclass": ((0, -1),),
    # _reconstruct(subtype, shape, dtype) creates an instance of subtype,
    # which runs the subclass's __array_finalize__.
    "numpy.core.multiarray._reconstruct": ((0, -1),),
    "numpy._core.multiarray._reconstruct": ((0, -1),),
}

# Dotted paths (a module, or a module and attribute) whose import hands the
# pickle's author code execution or the operating system. A global matches
# an entry when its path equals the entry or starts with the entry and a dot.
# Each group states why it is here.
_CRITICAL_GROUPS: tuple[tuple[str, str], ...] = (
    (
        "runs processes or reaches the operating system",
        "os posix nt posixpath ntpath subprocess _posixsubprocess _winapi pty "
        "commands popen2 shutil signal multiprocessing _multiprocessing sys ctypes",
    ),
    (
        "imports modules or compiles and runs Python code",
        "runpy importlib imp _imp _frozen_importlib _frozen_importlib_external zipimport "
        "code codeop types pdb bdb timeit trace profile cProfile pydoc",
    ),
    (
        "opens, creates or overwrites files by name",
        "io.open _io.open io.open_code _io.open_code io.FileIO _io.FileIO codecs.open",
    ),
    (
        "loads native code into the process",
        "_ctypes",
    ),
    (
        "deserializes a nested payload that is not scanned",
        "pickle _pickle cPickle dill cloudpickle marshal shelve",
    ),
    (
        "installs packages or runs build scripts",
        "ensurepip pip setuptools distutils",
    ),
    (
        "opens network connections or a browser",
        "socket _socket urllib urllib2 http httplib ftplib smtplib telnetlib requests "
        "asyncio webbrowser xmlrpc",
    ),
    (
        "evaluates code, imports modules or reaches any attribute by name",
        "builtins.eval builtins.exec builtins.execfile builtins.compile "
        "builtins.getattr builtins.setattr builtins.delattr builtins.__import__ "
        "builtins.open builtins.file builtins.input builtins.breakpoint "
        "builtins.globals builtins.locals builtins.vars builtins.apply "
        "__builtin__.eval __builtin__.exec __builtin__.execfile "
        "__builtin__.compile __builtin__.getattr __builtin__.setattr "
        "__builtin__.delattr __builtin__.__import__ __builtin__.open "
        "__builtin__.file __builtin__.input __builtin__.globals "
        "__builtin__.locals __builtin__.vars __builtin__.apply",
    ),
    (
        "calls or fetches attributes of other objects chosen by the pickle",
        "operator.attrgetter operator.methodcaller operator.itemgetter functools.partial "
        "_operator.attrgetter _operator.methodcaller _operator.itemgetter _functools.partial",
    ),
    (
        "loads another file with an unrestricted unpickler or native loader",
        "numpy.load numpy.lib.npyio.load numpy.lib._npyio_impl.load "
        "numpy.testing numpy.f2py numpy.ctypeslib numpy.distutils "
        "torch.load torch.serialization.load torch.storage._load_from_bytes "
        "torch.jit.load torch.jit._serialization.load torch.hub torch._C "
        "torch.ops torch.package torch.utils.cpp_extension",
    ),
)

_CRITICAL: dict[str, str] = {
    path: reason for reason, paths in _CRITICAL_GROUPS for path in paths.split()
}

# Modules that run a program as soon as they are imported: antigravity opens
# a web browser and idlelib.idle starts IDLE. Any package's __main__ module
# runs the package's command line, with the loading process's arguments.
_RUNS_ON_IMPORT: dict[str, str] = {
    "antigravity": "opens a web browser when it is imported",
    "idlelib.idle": "starts the IDLE editor when it is imported",
}
_MAIN_REASON = "runs a package's command-line program when it is imported"

# Module roots whose appearance inside an attribute path, as in
# torch.serialization.os.system, reaches the critical module through an
# import that another module made.
_CRITICAL_ROOTS = frozenset(path for path in _CRITICAL if "." not in path)

_TORCHSCRIPT_PREFIXES = ("__torch__", "torch.jit._pickle")

_DUNDER_REASON = "walks interpreter internals through a dunder attribute"


def normalize(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 spellings to the names a Python 3 unpickler imports.

    The unpickler applies the same stdlib table (``_compat_pickle``) to
    pickles of protocols 0 to 2, so ``__builtin__.eval`` is ``builtins.eval``.
    """
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _critical_reason(module: str, name: str) -> str | None:
    path = f"{module}.{name}".split(".")
    for end in range(1, len(path) + 1):
        reason = _CRITICAL.get(".".join(path[:end]))
        if reason is not None:
            return reason
    attributes = name.split(".")
    if len(attributes) < 2:
        return None
    # A dotted attribute path (protocol 4 resolves it with getattr) can walk
    # from a harmless module into an imported one or into __globals__.
    for attribute in attributes:
        if attribute in _CRITICAL_ROOTS:
            return _CRITICAL[attribute]
        if len(attribute) > 4 and attribute.startswith("__") and attribute.endswith("__"):
            return _DUNDER_REASON
    return None


# Names longer than this are classified without caching, so that the cache
# cannot hold many long strings.
_MAX_CACHED_NAME = 512


def classify(module: str, name: str, torchscript: bool = False) -> Classification:
    """Classify the global ``module.name`` under the default-deny list.

    ``torchscript`` is true inside a TorchScript archive, whose pickles name
    TorchScript's own types under ``__torch__`` and ``torch.jit._pickle``.
    Both the spelling in the file and its Python 3 mapping are checked, and
    a match on the critical list wins over the allowlist.
    """
    if len(module) + len(name) > _MAX_CACHED_NAME:
        return _classify(module, name, torchscript)
    return _classify_cached(module, name, torchscript)


def _import_reason(module: str) -> str | None:
    """Return why importing ``module`` runs a program, or None."""
    parts = module.split(".")
    # "__main__" alone is the loader's own script, which is already imported.
    if "__main__" in parts[1:]:
        return _MAIN_REASON
    for end in range(1, len(parts) + 1):
        reason = _RUNS_ON_IMPORT.get(".".join(parts[:end]))
        if reason is not None:
            return reason
    return None


def _classify(module: str, name: str, torchscript: bool) -> Classification:
    mapped_module, mapped_name = normalize(module, name)
    reason = _import_reason(mapped_module) or _import_reason(module)
    if reason is not None:
        return Classification(Kind.CRITICAL, reason, on_import=True)
    reason = _critical_reason(mapped_module, mapped_name) or _critical_reason(module, name)
    if reason is not None:
        return Classification(Kind.CRITICAL, reason)
    if f"{mapped_module}.{mapped_name}" in ALLOWLIST:
        return Classification(Kind.ALLOWED)
    if torchscript and any(
        module == prefix or module.startswith(prefix + ".") for prefix in _TORCHSCRIPT_PREFIXES
    ):
        return Classification(Kind.ALLOWED)
    return Classification(Kind.UNKNOWN)


_classify_cached = functools.lru_cache(maxsize=4096)(_classify)


def argument_calls(module: str, name: str) -> tuple[tuple[int, int], ...]:
    """Return the arguments that an allowed global calls, as in ARGUMENT_CALLS."""
    mapped_module, mapped_name = normalize(module, name)
    return ARGUMENT_CALLS.get(f"{mapped_module}.{mapped_name}", ())
