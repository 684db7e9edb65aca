"""Deployment requirements from the release claims, checked against the stage's limits.

The release claims (the ML-BOM's ``attestgate:release:*`` properties, which
the evidence check copies into each piece's facts) declare network egress
(``none`` or comma-separated destinations), file-system access
(``read-only`` or ``read-write``), GPU access (``none``, ``optional`` or
``required``) and extra Linux capabilities (comma-separated). Every bound
piece that did not fail counts, and their declarations add up.

A stage's ``limits`` list what it permits, and a limit that is not set places
no restriction. Each declared need beyond a limit is an excess, reported by
name. What is both declared and permitted becomes the least-privilege
deployment profile that ``attestgate deploy-profile`` prints.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import Severity
from attestgate.policy import catalogue
from attestgate.policy.facts import PolicyFact, policy_finding
from attestgate.policy.model import BY_LIMIT, DocPath
from attestgate.policy.profile import Profile

MAX_DESTINATIONS = 256
_KEYS = ("egress", "filesystem", "gpu", "capabilities")


@dataclass
class Declared:
    """The deployment requirements the release claims declare."""

    egress: list[str] = field(default_factory=list)
    filesystem: str = "read-only"
    gpu: str = "none"
    capabilities: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "egress": self.egress,
            "filesystem": self.filesystem,
            "gpu": self.gpu,
            "capabilities": self.capabilities,
            "sources": self.sources,
        }


def _split(value: Any) -> list[str]:
    items = [str(v) for v in value] if isinstance(value, list) else str(value or "").split(",")
    out = [item.strip() for item in items if item.strip()]
    return [] if out in (["none"], ["None"]) else out


def normalize_capability(name: str) -> str:
    upper = name.strip().upper()
    return upper.removeprefix("CAP_")


def declared_requirements(evidence: Mapping[str, Any] | None) -> Declared | None:
    """Return the requirements declared by the evidence, or None when nothing declares any."""
    declared = Declared()
    found = False
    for piece in (evidence or {}).get("pieces") or []:
        if not isinstance(piece, Mapping) or not piece.get("bound"):
            continue
        if piece.get("status") == "failed":
            continue
        facts = piece.get("facts")
        if not isinstance(facts, Mapping) or not any(key in facts for key in _KEYS):
            continue
        found = True
        declared.sources.append(str(piece.get("source", "")))
        for destination in _split(facts.get("egress"))[:MAX_DESTINATIONS]:
            if destination not in declared.egress:
                declared.egress.append(destination)
        if facts.get("filesystem") == "read-write":
            declared.filesystem = "read-write"
        gpu = str(facts.get("gpu", "none"))
        if gpu == "required" or (gpu == "optional" and declared.gpu == "none"):
            declared.gpu = gpu
        for capability in _split(facts.get("capabilities")):
            name = normalize_capability(capability)
            if name not in declared.capabilities:
                declared.capabilities.append(name)
    return declared if found else None


@dataclass(frozen=True)
class Destination:
    """One egress destination: a host name or an IP network, and an optional port."""

    host: str
    port: int | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``host``, ``host:port``, ``[v6]:port``, an IP address or a CIDR range."""
        value = text.strip().lower()
        port: int | None = None
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif value.count(":") == 1:
            host, _, port_text = value.partition(":")
            if not port_text.isdigit():
                raise ValueError(f"destination {text!r} has an invalid port")
            port = int(port_text)
        else:
            host = value
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"destination {text!r} has a port outside 1 to 65535")
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            network = None
        return cls(host, port, network)


def egress_permitted(destination: str, permitted: list[str]) -> bool:
    """Return whether ``destination`` is covered by one of the ``permitted`` entries.

    ``*`` permits everything. A host name permits that host on any port,
    ``host:port`` on that port only, ``*.example.com`` any sub-domain of
    example.com (not example.com itself), and an address or CIDR range every
    address inside it.
    """
    try:
        wanted = Destination.parse(destination)
    except ValueError:
        return False
    for entry in permitted:
        if entry.strip() == "*":
            return True
        try:
            allowed = Destination.parse(entry)
        except ValueError:
            continue
        if allowed.port is not None and allowed.port != wanted.port:
            continue
        if allowed.network is not None:
            if _inside(wanted.network, allowed.network):
                return True
            continue
        if allowed.host.startswith("*."):
            if wanted.network is None and wanted.host.endswith(allowed.host[1:]):
                return True
            continue
        if wanted.network is None and wanted.host == allowed.host:
            return True
    return False


