"""Least-privilege Kubernetes manifests for an allowed artifact.

From a decision record's ``evaluation.deployment`` section (what the release
claims declared and what the stage permitted), build:

- a ``NetworkPolicy`` that selects the model's pods and denies all egress
  except to the declared and permitted destinations. A NetworkPolicy can
  only name IP ranges, so a destination given as a host name stays denied
  and is listed in the ``attestgate.dev/egress-hosts`` annotation. Allowing
  it needs the cluster network plug-in's own host-name policy.
- a ``Pod`` whose security context runs as a non-root user with the
  runtime's default seccomp profile, a read-only root file system and no
  privilege escalation. It drops every capability and adds back only the
  declared and permitted ones, and mounts no service account token. A GPU
  (``nvidia.com/gpu: 1``) is requested only when the release claims declare
  it required; a model that declares file-system writes gets an
  ``emptyDir`` volume at ``/tmp`` instead of a writable root.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from attestgate.errors import UsageError
from attestgate.policy.deployment import Destination

RUN_AS = 65532
GPU_RESOURCE = "nvidia.com/gpu"
PROFILE_LABEL = "attestgate.dev/profile"
DEFAULT_IMAGE = "REPLACE-WITH-SERVING-IMAGE"
# A path inside the container, backed by a pod-private emptyDir volume.
SCRATCH_PATH = "/tmp"  # noqa: S108 - not a host path: the pod's own scratch volume
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def profile_name(artifact_path: str) -> str:
    """Return a Kubernetes object name derived from the artifact's file or directory name."""
    base = PurePath(artifact_path).name.lower()
    name = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:53].strip("-")
    return name or "model"


def _check_name(name: str, what: str) -> None:
    if not _DNS_LABEL.match(name):
        raise UsageError(
            f"{what} {name!r} is not a valid Kubernetes name",
            hint="use lower-case letters, digits and hyphens, at most 63 characters",
        )


def _egress_rules(destinations: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    rules: list[dict[str, Any]] = []
    hosts: list[str] = []
    for text in destinations:
        if text.strip() == "*":
            rules.append(
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]}
            )
            continue
        try:
            destination = Destination.parse(text)
        except ValueError:
            hosts.append(text)
            continue
        if destination.network is None:
            hosts.append(text)
            continue
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": str(destination.network)}}]}
        if destination.port is not None:
            rule["ports"] = [{"protocol": "TCP", "port": destination.port}]
        rules.append(rule)
    return rules, hosts


def build_manifests(
    record: dict[str, Any],
    *,
    name: str | None = None,
    namespace: str | None = None,
    image: str = DEFAULT_IMAGE,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the NetworkPolicy and Pod manifests for ``record``, and notes for the reader."""
    if record.get("decision") != "allow":
        raise UsageError(
            f"decision {record.get('id')} is {record.get('decision')}, not allow",
            hint="a deployment profile is only made for an allowed artifact",
        )
    name = name or profile_name(str(record["artifact"]["path"]))
    _check_name(name, "name")
    if namespace is not None:
        _check_name(namespace, "namespace")
    deployment = (record.get("evaluation") or {}).get("deployment") or {}
    permitted = deployment.get("permitted") or {
        "egress": [],
        "filesystem": "read-only",
        "gpu": False,
        "capabilities": [],
    }
    notes: list[str] = []
    if not deployment:
        notes.append(
            "the decision record has no deployment section (it predates deployment "
            "constraints), so the profile permits nothing"
        )
    elif deployment.get("declared") is None:
        notes.append("the release claims declare no deployment requirements; nothing is permitted")

    digest = f"sha256:{record['artifact']['digest']['sha256']}"
    egress, hosts = _egress_rules([str(d) for d in permitted.get("egress", [])])
    annotations = {
        "attestgate.dev/artifact-digest": digest,
        "attestgate.dev/decision-record": str(record["id"]),
        "attestgate.dev/policy-digest": f"sha256:{record['policy']['digest']['sha256']}",
        "attestgate.dev/stage": str(record["stage"]),
    }
    metadata: dict[str, Any] = {"labels": {PROFILE_LABEL: name}, "annotations": annotations}
    if namespace is not None:
        metadata["namespace"] = namespace

    network_annotations = dict(annotations)
    if hosts:
        network_annotations["attestgate.dev/egress-hosts"] = ",".join(hosts)
        notes.append(
            "egress to host names ("
            + ", ".join(hosts)
            + ") cannot be expressed in a NetworkPolicy and stays denied; allow it with the "
            "network plug-in's host-name policy if the cluster has one"
        )
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {**metadata, "name": f"{name}-egress", "annotations": network_annotations},
        "spec": {
            "podSelector": {"matchLabels": {PROFILE_LABEL: name}},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }
    return [network_policy, _pod(name, metadata, permitted, image)], notes


def _pod(
    name: str, metadata: dict[str, Any], permitted: dict[str, Any], image: str
) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if permitted.get("capabilities"):
        capabilities["add"] = [str(c) for c in permitted["capabilities"]]
    container: dict[str, Any] = {
        "name": "model",
        "image": image,
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "runAsNonRoot": True,
            "capabilities": capabilities,
        },
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if permitted.get("gpu"):
        container["resources"] = {
            "requests": {GPU_RESOURCE: "1"},
            "limits": {GPU_RESOURCE: "1"},
        }
    if permitted.get("filesystem") == "read-write":
        container["volumeMounts"] = [{"name": "scratch", "mountPath": SCRATCH_PATH}]
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**metadata, "name": name},
        "spec": spec,
    }
