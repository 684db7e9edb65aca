"""The array data that joblib writes into its pickles, sized from tracked values.

``joblib.dump`` pickles each NumPy array as a
``joblib.numpy_pickle.NumpyArrayWrapper`` and writes the array's bytes into
the stream right after the BUILD of that wrapper, outside the pickle format.
After every BUILD that leaves such a wrapper on the stack, ``joblib.load``
reads (``NumpyArrayWrapper.read_array`` in joblib 1.6.0):

1. one byte P and then P padding bytes, unless the wrapper's
   ``numpy_array_alignment_bytes`` is None or missing (files of joblib 1.1
   and older, or written to a file object without ``tell``);
2. ``prod(shape) * dtype.itemsize`` bytes of data, or a nested pickle when
   the dtype contains objects.

The pickle scanner skips these bytes only when this module sizes them from
values that the scan tracked exactly. Those are a wrapper made empty by NEWOBJ
or a copyreg helper, state dicts of string keys, tuples of ints and a
``numpy.dtype`` rebuilt from a numeric type code. Anything else leaves the
size unknown, and the scanner reports the wrapper instead of skipping.

joblib 1.1 and older know no padding and read the array from the padding
byte on, so for them the last P + 1 bytes that this scan skips are opcodes.
The pickle scanner follows that reading in a second view (see
``pickle_scanner``). Files with padding come from joblib 1.2 and newer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from attestgate.scanners.pickle_globals import normalize

__all__ = [
    "DTYPE",
    "NONE",
    "RETURNS_ARGUMENT",
    "WRAPPER",
    "ArrayLayout",
    "ArrayWrapper",
    "Dtype",
    "NoneValue",
    "StateDict",
    "array_layout",
    "creates_empty_wrapper",
    "global_role",
]

# Roles of the globals that take part in a joblib array.
WRAPPER: Final = "wrapper"
DTYPE: Final = "dtype"
ARRAY_CLASS: Final = "array class"
# copyreg helpers that create an instance of their first argument without
# calling its __init__.
NEWOBJ_HELPER: Final = "newobj helper"
RECONSTRUCTOR: Final = "reconstructor"
BASE_OBJECT: Final = "base object"
# Allowed helpers that can return one of their arguments unchanged:
# scalar(dtype('O'), obj) returns obj in NumPy releases that accept the call
# (2.4 rejects it).
RETURNS_ARGUMENT: Final = "returns argument"

_ROLES: Final[dict[str, str]] = {
    "joblib.numpy_pickle.NumpyArrayWrapper": WRAPPER,
    "numpy.dtype": DTYPE,
    "copyreg.__newobj__": NEWOBJ_HELPER,
    "copyreg.__newobj_ex__": NEWOBJ_HELPER,
    "copyreg._reconstructor": RECONSTRUCTOR,
    "builtins.object": BASE_OBJECT,
}
# joblib wraps exactly these array types (NumpyPickler.save).
_ROLES.update(
    dict.fromkeys(("numpy." + name for name in ("ndarray", "memmap", "matrix")), ARRAY_CLASS)
)
_ROLES.update(
    dict.fromkeys(
        (f"{core}.multiarray.scalar" for core in ("numpy.core", "numpy._core")), RETURNS_ARGUMENT
    )
)

# The attributes that NumpyArrayWrapper.__init__ sets. A state that sets any
# other attribute, such as __setstate__ or read, changes what a later BUILD
# or joblib's reader runs.
_ATTRIBUTES: Final = frozenset(
    {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}
)
_REQUIRED: Final = ("subclass", "shape", "order", "dtype", "allow_mmap")
# State dicts keep this many string keys. The wrapper's state has six.
_MAX_STATE_KEYS: Final = 8
# joblib computes the element count as a product of int64 values, which
# wraps silently. Below this bound it equals the exact product.
_MAX_ARRAY_BYTES: Final = 2**63

# The type codes that numpy.dtype's pickle carries for numeric types: the
# kind and the item size, as in 'f8'. Datetime and timedelta codes carry no
# unit (it sits in the BUILD state) and always have 8-byte items.
_NUMERIC_CODE: Final = re.compile(
    r"[<>|=]?(?:(b1|[iu][1248]|f(?:2|4|8|12|16)|c(?:8|16|24|32))|([Mm]8))"
)
_OBJECT_CODE: Final = re.compile(r"[<>|=]?O[48]?")
_BYTE_ORDERS: Final = frozenset({"<", ">", "|", "="})


def global_role(module: str, name: str) -> str:
    """Return the role of the global ``module.name`` in a joblib array, or ''."""
    mapped_module, mapped_name = normalize(module, name)
    return _ROLES.get(f"{mapped_module}.{mapped_name}", "")


class NoneValue:
    """The None that the NONE opcode pushes."""

    __slots__ = ()
    description = "None"

    def __deepcopy__(self, memo: dict[int, object]) -> NoneValue:
        return self


NONE: Final = NoneValue()


def _text(value: object) -> str | None:
    # The scanner keeps BINUNICODE arguments as their UTF-8 bytes.
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
    return None


def _is_int(value: object, expected: int) -> bool:
    return type(value) is int and value == expected


class StateDict:
    """A dict that EMPTY_DICT or DICT built, with its entries while they are few.

    ``resolved`` turns false for good once the dict contains a key that is
    not a string, or more than ``_MAX_STATE_KEYS`` keys.
    """

    __slots__ = ("entries", "resolved")
    description = "a dict"

    def __init__(self) -> None:
        self.entries: dict[str, object] = {}
        self.resolved = True

    def set_item(self, key: object, value: object) -> None:
        if not self.resolved:
            return
        name = _text(key)
        if name is None or (name not in self.entries and len(self.entries) >= _MAX_STATE_KEYS):
            self.resolved = False
            self.entries = {}
            return
        self.entries[name] = value

    def set_items(self, items: Sequence[object]) -> None:
        """Apply SETITEMS or DICT, whose items alternate keys and values."""
        if len(items) % 2:
            self.resolved = False
            self.entries = {}
            return
        for index in range(0, len(items), 2):
            self.set_item(items[index], items[index + 1])


def _is_empty(state: object) -> bool:
    # pickle's load_build skips a state that is false.
    if isinstance(state, StateDict):
        return state.resolved and not state.entries
    return state is NONE or state in (False, 0, (), "", b"")


class Dtype:
    """A numpy.dtype that REDUCE rebuilt, with its item size.

    ``problem`` is empty while the dtype is a plain numeric type. Otherwise
    it is the reason why the scan cannot size an array of it.
    """

    __slots__ = ("code", "datetime", "itemsize", "problem")
    description = "a numpy.dtype"

    def __init__(self, code: str, itemsize: int, datetime: bool, problem: str = "") -> None:
        self.code = code
        self.itemsize = itemsize
        self.datetime = datetime
        self.problem = problem

    @classmethod
    def from_arguments(cls, args: object) -> Dtype:
        """Make the dtype that numpy.dtype(*args) returns, as numpy pickles it.

        Only ``(code, False, True)`` is sized: copy=True makes a new dtype
        object, so a BUILD on another dtype value cannot change this one.
        """
        if not (type(args) is tuple and len(args) == 3):
            return cls("", 0, False, "its dtype is rebuilt from arguments the scan did not keep")
        code = _text(args[0])
        if code is None:
            return cls("", 0, False, "its dtype is rebuilt from a value that is not a type code")
        if args[1] is not False or args[2] is not True:
            return cls(code, 0, False, f"its dtype {code!r} is not rebuilt as a new copy")
        if _OBJECT_CODE.fullmatch(code):
            return cls(
                code,
                0,
                False,
                f"its dtype {code!r} contains Python objects, which joblib writes as a nested "
                "pickle that this scan reads as part of the outer one",
            )
        match = _NUMERIC_CODE.fullmatch(code)
        if match is None:
            return cls(code, 0, False, f"its dtype {code!r} is not a numeric type")
        numeric, datetime = match.groups()
        itemsize = 8 if datetime else int(numeric[1:])
        return cls(code, itemsize, bool(datetime))

    def build(self, state: object) -> None:
        """Apply a BUILD, accepting only the state that numpy writes for the type.

        A dtype's state also sets its flags, fields and subarray: a float64
        given the flags of an object dtype reports ``hasobject``, and joblib
        then reads a nested pickle instead of raw bytes.
        """
        if self.problem or _plain_dtype_state(state, self.datetime):
            return
        self.problem = (
            f"its dtype {self.code!r} was given a state other than the plain one numpy "
            "writes, which can add fields, subarrays or object elements"
        )


def _plain_dtype_state(state: object, datetime: bool) -> bool:
    # (version, byte order, subarray, names, fields, elsize, alignment,
    # flags), plus the unit metadata for datetime and timedelta types.
    if type(state) is not tuple or len(state) != (9 if datetime else 8):
        return False
    return (
        _is_int(state[0], 4 if datetime else 3)
        and _text(state[1]) in _BYTE_ORDERS
        and state[2] is NONE
        and state[3] is NONE
        and state[4] is NONE
        and _is_int(state[5], -1)
        and _is_int(state[6], -1)
        and _is_int(state[7], 0)
    )


class ArrayWrapper:
    """A NumpyArrayWrapper instance and the attributes its BUILDs set.

    ``problem`` is empty while every attribute is known. Otherwise it is the
    reason why the scan cannot size the wrapper's array.
    """

    __slots__ = ("attributes", "problem")
    description = "a joblib NumpyArrayWrapper"

    def __init__(self, problem: str = "") -> None:
        self.attributes: dict[str, object] = {}
        self.problem = problem

    def build(self, state: object) -> None:
        """Merge a BUILD's state into the attributes, as pickle's load_build does."""
        if self.problem or _is_empty(state):
            return
        if not isinstance(state, StateDict):
            self.problem = "its BUILD state is not a dict that the scan tracked"
        elif not state.resolved:
            self.problem = (
                f"its BUILD state has keys that are not strings, or more than {_MAX_STATE_KEYS}"
            )
        else:
            self.attributes.update(state.entries)


def creates_empty_wrapper(role: str, arg_roles: Sequence[str]) -> bool:
    """Tell whether a copyreg helper with role ``role`` makes an empty wrapper.

    ``arg_roles`` are the roles of the helper's leading arguments.
    copyreg.__newobj__ and __newobj_ex__ call cls.__new__, and
    _reconstructor(cls, object, state) calls object.__new__(cls), so neither
    runs __init__.
    """
    if not arg_roles or arg_roles[0] != WRAPPER:
        return False
    if role == NEWOBJ_HELPER:
        return True
    return role == RECONSTRUCTOR and len(arg_roles) > 1 and arg_roles[1] == BASE_OBJECT


@dataclass(frozen=True, slots=True)
class ArrayLayout:
    """The bytes that joblib reads after a wrapper's BUILD."""

    # A padding-length byte and that many padding bytes come first.
    padded: bool
    # Bytes of array data after the padding.
    size: int


