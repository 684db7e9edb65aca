"""The error tree.

::

    AttestgateError
    ├── UsageError            a request the caller must correct (bad path, option)
    ├── ConfigurationError    an invalid policy or setting
    │   └── PolicyError
    ├── StorageError          the state directory or database failed
    │   └── AuditIntegrityError
    └── ScanError             a check could not finish (turned into a finding)

Every error carries a ``hint`` that tells the reader what to do next.
"""

from __future__ import annotations


class AttestgateError(Exception):
    """Root of every error attestgate raises on purpose."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class UsageError(AttestgateError):
    """The request cannot be carried out as given, such as a missing path."""


class ConfigurationError(AttestgateError):
    """A configuration value is invalid."""


class PolicyError(ConfigurationError):
    """A policy document is invalid; the message names the field."""


class StorageError(AttestgateError):
    """The state directory or its database could not be read or written."""


class AuditIntegrityError(StorageError):
    """The audit log's hash chain does not verify."""


class ScanError(AttestgateError):
    """A check could not finish on its input."""
