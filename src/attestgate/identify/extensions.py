"""Compare a file's name with what its bytes are.

Loaders pick a deserializer from the file name, so a pickle renamed to
``model.safetensors`` is a disguise: a person or tool trusting the name would
treat code as data. The gate always scans by content, and reports the
disagreement so the policy can weigh it.
"""

from __future__ import annotations

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format

_PICKLE_FAMILY = frozenset(
    {
        Format.PICKLE,
        Format.MAYBE_PICKLE,
        Format.PYTORCH_LEGACY,
        Format.PYTORCH_ZIP,
        Format.TORCHSCRIPT,
        Format.NUMPY,  # an object array embeds a pickle
    }
)
_ZIP_FAMILY = frozenset(
    {
        Format.ZIP,
        Format.PYTORCH_ZIP,
        Format.TORCHSCRIPT,
        Format.KERAS,
        Format.NUMPY_NPZ,
        Format.WHEEL,
    }
)

# Suffix -> formats the bytes may have. Suffixes that many formats share
# (".bin", ".txt", ".dat") are left out: they promise nothing.
EXPECTED: dict[str, frozenset[Format]] = {
    ".safetensors": frozenset({Format.SAFETENSORS}),
    ".gguf": frozenset({Format.GGUF}),
    ".onnx": frozenset({Format.ONNX}),
    ".npy": frozenset({Format.NUMPY}),
    ".npz": _ZIP_FAMILY,
    ".json": frozenset({Format.JSON, Format.JSON_LINES}),
    ".jsonl": frozenset({Format.JSON_LINES, Format.JSON}),
    ".parquet": frozenset({Format.PARQUET}),
    ".arrow": frozenset({Format.ARROW}),
    ".h5": frozenset({Format.HDF5}),
    ".hdf5": frozenset({Format.HDF5}),
    ".keras": _ZIP_FAMILY,
    ".pt": _PICKLE_FAMILY | _ZIP_FAMILY,
    ".pth": _PICKLE_FAMILY | _ZIP_FAMILY,
    ".ckpt": _PICKLE_FAMILY | _ZIP_FAMILY,
    ".pkl": _PICKLE_FAMILY,
    ".pickle": _PICKLE_FAMILY,
    ".joblib": _PICKLE_FAMILY
    | frozenset({Format.GZIP, Format.BZIP2, Format.XZ, Format.ZSTD, Format.COMPRESSED}),
    ".zip": _ZIP_FAMILY,
    ".whl": _ZIP_FAMILY,
    ".tar": frozenset({Format.TAR}),
    ".gz": frozenset({Format.GZIP}),
    ".tgz": frozenset({Format.GZIP}),
    ".bz2": frozenset({Format.BZIP2}),
    ".xz": frozenset({Format.XZ}),
    ".zst": frozenset({Format.ZSTD}),
    ".7z": frozenset({Format.SEVENZIP}),
}

# Suffixes whose loaders never run code; pickle bytes behind one is a disguise.
_SAFE_SUFFIXES = frozenset(
    {".safetensors", ".gguf", ".onnx", ".json", ".jsonl", ".parquet", ".arrow", ".h5", ".hdf5"}
)


def check_extension(path: str, fmt: Format) -> Finding | None:
    """Return a finding when ``path``'s suffix promises a format its bytes are not."""
    name = path.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    if dot <= 0:
        return None
    suffix = name[dot:]
    expected = EXPECTED.get(suffix)
    if expected is None or fmt in expected or fmt is Format.EMPTY:
        return None
    disguised_code = suffix in _SAFE_SUFFIXES and fmt in _PICKLE_FAMILY
    return Finding(
        "identify.extension-mismatch",
        Severity.HIGH if disguised_code else Severity.MEDIUM,
        path,
        f"{path} is named like {suffix} but its bytes are {fmt.value}"
        + ("; a loader that trusts the name would treat code as data" if disguised_code else ""),
        f"Rename the file to match its content ({fmt.value}), or replace it with a real "
        f"{suffix} export from the producer.",
        check="identify",
        details={"suffix": suffix, "detected": fmt.value},
    )
