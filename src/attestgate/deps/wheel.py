"""Checks for the members of a wheel, called by the zip scanner.

A wheel is a zip with one ``{name}-{version}.dist-info`` folder that contains
``WHEEL`` (format version, ``Root-Is-Purelib``, tags) and ``RECORD`` (a CSV
of every file with its hash and size). Installers such as pip do not compare
files with RECORD, so the gate does:

1. Find the dist-info folder, read ``WHEEL`` and the tags of the file name.
2. Read every member once: compare its hash and size with RECORD, look for
   native code by name and by magic bytes, and note ``.pth`` files.
3. Report members missing from RECORD, RECORD entries missing from the
   wheel, and mismatched hashes or sizes (``deps.record-mismatch``).
4. Report native code in a wheel whose tags claim "any platform"
   (``deps.native-in-pure-wheel``) and ``.pth`` files (``deps.pth-file``).
5. Check the wheel's own name and version, and its ``Requires-Dist``
   names, with the dependency-name checks (typosquats, OSV advisories,
   internal names).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import logging
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, parse_tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from attestgate.deps.checks import (
    FindingFactory,
    check_configuration,
    check_names,
    finding_factory,
)
from attestgate.deps.config import load_config
from attestgate.deps.model import MAX_LISTED, Dependency, SourceKind, listed, normalize_name
from attestgate.errors import ScanError
from attestgate.findings import Finding, Severity
from attestgate.scanners.interface import ScanContext

logger = logging.getLogger(__name__)

MAX_METADATA_BYTES = 1024 * 1024
MAX_RECORD_BYTES = 64 * 1024 * 1024

_DIST_INFO_WHEEL = re.compile(r"^([^/]+)\.dist-info/WHEEL$")
_SHARED_LIBRARY = re.compile(r"\.(so(\.\d+)*|pyd|dylib|dll|exe)$", re.IGNORECASE)
_MACHO = {b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe"}
_WEAK_HASHES = {"md5", "sha1"}

# Windows launcher templates that pip, setuptools and distlib ship inside
# their pure-Python wheels to build console-script executables.
_KNOWN_LAUNCHERS = {
    "pip": re.compile(r"^pip/_vendor/distlib/[tw](32|64|64-arm)\.exe$"),
    "distlib": re.compile(r"^distlib/[tw](32|64|64-arm)\.exe$"),
    "setuptools": re.compile(r"^setuptools/(cli|gui)(-32|-64|-arm64)?\.exe$"),
}

# Exceptions that read_member raises for a member it cannot return.
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    ScanError,
    zipfile.BadZipFile,
    zlib.error,
)

ReadMember = Callable[[str], bytes]


@dataclass
class _Survey:
    """Results of reading every member once."""

    mismatches: list[str] = field(default_factory=list)
    native: list[tuple[str, str]] = field(default_factory=list)
    pth: list[tuple[str, bool]] = field(default_factory=list)
    incomplete: bool = False


def native_kind(name: str, data: bytes) -> str | None:
    """Return what kind of native code a member is, or None."""
    head = data[:8]
    if head.startswith(b"\x7fELF"):
        return "ELF binary"
    if head[:4] in _MACHO:
        return "Mach-O binary"
    # A Java class file shares the universal-binary magic; its next field
    # (class file version, 45 or more) is larger than any architecture count.
    universal = head[:4] in {b"\xca\xfe\xba\xbe", b"\xca\xfe\xba\xbf"} and len(head) == 8
    if universal and int.from_bytes(head[4:8], "big") < 45:
        return "Mach-O universal binary"
    if head[:2] == b"MZ" and len(data) >= 64:
        offset = int.from_bytes(data[60:64], "little")
        if data[offset : offset + 4] == b"PE\0\0":
            return "PE (Windows) binary"
    if _SHARED_LIBRARY.search(name):
        return "native library or executable by its file name"
    return None


def _pth_runs_code(data: bytes) -> bool:
    # site.py executes a .pth line that starts with "import" followed by a
    # space or tab; every other line only adds a path.
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.startswith(("import ", "import\t")):
            return True
    return False


def _is_startup_pth(name: str) -> bool:
    """Tell whether a member installs as a ``.pth`` file in site-packages itself.

    site.py reads ``.pth`` files only at the top of a site directory, so a
    PyTorch checkpoint named ``weights.pth`` inside a package is not one.
    """
    if not name.lower().endswith(".pth"):
        return False
    parts = name.split("/")
    if len(parts) == 1:
        return True
    return len(parts) == 3 and parts[0].endswith(".data") and parts[1] in {"purelib", "platlib"}


def _parse_record(data: bytes) -> dict[str, tuple[str, str]]:
    """Map each RECORD path to its (hash, size) columns."""
    rows: dict[str, tuple[str, str]] = {}
    text = data.decode("utf-8", errors="replace")
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        path = row[0]
        digest = row[1] if len(row) > 1 else ""
        size = row[2] if len(row) > 2 else ""
        rows[path] = (digest, size)
    return rows


def _hash_problem(data: bytes, digest: str, size: str) -> str:
    """Return why a member does not match its RECORD row, or ""."""
    algorithm, _, expected = digest.partition("=")
    algorithm = algorithm.lower()
    if not expected:
        return "RECORD lists it without a hash"
    if algorithm in _WEAK_HASHES or algorithm not in hashlib.algorithms_guaranteed:
        return f"RECORD uses the unsupported hash algorithm {algorithm!r}"
    try:
        padded = expected + "=" * (-len(expected) % 4)
        recorded = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return "RECORD has an invalid hash value"
    if hashlib.new(algorithm, data).digest() != recorded:
        return f"its {algorithm} hash differs from RECORD"
    if size and size.strip() != str(len(data)):
        return f"its size {len(data)} differs from RECORD's {size.strip()}"
    return ""


def _wheel_tags(wheel_text: str, file_name: str) -> tuple[list[set[Tag]], bool | None]:
    """Return the tag sets that WHEEL and the file name declare, and Root-Is-Purelib."""
    declared: set[Tag] = set()
    purelib: bool | None = None
    for line in wheel_text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "tag":
            try:
                declared |= parse_tag(value)
            except ValueError:
                logger.debug("ignoring the invalid wheel tag %r", value)
        elif key == "root-is-purelib":
            purelib = value.lower() == "true"
    tag_sets = [declared] if declared else []
    if file_name.endswith(".whl"):
        try:
            tag_sets.append(set(parse_wheel_filename(file_name)[3]))
        except InvalidWheelFilename:
            logger.debug("the file name %s is not a valid wheel name", file_name)
    return tag_sets, purelib


def _read_small(read_member: ReadMember, name: str, bound: int) -> bytes | None:
    try:
        data = read_member(name)
    except _READ_ERRORS as exc:
        logger.debug("cannot read %s: %s", name, exc)
        return None
    return data if len(data) <= bound else None


def _survey(
    names: list[str],
    read_member: ReadMember,
    record: dict[str, tuple[str, str]],
    dist_info: str,
    ctx: ScanContext,
) -> _Survey:
    survey = _Survey()
    exempt = {f"{dist_info}/RECORD", f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s"}
    members = [n for n in names if not n.endswith("/")]
    for name in members:
        if ctx.expired():
            survey.incomplete = True
            break
        try:
            data = read_member(name)
        except _READ_ERRORS as exc:
            survey.mismatches.append(f"{name}: could not be read ({exc})")
            continue
        if name not in exempt:
            row = record.get(name)
            problem = "it is not listed in RECORD" if row is None else _hash_problem(data, *row)
            if problem:
                survey.mismatches.append(f"{name}: {problem}")
        kind = native_kind(name, data)
        if kind is not None:
            survey.native.append((name, kind))
        if _is_startup_pth(name):
            survey.pth.append((name, _pth_runs_code(data)))
    present = set(members)
    survey.mismatches += [
        f"{path}: listed in RECORD but missing from the wheel"
        for path in record
        if path not in present and path not in exempt
    ]
    return survey


def scan_wheel_members(
    names: list[str], read_member: ReadMember, ctx: ScanContext
) -> list[Finding]:
    """Check a wheel's members; ``names`` lists them, ``read_member`` returns one's bytes.

    ``read_member`` may raise OSError, ValueError, EOFError, ScanError,
    zipfile.BadZipFile or zlib.error for a member it cannot return; that
    member is reported as unreadable. Returns [] when no ``*.dist-info/WHEEL``
    member exists.
    """
    make = finding_factory(ctx.file)
    dist_infos = sorted({m.group(1) for n in names if (m := _DIST_INFO_WHEEL.match(n))})
    if not dist_infos:
        return []
    if len(dist_infos) > 1:
        return [
            make(
                "deps.malformed",
                Severity.MEDIUM,
                f"the wheel has {len(dist_infos)} .dist-info folders ({listed(dist_infos)}); "
                "a wheel has exactly one, so installers may disagree on what it contains",
                "Rebuild the wheel with a standard build backend and admit that wheel.",
                dist_info=dist_infos[:MAX_LISTED],
            )
        ]
    dist_info = f"{dist_infos[0]}.dist-info"
    wheel_data = _read_small(read_member, f"{dist_info}/WHEEL", MAX_METADATA_BYTES) or b""
    file_name = ctx.file.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    tag_sets, purelib = _wheel_tags(wheel_data.decode("utf-8", errors="replace"), file_name)

    record_data = _read_small(read_member, f"{dist_info}/RECORD", MAX_RECORD_BYTES)
    record = _parse_record(record_data) if record_data is not None else {}
    survey = _survey(names, read_member, record, dist_info, ctx)
    if record_data is None:
        survey.mismatches.insert(0, f"{dist_info}/RECORD: missing, unreadable or too large")

    distribution, _, version = dist_infos[0].rpartition("-")
    findings = _record_findings(survey, make)
    findings += _native_findings(survey, tag_sets, purelib, normalize_name(distribution), ctx)
    findings += _pth_findings(survey, ctx)
    findings += _name_findings(distribution, version, dist_info, read_member, ctx)
    return findings


def _record_findings(survey: _Survey, make: FindingFactory) -> list[Finding]:
    findings: list[Finding] = []
    if survey.mismatches:
        findings.append(
            make(
                "deps.record-mismatch",
                Severity.HIGH,
                f"{len(survey.mismatches)} wheel member(s) do not match the RECORD manifest "
                f"({'; '.join(survey.mismatches[:3])}), so files were added or changed "
                "after the wheel was built",
                "Do not install this wheel. Obtain the wheel again from its publisher, "
                "compare its sha256 with the index's published hash, and admit that copy.",
                problems=survey.mismatches[:MAX_LISTED],
            )
        )
    if survey.incomplete:
        findings.append(
            make(
                "deps.wheel-check-incomplete",
                Severity.MEDIUM,
                "the time budget ran out before every wheel member was compared with RECORD",
                "Scan the wheel again with a larger time budget, or review it by hand.",
            )
        )
    return findings


def _native_findings(
    survey: _Survey,
    tag_sets: list[set[Tag]],
    purelib: bool | None,
    distribution: str,
    ctx: ScanContext,
) -> list[Finding]:
    if not survey.native:
        return []
    # Installers choose a wheel by its file name, so either WHEEL or the file
    # name claiming "any platform" is enough.
    any_platform = any(tags and all(t.platform == "any" for t in tags) for tags in tag_sets)
    tags = set().union(*tag_sets)
    if not any_platform and not purelib:
        return []
    launcher = _KNOWN_LAUNCHERS.get(distribution)
    findings: list[Finding] = []
    for name, kind in survey.native[:MAX_LISTED]:
        where = ctx.member(name, None).file
        tag_text = ", ".join(sorted(str(t) for t in tags)[:5]) or "none"
        if launcher is not None and launcher.match(name):
            severity = Severity.INFO
            reason = f"it is a Windows launcher template that {distribution} ships by design"
        elif any_platform:
            severity = Severity.HIGH
            reason = f"the wheel's tags ({tag_text}) claim it runs on any platform"
        else:
            # Platform-tagged wheels carry native code by design; the
            # Root-Is-Purelib flag then only chooses the install folder.
            severity = Severity.LOW
            reason = (
                f"WHEEL says Root-Is-Purelib: true while the tags ({tag_text}) are "
                "platform-specific"
            )
        findings.append(
            Finding(
                rule="deps.native-in-pure-wheel",
                severity=severity,
                file=where,
                message=f"{name} is native code ({kind}) and {reason}",
                remediation=(
                    "Build the wheel from reviewed sources with a platform tag that matches "
                    "its native code, or remove the binary; an unexpected binary in a "
                    "pure-Python wheel is a common way to hide a payload."
                ),
                check="deps",
                details={"member": name, "kind": kind, "tags": sorted(str(t) for t in tags)[:20]},
            )
        )
    return findings


def _pth_findings(survey: _Survey, ctx: ScanContext) -> list[Finding]:
    findings: list[Finding] = []
    for name, runs_code in survey.pth[:MAX_LISTED]:
        if runs_code:
            severity = Severity.HIGH
            effect = "it has an import line, which Python runs at every interpreter start"
        else:
            severity = Severity.MEDIUM
            effect = "it adds folders to sys.path at every interpreter start"
        findings.append(
            Finding(
                rule="deps.pth-file",
                severity=severity,
                file=ctx.member(name, None).file,
                message=f"the wheel installs the path configuration file {name}, and {effect}",
                remediation=(
                    "Review the .pth file's lines. Code that runs at interpreter start "
                    "affects every Python process in the environment; if it is expected "
                    "(setuptools ships distutils-precedence.pth), record an exception for "
                    "this wheel's digest."
                ),
                check="deps",
                details={"member": name, "runs_code": runs_code},
            )
        )
    return findings


def _requires_dist(metadata: bytes, origin: str) -> list[Dependency]:
    dependencies: list[Dependency] = []
    for line in metadata.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        key, _, value = line.partition(":")
        if key.strip().lower() != "requires-dist":
            continue
        try:
            requirement = Requirement(value.strip())
        except InvalidRequirement:
            continue
        dependencies.append(
            Dependency(
                name=normalize_name(requirement.name),
                display_name=requirement.name,
                source=SourceKind.INDEX,
                specifier=str(requirement.specifier),
                origin=origin,
            )
        )
    return dependencies


def _name_findings(
    distribution: str, version: str, dist_info: str, read_member: ReadMember, ctx: ScanContext
) -> list[Finding]:
    config = load_config()
    make = finding_factory(ctx.file)
    own = Dependency(
        name=normalize_name(distribution),
        display_name=distribution,
        source=SourceKind.INDEX,
        version=version or None,
        origin=ctx.file,
    )
    findings = check_configuration(config, make)
    findings += check_names([own], make, config, expired=ctx.expired)
    metadata = _read_small(read_member, f"{dist_info}/METADATA", MAX_METADATA_BYTES)
    if metadata is not None:
        requires = _requires_dist(metadata, ctx.member(f"{dist_info}/METADATA", None).file)
        findings += check_names(requires, make, config, report_unchecked=False, expired=ctx.expired)
    return findings
