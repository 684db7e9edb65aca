"""Discovery of dynamic plug-ins through the ``attestgate.dynamic`` entry-point group.

A package provides a plug-in by naming its class in its metadata::

    [project.entry-points."attestgate.dynamic"]
    acme-ebpf = "acme_attestgate.plugin:EbpfPlugin"

The entry point's name is the name that ``attestgate admit --dynamic NAME``
and the policy use. Loading a plug-in imports its package: plug-ins are
code installed next to the gate, never artifact content.
"""

from __future__ import annotations

import importlib.metadata
import logging

from attestgate.dynamic.interface import DynamicPlugin
from attestgate.errors import AttestgateError, UsageError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "attestgate.dynamic"

# Plug-ins that ship with attestgate. They are found through the entry
# points like any other; this table covers a source checkout whose installed
# metadata predates them.
BUILTIN_PLUGINS = {"sandbox": "attestgate.dynamic.sandbox:SandboxPlugin"}


class PluginLoadError(AttestgateError):
    """An installed plug-in could not be imported or constructed."""


def discover() -> dict[str, importlib.metadata.EntryPoint]:
    """Return the installed plug-ins by name.

    When two distributions register the same name, the one from the
    attestgate distribution wins and a warning names the other.
    """
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        seen = found.get(entry.name)
        keep = entry if seen is None or not _is_builtin(seen) else seen
        if seen is not None:
            logger.warning(
                "dynamic plug-in %s is registered twice (%s and %s); using %s",
                entry.name,
                seen.value,
                entry.value,
                keep.value,
            )
        found[entry.name] = keep
    for name, value in BUILTIN_PLUGINS.items():
        if name not in found:
            found[name] = importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)
    return found


def _is_builtin(entry: importlib.metadata.EntryPoint) -> bool:
    dist = entry.dist
    return dist is not None and dist.name == "attestgate"


def plugin_names() -> list[str]:
    return sorted(discover())


def load_plugin(name: str) -> DynamicPlugin:
    """Import and construct the plug-in registered as ``name``.

    Raises :class:`UsageError` for a name that no installed package registers and
    :class:`PluginLoadError` for a plug-in that fails to import or construct.
    """
    entry = discover().get(name)
    if entry is None:
        raise UsageError(
            f"unknown dynamic plug-in {name!r}",
            hint=f"installed dynamic plug-ins: {', '.join(plugin_names()) or '(none)'}",
        )
    try:
        loaded = entry.load()
        plugin = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:  # a broken plug-in is reported, never a crash of the gate
        raise PluginLoadError(
            f"dynamic plug-in {name} ({entry.value}) could not be loaded: "
            f"{type(exc).__name__}: {exc}",
            hint="reinstall the package that provides it, or run without it",
        ) from exc
    if not isinstance(plugin, DynamicPlugin):
        raise PluginLoadError(
            f"dynamic plug-in {name} ({entry.value}) is a {type(plugin).__name__}, "
            "not a DynamicPlugin",
            hint="the entry point must name a DynamicPlugin subclass",
        )
    return plugin
