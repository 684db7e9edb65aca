"""Dynamic evidence: plug-ins that observe an artifact while it loads, and their signals.

The gate itself never loads artifact content. The built-in ``sandbox``
plug-in loads it in an isolated, disposable child process. The importers
read the events that Falco or Tetragon recorded while it was loaded
elsewhere.
"""

from attestgate.dynamic.interface import (
    STANDARD_KINDS,
    ArtifactFile,
    ArtifactInput,
    Budget,
    DynamicPlugin,
    KindSpec,
    PluginResult,
    Signal,
    signals_to_findings,
)
from attestgate.dynamic.runner import DynamicReport, PluginSelection, run_dynamic

__all__ = [
    "STANDARD_KINDS",
    "ArtifactFile",
    "ArtifactInput",
    "Budget",
    "DynamicPlugin",
    "DynamicReport",
    "KindSpec",
    "PluginResult",
    "PluginSelection",
    "Signal",
    "run_dynamic",
    "signals_to_findings",
]
