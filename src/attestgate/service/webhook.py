"""The Kubernetes validating admission webhook for pods.

A pod lists the model artifacts it uses in the annotation
``attestgate.dev/models``: comma-separated ``sha256:<hex>`` digests. The
webhook allows the pod only when the latest decision on every listed digest,
for the stage named by ``attestgate.dev/stage`` (default ``deployment``), is
allow. A pod without the annotation references no model and is allowed; a
malformed annotation is denied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attestgate.stores.local import DIGEST_RE

MODELS_ANNOTATION = "attestgate.dev/models"
STAGE_ANNOTATION = "attestgate.dev/stage"
MAX_MODELS = 64

# Returns the latest decision ("allow", "quarantine", "block") for a digest
# and stage, or None when the gate never decided on it.
DecisionLookup = Callable[[str, str], str | None]


def _response(uid: str, allowed: bool, message: str) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    elif message:
        response["warnings"] = [message]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def parse_models(annotation: str) -> list[str]:
    """Return the digests in the annotation; raise ValueError on a malformed entry."""
    digests = [part.strip() for part in annotation.split(",") if part.strip()]
    if len(digests) > MAX_MODELS:
        raise ValueError(f"{len(digests)} digests exceed the maximum of {MAX_MODELS}")
    for digest in digests:
        if not digest.startswith("sha256:") or not DIGEST_RE.match(digest[7:]):
            raise ValueError(f"{digest!r} is not sha256: followed by 64 lowercase hex digits")
    return digests


def review(document: Any, lookup: DecisionLookup) -> dict[str, Any]:
    """Return the response to one ``AdmissionReview`` v1 request document."""
    if not isinstance(document, dict) or document.get("kind") != "AdmissionReview":
        raise ValueError("the body is not an AdmissionReview")
    request = document.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise ValueError("the AdmissionReview has no request with a uid")
    uid: str = request["uid"]
    kind = request.get("kind") or {}
    if not isinstance(kind, dict) or kind.get("kind") != "Pod":
        return _response(uid, True, "")
    if request.get("operation") == "DELETE":
        return _response(uid, True, "")

    obj = request.get("object") or {}
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = (metadata or {}).get("annotations") or {}
    if not isinstance(annotations, dict):
        return _response(uid, False, "the pod's annotations are not a mapping")
    annotation = annotations.get(MODELS_ANNOTATION)
    if annotation is None:
        return _response(uid, True, "")
    stage = annotations.get(STAGE_ANNOTATION, "deployment")
    try:
        digests = parse_models(str(annotation))
    except ValueError as exc:
        return _response(uid, False, f"annotation {MODELS_ANNOTATION} is invalid: {exc}")

    refused = []
    for digest in digests:
        decision = lookup(digest, str(stage))
        if decision != "allow":
            state = decision or "no decision"
            refused.append(f"{digest} ({state})")
    if refused:
        return _response(
            uid,
            False,
            f"model artifacts without an allow decision for stage {stage}: "
            f"{', '.join(refused)}; admit them with attestgate first",
        )
    return _response(uid, True, "")
