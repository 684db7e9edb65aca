"""The append-only, hash-chained audit log."""

from attestgate.audit.log import AuditLog, AuditRecord, VerifyResult

__all__ = ["AuditLog", "AuditRecord", "VerifyResult"]