def array_layout(wrapper: ArrayWrapper, subclass_role: str) -> ArrayLayout | str:
    """Size the data that joblib reads for ``wrapper``, or return why it cannot be sized.

    ``subclass_role`` is the role of the global in the ``subclass``
    attribute. NumPy before 2.0 instantiates any other class there, which
    runs that class's code.
    """
    if wrapper.problem:
        return wrapper.problem
    attributes = wrapper.attributes
    unknown = sorted(set(attributes) - _ATTRIBUTES)
    if unknown:
        return f"its state sets the attribute {unknown[0]!r}, which joblib's wrapper does not have"
    missing = [name for name in _REQUIRED if name not in attributes]
    if missing:
        return f"its state does not set the attribute {missing[0]!r}"
    if subclass_role != ARRAY_CLASS:
        return "its subclass is not numpy.ndarray, numpy.memmap or numpy.matrix"

    # Bounding each dimension first keeps the product cheap: INT opcodes
    # can carry integers of thousands of digits.
    shape = attributes["shape"]
    if type(shape) is not tuple or not all(
        type(n) is int and 0 <= n < _MAX_ARRAY_BYTES for n in shape
    ):
        return "its shape is not a tuple of int64 sizes that the scan kept"
    dtype = attributes["dtype"]
    if not isinstance(dtype, Dtype):
        return "its dtype is not a numpy.dtype that the scan rebuilt"
    if dtype.problem:
        return dtype.problem
    if _text(attributes["order"]) not in ("C", "F"):
        return "its order is not 'C' or 'F'"
    if type(attributes["allow_mmap"]) is not bool:
        return "its allow_mmap is not True or False"

    alignment = attributes.get("numpy_array_alignment_bytes", NONE)
    if alignment is not NONE and type(alignment) is not int:
        return "its numpy_array_alignment_bytes is neither None nor an integer"
    size = math.prod(shape) * dtype.itemsize
    if size >= _MAX_ARRAY_BYTES:
        return f"its shape {shape} needs more bytes than joblib's int64 count can express"
    return ArrayLayout(padded=alignment is not NONE, size=size)
