"""The Kubernetes validating admission webhook for pods.

A pod lists the model artifacts it uses in the annotation
``attestgate.dev/models``: comma-separated ``sha256:<hex>`` digests. The
webhook allows the pod only when every listed digest, for the stage named by
``attestgate.dev/stage`` (default ``deployment``), has an allow decision as
its latest decision, or a valid verification summary.

A verification summary counts only when a reviewer stored it in the gate
beforehand (``POST /verification-summaries``) and the pod names it by id in
the annotation ``attestgate.dev/verification-summaries`` (comma-separated
64-digit hex ids, as that endpoint returns them). The pod never carries a
summary itself. At each review the gate checks the stored summary again: its
signature under the service's trusted VSA keys, ``verificationResult``
``PASSED``, a policy the service accepts, its age, the pod's model digest
among its subjects and the pod's stage among its ``verifiedLevels``
(:mod:`attestgate.service.summaries` lists every check).

A pod without the models annotation references no model and is allowed; a
malformed annotation, or a stage other than ``training``, ``fine-tuning`` or
``deployment``, is denied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attestgate.stages import STAGES
from attestgate.stores.local import DIGEST_RE

MODELS_ANNOTATION = "attestgate.dev/models"
STAGE_ANNOTATION = "attestgate.dev/stage"
SUMMARIES_ANNOTATION = "attestgate.dev/verification-summaries"
MAX_MODELS = 64
MAX_SUMMARIES = 16

# Returns the latest decision ("allow", "quarantine", "block") for a digest
# and stage, or None when the gate never decided on it.
DecisionLookup = Callable[[str, str], str | None]
# Checks the stored summary with an id for a digest and stage; returns None
# when it covers them, else the reason it does not.
SummaryCheck = Callable[[str, str, str], str | None]


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


def parse_summaries(annotation: str) -> list[str]:
    """Return the summary ids in the annotation; raise ValueError on a malformed entry."""
    ids = [part.strip() for part in annotation.split(",") if part.strip()]
    if len(ids) > MAX_SUMMARIES:
        raise ValueError(f"{len(ids)} summary ids exceed the maximum of {MAX_SUMMARIES}")
    for summary_id in ids:
        if not DIGEST_RE.match(summary_id):
            raise ValueError(f"{summary_id!r} is not a summary id of 64 lowercase hex digits")
    return ids


def _covered(
    digest: str, stage: str, ids: list[str], check: SummaryCheck | None
) -> tuple[str | None, list[str]]:
    """Return the first summary id that covers ``digest``, and why each other one does not."""
    reasons: list[str] = []
    if check is None:
        return None, reasons
    for summary_id in ids:
        reason = check(summary_id, digest, stage)
        if reason is None:
            return summary_id, reasons
        reasons.append(f"summary {summary_id[:12]}: {reason}")
    return None, reasons


def review(
    document: Any, lookup: DecisionLookup, summaries: SummaryCheck | None = None
) -> dict[str, Any]:
    """Return the response to one ``AdmissionReview`` v1 request document.

    ``summaries`` checks the verification summaries a pod names; without it,
    only allow decisions admit a model.
    """
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
    stage = str(annotations.get(STAGE_ANNOTATION, "deployment"))
    if stage not in STAGES:
        # Decisions are recorded under these exact names, and a variant such
        # as "Deployment" would match a summary's level but no decision.
        return _response(
            uid,
            False,
            f"annotation {STAGE_ANNOTATION} is invalid: {stage[:40]!r} is not one of "
            f"{', '.join(STAGES)}",
        )
    try:
        digests = parse_models(str(annotation))
    except ValueError as exc:
        return _response(uid, False, f"annotation {MODELS_ANNOTATION} is invalid: {exc}")
    try:
        ids = parse_summaries(str(annotations.get(SUMMARIES_ANNOTATION, "")))
    except ValueError as exc:
        return _response(uid, False, f"annotation {SUMMARIES_ANNOTATION} is invalid: {exc}")

    refused = []
    notes = []
    for digest in digests:
        decision = lookup(digest, stage)
        if decision == "allow":
            continue
        covering, reasons = _covered(digest, stage, ids, summaries)
        if covering is not None:
            notes.append(f"{digest} is admitted by verification summary {covering}")
            continue
        state = "; ".join([decision or "no decision", *reasons])
        refused.append(f"{digest} ({state})")
    if refused:
        return _response(
            uid,
            False,
            f"model artifacts without an allow decision or a valid verification summary for "
            f"stage {stage}: {', '.join(refused)}; admit them with attestgate first",
        )
    return _response(uid, True, "; ".join(notes))
