"""attestgate: an attestation-aware promotion gate for machine-learning artifacts.

The command line is a thin layer over this API::

    from pathlib import Path
    import attestgate

    admission = attestgate.admit(Path("model/"), stage="deployment", home=Path("state"))
    print(admission.action, admission.record["reasons"])
"""

from attestgate._version import __version__
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