def _inside(
    wanted: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
    allowed: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    if isinstance(wanted, ipaddress.IPv4Network) and isinstance(allowed, ipaddress.IPv4Network):
        return wanted.subnet_of(allowed)
    if isinstance(wanted, ipaddress.IPv6Network) and isinstance(allowed, ipaddress.IPv6Network):
        return wanted.subnet_of(allowed)
    return False


@dataclass
class DeploymentCheck:
    """The record section about deployment requirements, and the excesses found."""

    declared: Declared | None
    limits: dict[str, Any]
    excess: list[dict[str, Any]] = field(default_factory=list)
    facts: list[PolicyFact] = field(default_factory=list)

    def permitted(self, waived: bool = False) -> dict[str, Any]:
        """Return what is both declared and permitted; with ``waived``, everything declared."""
        declared = self.declared or Declared()
        limits = {} if waived else self.limits
        egress = [
            d
            for d in declared.egress
            if "egress" not in limits or egress_permitted(d, limits["egress"])
        ]
        writes = declared.filesystem == "read-write" and limits.get("filesystemWrites", True)
        gpu = declared.gpu == "required" and limits.get("gpu", True)
        allowed_caps = {normalize_capability(c) for c in limits.get("capabilities", [])}
        caps = [
            c for c in declared.capabilities if "capabilities" not in limits or c in allowed_caps
        ]
        return {
            "egress": egress,
            "filesystem": "read-write" if writes else "read-only",
            "gpu": bool(gpu),
            "capabilities": caps,
        }

    def to_json(self, waived: bool = False) -> dict[str, Any]:
        return {
            "declared": self.declared.to_json() if self.declared else None,
            "limits": self.limits,
            "excess": self.excess,
            "permitted": self.permitted(waived),
            "excess_waived": waived,
        }


def check_deployment(
    profile: Profile, evidence: Mapping[str, Any] | None, where: str
) -> DeploymentCheck:
    """Compare the declared requirements with ``profile``'s limits; name each excess."""
    declared = declared_requirements(evidence)
    limits = {key: setting.value for key, setting in profile.limits.items()}
    check = DeploymentCheck(declared, limits)
    if declared is None or not profile.limits:
        return check
    action = str(limits.get("action", "block"))
    scope = f"stage {profile.stage} (tier {profile.tier})"

    def excess(requirement: str, value: str, message: str, path: DocPath) -> None:
        check.excess.append({"requirement": requirement, "value": value, "message": message})
        remediation = (
            "Deploy the model without this need, or ask the policy owners to permit it for "
            f"this stage ({'.'.join(str(p) for p in path)}); a reviewer can also waive "
            f"{catalogue.DEPLOYMENT_LIMIT} for this artifact digest with an exception."
        )
        finding = policy_finding(
            catalogue.DEPLOYMENT_LIMIT,
            Severity.HIGH,
            where,
            message,
            remediation,
            requirement=requirement,
            value=value,
        )
        check.facts.append(PolicyFact(finding, path, BY_LIMIT, action))

    if "egress" in profile.limits:
        permitted = [str(e) for e in limits["egress"]]
        for destination in declared.egress:
            if not egress_permitted(destination, permitted):
                excess(
                    "egress",
                    destination,
                    f"the release claims declare network egress to {destination}, which "
                    f"{scope} does not permit",
                    profile.limits["egress"].path,
                )
    writes = declared.filesystem == "read-write"
    if "filesystemWrites" in profile.limits and writes and not limits["filesystemWrites"]:
        excess(
            "filesystem",
            "read-write",
            f"the release claims declare file-system writes, which {scope} does not permit",
            profile.limits["filesystemWrites"].path,
        )
    if "gpu" in profile.limits and declared.gpu == "required" and not limits["gpu"]:
        excess(
            "gpu",
            "required",
            f"the release claims declare that the model requires a GPU, which {scope} does "
            "not permit",
            profile.limits["gpu"].path,
        )
    if "capabilities" in profile.limits:
        allowed = {normalize_capability(str(c)) for c in limits["capabilities"]}
        for capability in declared.capabilities:
            if capability not in allowed:
                excess(
                    "capabilities",
                    capability,
                    f"the release claims declare the Linux capability {capability}, which "
                    f"{scope} does not permit",
                    profile.limits["capabilities"].path,
                )
    return check
