"""attestgate: an attestation-aware promotion gate for machine-learning artifacts.

The command line is a thin layer over this API::

    from pathlib import Path
    import attestgate

    admission = attestgate.admit(Path("model/"), stage="deployment", home=Path("state"))
    print(admission.action, admission.record["reasons"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from attestgate._version import __version__

if TYPE_CHECKING:
    from attestgate.audit import AuditLog, AuditRecord, VerifyResult
    from attestgate.errors import (
        AttestgateError,
        AuditIntegrityError,
        ConfigurationError,
        PolicyError,
        ScanError,
        StorageError,
        UsageError,
    )
    from attestgate.findings import Finding, Severity
    from attestgate.pipeline import Admission, Inspection, admit, inspect
    from attestgate.policy import (
        Action,
        Decision,
        Policy,
        evaluate,
        load_default_policy,
        load_policy,
    )

# Public name -> module. Loaded on first access so that `import attestgate`
# (and with it every CLI call) does not pay for SQLAlchemy and the scanners.
_EXPORTS = {
    "Action": "attestgate.policy",
    "Admission": "attestgate.pipeline",
    "AttestgateError": "attestgate.errors",
    "AuditIntegrityError": "attestgate.errors",
    "AuditLog": "attestgate.audit",
    "AuditRecord": "attestgate.audit",
    "ConfigurationError": "attestgate.errors",
    "Decision": "attestgate.policy",
    "Finding": "attestgate.findings",
    "Inspection": "attestgate.pipeline",
    "Policy": "attestgate.policy",
    "PolicyError": "attestgate.errors",
    "ScanError": "attestgate.errors",
    "Severity": "attestgate.findings",
    "StorageError": "attestgate.errors",
    "UsageError": "attestgate.errors",
    "VerifyResult": "attestgate.audit",
    "admit": "attestgate.pipeline",
    "evaluate": "attestgate.policy",
    "inspect": "attestgate.pipeline",
    "load_default_policy": "attestgate.policy",
    "load_policy": "attestgate.policy",
}

__all__ = [
    "Action",
    "Admission",
    "AttestgateError",
    "AuditIntegrityError",
    "AuditLog",
    "AuditRecord",
    "ConfigurationError",
    "Decision",
    "Finding",
    "Inspection",
    "Policy",
    "PolicyError",
    "ScanError",
    "Severity",
    "StorageError",
    "UsageError",
    "VerifyResult",
    "__version__",
    "admit",
    "evaluate",
    "inspect",
    "load_default_policy",
    "load_policy",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attestgate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
