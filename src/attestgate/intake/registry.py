"""Pull ``oci://`` references into an OCI image layout in the intake directory, with oras.

``pull_image`` takes these steps:

1. Connect with oras' registry client, which handles token authentication and
   reads ``~/.docker/config.json``. Plain HTTP is used only for loopback
   hosts (127.0.0.0/8, ::1, localhost), as Docker does.
2. Resolve the reference: fetch the manifest by digest and check its bytes,
   or by tag and take the digest of the bytes received (a
   ``Docker-Content-Digest`` header that disagrees is an error).
3. Fetch every nested manifest, config and layer into
   ``oci/<hex>/blobs/sha256/``, bounded in size and count, and check each
   blob's size and digest as it streams in. Then write ``index.json``.
4. Look for signatures and attestations attached to the digest: the OCI
   referrers API, its fallback tag ``sha256-<hex>``, and cosign's attestation
   tag ``sha256-<hex>.att``. Sigstore bundles, DSSE envelopes, in-toto
   statements and CycloneDX documents found there become evidence files.
5. Compare with earlier admissions of the same name, record this one, and
   for the deployment stage report a tag that is not pinned to a digest.

oras' own ``pull`` and layout helpers are not used for step 3, because they
neither check digests nor bound sizes, and they join digests from the
manifest into file paths unchecked.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestgate.errors import UsageError
from attestgate.findings import Finding, Severity
from attestgate.intake.identity import FetchResult, IntakeError, intake_finding
from attestgate.intake.namespace import namespace_findings
from attestgate.intake.oci import (
    DIGEST,
    IMAGE_CONFIG_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_IMAGES,
    MAX_INDEX_DEPTH,
    MAX_LAYERS,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    ImageFormatError,
)
from attestgate.intake.references import OciReference
from attestgate.intake.refstore import Observation, ReferenceStore
from attestgate.scanners.interface import Limits, MiB

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 60.0
CONNECT_ATTEMPTS = 3
RETRY_SECONDS = 1.0
CHUNK = MiB
ACCEPT_MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
MAX_REFERRERS = 16
MAX_EVIDENCE_LAYERS = 8
MAX_EVIDENCE_BYTES = 4 * MiB
# Layer media types (or referrer artifact types) that carry evidence, and the
# file suffix that names each kind for the evidence reader.
EVIDENCE_SUFFIXES = (
    ("application/vnd.dev.sigstore.bundle", ".sigstore.json"),
    ("application/vnd.dsse.envelope.v1+json", ".dsse.json"),
    ("application/vnd.in-toto+json", ".intoto.json"),
    ("application/vnd.cyclonedx+json", ".cdx.json"),
)


@dataclass
class _Session:
    """The registry client and the URLs of one repository."""

    client: Any
    base: str  # scheme://host/v2/repository

    def get(self, path: str, accept: str = "", stream: bool = False) -> Any:
        """GET a registry path through oras' authentication, retrying lost connections briefly."""
        import oras.provider  # type: ignore[import-untyped]
        import requests

        # oras' retry decorator (oras 0.2) retries a failed request five times,
        # waiting up to 83 s. The unwrapped method keeps the authentication
        # handling, so an unreachable registry is reported within seconds.
        request = getattr(oras.provider.Registry.do_request, "__wrapped__", None)
        url = f"{self.base}/{path}"
        headers = {"Accept": accept} if accept else {}
        attempt = 1
        while True:
            try:
                if request is None:
                    return self.client.do_request(url, "GET", headers=headers, stream=stream)
                return request(self.client, url, "GET", headers=headers, stream=stream)
            except (requests.ConnectionError, requests.Timeout):
                if attempt >= CONNECT_ATTEMPTS:
                    raise
                logger.info("retrying %s after a connection failure", url)
                time.sleep(RETRY_SECONDS * attempt)
                attempt += 1


@dataclass
class _Pull:
    """The state of one pull: the resolved root and the bytes of layers fetched so far."""

    digest: str
    media_type: str
    size: int
    blobs: dict[str, int] = field(default_factory=dict)
    total: int = 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connect(ref: OciReference) -> _Session:
    import oras.container  # type: ignore[import-untyped]
    import oras.provider

    loopback = is_loopback(ref.host)
    client = oras.provider.Registry(hostname=ref.registry, insecure=loopback)
    if loopback:
        # Proxy settings from the environment never apply to a registry on this machine.
        client.session.trust_env = False
    # requests waits forever without a timeout, and oras sets none; bind one
    # on the session object that oras and its auth backend share.
    client.session.request = functools.partial(client.session.request, timeout=TIMEOUT_SECONDS)
    client.auth.load_configs(oras.container.Container("probe", registry=ref.registry))
    scheme = "http" if loopback else "https"
    return _Session(client, f"{scheme}://{ref.registry}/v2/{ref.repository}")


