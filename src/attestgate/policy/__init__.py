"""The policy: the only place where attestgate decides."""

from attestgate.policy.engine import (
    STAGES,
    Action,
    Decision,
    Policy,
    Reason,
    evaluate,
    load_default_policy,
    load_policy,
)

__all__ = [
    "STAGES",
    "Action",
    "Decision",
    "Policy",
    "Reason",
    "evaluate",
    "load_default_policy",
    "load_policy",
]
