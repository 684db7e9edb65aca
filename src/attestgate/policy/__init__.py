"""The policy: the only place where attestgate decides.

::

    from attestgate.policy import evaluate, load_policy

    policy = load_policy(Path("policy.yaml"))
    decision = evaluate(policy, "deployment", findings, tier="critical", evidence=evidence)
    decision.action, decision.reasons

The policy language is described in ``docs/policy.md``; its JSON Schema is
``attestgate/schemas/policy.v2.json``.
"""

from attestgate.policy.engine import annotate_record, evaluate, map_finding
from attestgate.policy.loader import (
    PolicyIssue,
    PolicyValidationError,
    default_policy_bytes,
    load_default_policy,
    load_policy,
    parse_policy,
)
from attestgate.policy.model import (
    TIERS,
    Action,
    Decision,
    Policy,
    Reason,
    TierChoice,
)
from attestgate.stages import STAGES

__all__ = [
    "STAGES",
    "TIERS",
    "Action",
    "Decision",
    "Policy",
    "PolicyIssue",
    "PolicyValidationError",
    "Reason",
    "TierChoice",
    "annotate_record",
    "default_policy_bytes",
    "evaluate",
    "load_default_policy",
    "load_policy",
    "map_finding",
    "parse_policy",
]
