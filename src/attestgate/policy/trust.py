"""The trust configuration a policy gives a stage: its own signers and the policy-wide ones."""

from __future__ import annotations

from pathlib import Path

from attestgate.evidence import TrustConfig
from attestgate.policy.model import Policy
from attestgate.policy.profile import effective_profile


def base_dir(policy: Policy) -> Path:
    """Return the directory that relative key and certificate paths in the policy start from."""
    return Path.cwd() if policy.source.startswith("builtin:") else Path(policy.source).parent


def trust_config(policy: Policy, stage: str | None = None, tier: str | None = None) -> TrustConfig:
    """Return the signers trusted for ``stage`` and ``tier``: the ``trust`` section and theirs.

    Without a stage, only the policy-wide ``trust`` section counts.
    """
    base = base_dir(policy)
    config = TrustConfig()
    section = policy.document.get("trust")
    if isinstance(section, dict):
        config = config.merge(TrustConfig.from_mapping(section, base))
    if stage is not None:
        profile = effective_profile(policy.document, stage, tier or policy.default_tier)
        if profile.signers is not None:
            config = config.merge(TrustConfig.from_mapping(profile.signers.value, base))
    return config
