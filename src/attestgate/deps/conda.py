"""A parser for conda ``environment.yml`` files.

``dependencies`` lists conda match specifications (``numpy=1.26.4``,
``conda-forge::pytorch=2.3.1=py3.11_cpu_0``, ``python>=3.10``) and may hold a
``pip:`` list, which conda hands to pip as a requirements file. Conda
entries keep the ``conda`` ecosystem, because their versions are conda
builds, not PyPI releases.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from attestgate.deps.lockfiles import LockFile, LockFileError
from attestgate.deps.model import MAX_DEPS_ENTRIES, Dependency, DependencySet, SourceKind
from attestgate.deps.requirements import parse_requirements_text

_SPEC_NAME = re.compile(r"^\s*([A-Za-z0-9_][A-Za-z0-9_.\-]*)")
# "=1.2.3", "==1.2.3", "=1.2.3=build", or "1.2.3 build" as conda export writes them.
_EXACT = re.compile(r"^(?:==?\s*|\s+)(?P<version>[0-9A-Za-z_.+!]+)(?:[=\s]\S+)?$")

# PyYAML's C parser is much faster on large files; both build only plain
# Python types.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _conda_dependency(spec: str, origin: str) -> Dependency | None:
    channel = ""
    if "::" in spec:
        channel, spec = spec.split("::", 1)
    match = _SPEC_NAME.match(spec)
    if match is None:
        return None
    name = match.group(1)
    rest = spec[match.end() :]
    exact = _EXACT.match(rest) if rest.strip() else None
    return Dependency(
        name=name.lower(),
        display_name=name,
        source=SourceKind.INDEX,
        version=exact.group("version") if exact and "*" not in rest else None,
        specifier=rest.strip(),
        url=channel,
        origin=origin,
        ecosystem="conda",
    )


def parse_environment(data: bytes, origin: str = "") -> LockFile:
    """Parse a conda environment file, including its ``pip:`` section."""
    try:
        document: Any = yaml.load(data, Loader=_LOADER)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise LockFileError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise LockFileError("the document is not a YAML mapping")
    # Conda environment files carry no hashes; the pip section is checked
    # as a requirements file of its own.
    entries = DependencySet(kind="environment.yml", hashes_expected=False)
    result = LockFile(entries)
    channels = document.get("channels")
    for channel in channels if isinstance(channels, list) else []:
        if isinstance(channel, str) and channel.lower().startswith("http://"):
            result.unverified_sources.append(channel)

    items = document.get("dependencies")
    pip_lines: list[str] = []
    for position, item in enumerate(items if isinstance(items, list) else []):
        if position >= MAX_DEPS_ENTRIES:
            entries.truncated = True
            break
        if isinstance(item, dict) and "pip" in item:
            pip_section = item.get("pip")
            if not isinstance(pip_section, list):
                entries.errors.append("the pip section is not a list")
                continue
            pip_lines += [line for line in pip_section if isinstance(line, str)]
            continue
        if not isinstance(item, str):
            entries.errors.append(f"dependency #{position + 1} is not a string")
            continue
        dependency = _conda_dependency(item, origin)
        if dependency is None:
            entries.errors.append(f"dependency {item[:100]!r} is not a conda package spec")
            continue
        entries.dependencies.append(dependency)
    if pip_lines:
        result.pip = parse_requirements_text("\n".join(pip_lines[:MAX_DEPS_ENTRIES]), origin)
    return result
