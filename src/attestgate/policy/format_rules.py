"""Allowed, denied and signature-only formats, checked against each file's detected format.

Formats are the names the identify step reports for each top-level file of
the artifact (the ``format`` of each entry in the record's ``artifact.files``),
or one of the groups below. Members inside containers are not listed there:
a pickle inside a zip is judged by the zip and pickle scanners' findings.
Empty files are never judged, since they carry nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attestgate.findings import Severity
from attestgate.identify.formats import Format
from attestgate.policy import catalogue
from attestgate.policy.facts import PolicyFact, policy_finding
from attestgate.policy.model import BY_FORMAT
from attestgate.policy.profile import Profile

GROUPS: dict[str, frozenset[str]] = {
    # Formats whose loading unpickles: arbitrary code runs unless the
    # loader restricts the globals it resolves.
    "pickle-based": frozenset(
        {
            Format.PICKLE.value,
            Format.MAYBE_PICKLE.value,
            Format.PYTORCH_LEGACY.value,
            Format.PYTORCH_ZIP.value,
            Format.TORCHSCRIPT.value,
        }
    ),
    "archives": frozenset(
        {
            Format.ZIP.value,
            Format.TAR.value,
            Format.SEVENZIP.value,
            Format.GZIP.value,
            Format.BZIP2.value,
            Format.XZ.value,
            Format.ZSTD.value,
            Format.COMPRESSED.value,
            Format.NUMPY_NPZ.value,
            Format.WHEEL.value,
        }
    ),
    "code": frozenset(
        {Format.PYTHON.value, Format.NATIVE_EXECUTABLE.value, Format.TORCHSCRIPT.value}
    ),
}
FORMAT_NAMES = frozenset(f.value for f in Format)
MAX_LISTED_FILES = 10


def expand(names: Iterable[Any]) -> frozenset[str]:
    """Return the format names that ``names`` stands for, with groups expanded."""
    out: set[str] = set()
    for name in names:
        out |= GROUPS.get(str(name), frozenset({str(name)}))
    return frozenset(out)


def files_by_format(artifact: Mapping[str, Any] | None) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for entry in (artifact or {}).get("files") or []:
        if isinstance(entry, Mapping):
            fmt = str(entry.get("format", Format.UNKNOWN.value))
            if fmt != Format.EMPTY.value:
                grouped.setdefault(fmt, []).append(str(entry.get("path", "")))
    return grouped


def check_formats(
    profile: Profile, artifact: Mapping[str, Any] | None, signed: bool
) -> list[PolicyFact]:
    """Return one fact per format present that the stage denies, does not allow or needs signed."""
    section = profile.formats
    if not section:
        return []
    deny = expand(section["deny"].value) if "deny" in section else frozenset()
    allow = expand(section["allow"].value) if "allow" in section else None
    needs_signature = expand(section["signed"].value) if "signed" in section else frozenset()
    action = str(section["action"].value) if "action" in section else "block"
    scope = f"stage {profile.stage} (tier {profile.tier})"

    facts: list[PolicyFact] = []
    for fmt, files in sorted(files_by_format(artifact).items()):
        listed = ", ".join(files[:MAX_LISTED_FILES])
        more = f" and {len(files) - MAX_LISTED_FILES} more" if len(files) > MAX_LISTED_FILES else ""
        where = files[0]
        if fmt in deny:
            message = f"{scope} denies the format {fmt}, found in {listed}{more}"
            remediation = (
                f"Convert the weights to a format this stage accepts (safetensors for tensors) "
                f"and admit the converted artifact; {fmt} is not accepted here."
            )
            finding = policy_finding(
                catalogue.FORMAT_DENIED, Severity.HIGH, where, message, remediation, format=fmt
            )
            facts.append(PolicyFact(finding, section["deny"].path, BY_FORMAT, action))
        elif fmt in needs_signature:
            if signed:
                continue
            message = (
                f"{scope} accepts the format {fmt} only with a valid signature from a trusted "
                f"signer, and {listed}{more} has none"
            )
            remediation = (
                "Ask the producer to sign this exact artifact with a key or identity the stage "
                "trusts, or convert the weights to a format that needs no signature."
            )
            finding = policy_finding(
                catalogue.FORMAT_UNSIGNED, Severity.MEDIUM, where, message, remediation, format=fmt
            )
            facts.append(PolicyFact(finding, section["signed"].path, BY_FORMAT))
        elif allow is not None and fmt not in allow:
            message = f"{scope} does not list the format {fmt} as allowed, found in {listed}{more}"
            remediation = (
                f"Remove or convert the {fmt} files, or ask the policy owners to allow {fmt} "
                "for this stage."
            )
            finding = policy_finding(
                catalogue.FORMAT_NOT_ALLOWED, Severity.HIGH, where, message, remediation, format=fmt
            )
            facts.append(PolicyFact(finding, section["allow"].path, BY_FORMAT, action))
    return facts