def _request(ref: OciReference, call: Any) -> Any:
    import requests

    try:
        return call()
    except (requests.RequestException, ValueError, OSError) as exc:
        raise IntakeError(
            f"the registry {ref.registry} could not be reached for {ref.uri}: "
            f"{type(exc).__name__}: {exc}",
            hint="check the host and port, and log in with `docker login` if the registry "
            "needs credentials",
        ) from exc


def _read_bounded(response: Any, limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(CHUNK):
        data += chunk
        if len(data) > limit:
            response.close()
            raise IntakeError(f"{what} is larger than {limit} bytes")
    return bytes(data)


def _manifest(session: _Session, ref: OciReference, reference: str) -> tuple[bytes, str, str]:
    """Fetch a manifest by tag or digest; return its bytes, digest and media type."""
    response = _request(ref, lambda: session.get(f"manifests/{reference}", ACCEPT_MANIFESTS, True))
    if response.status_code == 404:
        raise UsageError(
            f"{ref.repository}:{reference} was not found in {ref.registry}",
            hint="check the repository name, tag and digest",
        )
    if response.status_code in (401, 403):
        raise IntakeError(
            f"the registry {ref.registry} denied access to {ref.repository} "
            f"(HTTP {response.status_code})",
            hint="log in with `docker login`; the gate reads ~/.docker/config.json",
        )
    if response.status_code != 200:
        raise IntakeError(
            f"the registry {ref.registry} returned HTTP {response.status_code} for manifest "
            f"{reference} of {ref.repository}"
        )
    data = _read_bounded(response, MAX_MANIFEST_BYTES, f"manifest {reference}")
    by_digest = DIGEST.match(reference) is not None
    algorithm = reference.partition(":")[0] if by_digest else "sha256"
    digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    if by_digest and digest != reference:
        raise IntakeError(
            f"the registry {ref.registry} served a manifest for {reference} whose bytes hash "
            f"to {digest}",
            hint="do not use this registry's copy; the content does not match the digest",
        )
    header = response.headers.get("Docker-Content-Digest", "")
    if header.startswith(f"{algorithm}:") and header != digest:
        raise IntakeError(
            f"the registry {ref.registry} sent digest {header} for manifest {reference}, but "
            f"its bytes hash to {digest}",
            hint="do not use this registry's copy; it is inconsistent",
        )
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    return data, digest, media_type


def _store_blob(
    session: _Session, ref: OciReference, descriptor: Descriptor, blobs: Path, limit: int
) -> None:
    """Download one blob, checking its size and digest as it streams in."""
    algorithm, _, hex_digest = descriptor.digest.partition(":")
    destination = blobs / algorithm / hex_digest
    if destination.is_file():
        return
    if descriptor.size > limit:
        raise IntakeError(f"blob {descriptor.digest} is {descriptor.size} bytes, over {limit}")
    response = _request(ref, lambda: session.get(f"blobs/{descriptor.digest}", stream=True))
    if response.status_code != 200:
        raise IntakeError(
            f"the registry {ref.registry} returned HTTP {response.status_code} for blob "
            f"{descriptor.digest} of {ref.repository}"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.new(algorithm)
    received = 0
    fd, partial = tempfile.mkstemp(prefix=".blob-", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_content(CHUNK):
                received += len(chunk)
                if received > descriptor.size:
                    raise IntakeError(
                        f"blob {descriptor.digest} is larger than the {descriptor.size} bytes "
                        "its descriptor states"
                    )
                hasher.update(chunk)
                out.write(chunk)
        if received != descriptor.size or f"{algorithm}:{hasher.hexdigest()}" != descriptor.digest:
            raise IntakeError(
                f"blob {descriptor.digest} from {ref.registry} does not match its digest and size",
                hint="do not use this registry's copy of the image",
            )
        os.replace(partial, destination)
    finally:
        response.close()
        if os.path.exists(partial):
            os.unlink(partial)


def _write(blobs: Path, digest: str, data: bytes) -> None:
    algorithm, _, hex_digest = digest.partition(":")
    path = blobs / algorithm / hex_digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _fetch_tree(
    session: _Session,
    ref: OciReference,
    data: bytes,
    digest: str,
    blobs: Path,
    limits: Limits,
    pull: _Pull,
    depth: int = 0,
) -> None:
    """Store a manifest or index and everything it references."""
    _write(blobs, digest, data)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise IntakeError(f"manifest {digest} from {ref.registry} is not valid JSON") from exc
    if not isinstance(document, dict):
        raise IntakeError(f"manifest {digest} from {ref.registry} is not a JSON object")
    media_type = str(document.get("mediaType", ""))
    if media_type in INDEX_TYPES or "manifests" in document:
        if depth >= MAX_INDEX_DEPTH:
            raise IntakeError(f"index {digest} nests more than {MAX_INDEX_DEPTH} levels deep")
        for item in (document.get("manifests") or [])[:MAX_IMAGES]:
            child = Descriptor.from_json(item, f"index {digest}")
            child_data, child_digest, _ = _manifest(session, ref, child.digest)
            _fetch_tree(session, ref, child_data, child_digest, blobs, limits, pull, depth + 1)
        return
    if media_type and media_type not in MANIFEST_TYPES and "layers" not in document:
        return
    config = Descriptor.from_json(document.get("config"), f"manifest {digest} config")
    layers = [
        Descriptor.from_json(item, f"manifest {digest} layer")
        for item in (document.get("layers") or [])[: MAX_LAYERS + 1]
    ]
    if len(layers) > MAX_LAYERS:
        raise IntakeError(f"manifest {digest} lists more than {MAX_LAYERS} layers")
    config_limit = limits.max_json_bytes if config.media_type in IMAGE_CONFIG_TYPES else MiB
    _store_blob(session, ref, config, blobs, config_limit)
    for layer in layers:
        pull.total += layer.size
        if pull.total > limits.max_expanded_bytes:
            raise IntakeError(
                f"{ref.uri} has more than {limits.max_expanded_bytes} bytes of layers",
                hint="raise the limit for this admission if the image is legitimately this large",
            )
        _store_blob(session, ref, layer, blobs, limits.max_expanded_bytes)


def pull_image(
    ref: OciReference,
    intake_dir: Path,
    stage: str,
    store: ReferenceStore,
    limits: Limits | None = None,
) -> FetchResult:
    """Pull ``ref`` into an OCI image layout and return it with the identity to record."""
    limits = limits or Limits()
    session = _connect(ref)
    data, digest, media_type = _manifest(session, ref, ref.digest or ref.tag or "latest")
    if ref.digest and digest != ref.digest:
        raise IntakeError(f"the registry resolved {ref.uri} to {digest}")
    hex_digest = digest.partition(":")[2]
    root = intake_dir / "oci" / hex_digest
    marker = intake_dir / "oci" / f"{hex_digest}.complete"
    if not (marker.is_file() and root.is_dir()):
        _pull_layout(session, ref, data, digest, media_type, root, limits)
        marker.write_text(digest + "\n", encoding="utf-8")

    referrers, evidence = _referrers(
        session, ref, digest, intake_dir / "oci" / f"{hex_digest}.evidence"
    )
    kind = "digest" if ref.digest else "tag"
    observation = Observation(
        "oci", ref.registry, ref.repository, ref.digest or ref.tag or "", kind, digest
    )
    earlier = store.observations("oci", ref.registry, ref.repository)
    # Registry tags move by design (a new build of "latest"); a moved tag is
    # recorded as low, while an unpinned reference at deployment is medium.
    findings = namespace_findings(observation, earlier, ref.uri, tag_severity=Severity.LOW)
    store.record(observation)
    if not ref.pinned:
        findings.append(_unpinned(ref, digest, stage))
    reference = {
        "scheme": "oci",
        "uri": ref.uri,
        "registry": ref.registry,
        "repository": ref.repository,
        "requested": ref.digest or ref.tag,
        "tag": ref.tag,
        "resolved": digest,
        "pinned": ref.pinned,
        "media_type": media_type,
        "referrers": referrers,
    }
    return FetchResult(root, reference, findings, evidence, expected_digest=digest)


def _pull_layout(
    session: _Session,
    ref: OciReference,
    data: bytes,
    digest: str,
    media_type: str,
    root: Path,
    limits: Limits,
) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[7:19]}-", dir=root.parent))
    try:
        pull = _Pull(digest, media_type, len(data))
        _fetch_tree(session, ref, data, digest, staging / "blobs", limits, pull)
        (staging / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        descriptor: dict[str, Any] = {
            "mediaType": media_type or _media_type_of(data),
            "digest": digest,
            "size": len(data),
        }
        if ref.tag:
            descriptor["annotations"] = {"org.opencontainers.image.ref.name": ref.tag}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
        (staging / "index.json").write_text(json.dumps(index))
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("pulled %s as %s into %s", ref.uri, digest, root)


def _media_type_of(data: bytes) -> str:
    try:
        return str(json.loads(data).get("mediaType", ""))
    except (ValueError, AttributeError):
        return ""


def _referrers(
    session: _Session, ref: OciReference, digest: str, folder: Path
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Collect evidence attached to ``digest``; failures are logged, never fatal."""
    found: list[dict[str, Any]] = []
    evidence: list[Path] = []
    hex_digest = digest.partition(":")[2]
    candidates: list[tuple[str, Descriptor]] = []
    for source, location in (
        ("referrers-api", f"referrers/{digest}"),
        ("referrers-tag", f"manifests/sha256-{hex_digest}"),
    ):
        listed = _index_entries(session, ref, location)
        if listed is not None:
            candidates += [(source, d) for d in listed]
            break
    attestations = _attestation_manifest(session, ref, f"sha256-{hex_digest}.att")
    if attestations is not None:
        candidates.append(("cosign-attestation-tag", attestations))
    if candidates:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    for source, descriptor in candidates[:MAX_REFERRERS]:
        entry: dict[str, Any] = {"source": source, **descriptor.to_json(), "evidence": []}
        try:
            for path in _evidence_from(session, ref, descriptor, folder, len(evidence)):
                evidence.append(path)
                entry["evidence"].append(path.name)
        except (IntakeError, UsageError) as exc:
            entry["error"] = exc.message
            logger.warning(
                "referrer %s of %s could not be read: %s", descriptor.digest, ref.uri, exc
            )
        found.append(entry)
    return found, evidence


def _index_entries(session: _Session, ref: OciReference, path: str) -> list[Descriptor] | None:
    import requests

    try:
        response = session.get(path, OCI_INDEX, True)
        if response.status_code != 200:
            response.close()
            return None
        document = json.loads(_read_bounded(response, MAX_MANIFEST_BYTES, path))
    except (requests.RequestException, ValueError, IntakeError) as exc:
        logger.info("no referrers listed at %s for %s: %s", path, ref.uri, exc)
        return None
    entries = document.get("manifests") if isinstance(document, dict) else None
    descriptors: list[Descriptor] = []
    for item in entries if isinstance(entries, list) else []:
        try:
            descriptors.append(Descriptor.from_json(item, path))
        except ImageFormatError as exc:
            logger.info("skipped a referrer entry of %s: %s", ref.uri, exc)
    return descriptors


def _attestation_manifest(session: _Session, ref: OciReference, tag: str) -> Descriptor | None:
    try:
        data, digest, media_type = _manifest(session, ref, tag)
    except (UsageError, IntakeError):
        return None
    return Descriptor(media_type or _media_type_of(data), digest, len(data))


def _evidence_from(
    session: _Session, ref: OciReference, descriptor: Descriptor, folder: Path, start: int
) -> list[Path]:
    if not DIGEST.match(descriptor.digest):
        return []
    data, _, _ = _manifest(session, ref, descriptor.digest)
    document = json.loads(data)
    artifact_type = str(document.get("artifactType") or descriptor.artifact_type)
    written: list[Path] = []
    for item in (document.get("layers") or [])[:MAX_EVIDENCE_LAYERS]:
        layer = Descriptor.from_json(item, f"referrer {descriptor.digest}")
        suffix = _suffix(layer.media_type) or _suffix(artifact_type)
        if suffix is None or layer.size > MAX_EVIDENCE_BYTES:
            continue
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            _store_blob(session, ref, layer, Path(scratch), MAX_EVIDENCE_BYTES)
            blob = Path(scratch) / layer.digest.replace(":", "/")
            name = f"{start + len(written):02d}-{layer.digest[7:19]}{suffix}"
            target = folder / name
            os.replace(blob, target)
        written.append(target)
    return written


def _suffix(media_type: str) -> str | None:
    for prefix, suffix in EVIDENCE_SUFFIXES:
        if media_type.startswith(prefix):
            return suffix
    return None


def _unpinned(ref: OciReference, digest: str, stage: str) -> Finding:
    deployment = stage == "deployment"
    return intake_finding(
        "intake.unpinned-tag",
        Severity.MEDIUM if deployment else Severity.INFO,
        ref.uri,
        f"{ref.uri} names tag {ref.tag} without a digest; it resolved to {digest} now, but "
        "the tag can be moved to other content later"
        + ("; the deployment stage requires a digest" if deployment else ""),
        f"Admit oci://{ref.registry}/{ref.repository}@{digest} instead, so that the decision "
        "and the deployment refer to the same image.",
        tag=ref.tag,
        resolved=digest,
    )
