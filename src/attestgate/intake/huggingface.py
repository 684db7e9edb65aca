"""Fetch ``hf://`` references through huggingface_hub into the intake directory.

``fetch_hf`` takes these steps:

1. Ask the hub (``HF_ENDPOINT``, read at call time, else huggingface.co) what
   the revision resolves to: the commit, the author and the repository's id.
2. List the files at that commit with their hub-stated digests (the LFS
   SHA-256, or the git blob id for small files).
3. Download exactly that commit with ``snapshot_download`` into a staging
   folder, then move the listed files into
   ``hf/<type>/<owner>--<name>/<commit>/``. The download uses ``local_dir``
   mode because huggingface_hub checks repository file names there, while its
   cache mode names blob files after the server's ETag header unchecked.
4. Tell a branch from a tag, compare what the hub reported with earlier
   admissions of the same name (namespace reuse), and record this one.
5. For the deployment stage, report a revision that is not a commit hash.

After inspection, :func:`verify_files` checks the bytes the gate hashed
against the digests listed in step 2.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attestgate.errors import UsageError
from attestgate.findings import Finding, Severity
from attestgate.identify.stream import FileReport
from attestgate.intake.identity import FetchResult, IntakeError, intake_finding
from attestgate.intake.namespace import namespace_findings
from attestgate.intake.references import COMMIT, HfReference
from attestgate.intake.refstore import Observation, ReferenceStore

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_REPO_FILES = 100_000
# Files the record lists with their hub-stated digests; the rest are counted.
MAX_LISTED_FILES = 10_000
MAX_HISTORY_PAGES = 20
# Small (non-LFS) files are read again to compute their git blob id.
MAX_GIT_BLOB_BYTES = 64 * 1024 * 1024
TIMEOUT_SECONDS = 30.0
DOWNLOAD_WORKERS = 4


def hub_endpoint() -> str:
    """Return the hub URL from ``HF_ENDPOINT``, read now rather than when huggingface_hub loaded."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT


def fetch_hf(ref: HfReference, intake_dir: Path, stage: str, store: ReferenceStore) -> FetchResult:
    """Download ``ref`` at its resolved commit and return it with the identity to record."""
    from huggingface_hub import HfApi

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint)
    info = _hub_call(ref, lambda: _revision_info(api, ref))
    commit = str(info.get("sha", ""))
    if not COMMIT.match(commit):
        raise IntakeError(
            f"the hub at {endpoint} returned no commit hash for {ref.uri}",
            hint="check that HF_ENDPOINT names a Hugging Face hub; its revision API returns a sha",
        )
    if ref.pinned and commit != ref.revision:
        raise IntakeError(
            f"the hub at {endpoint} resolved commit {ref.revision} of {ref.repo_id} to {commit}",
            hint="the hub returned a different commit than requested, so do not trust it",
        )

    tree = _hub_call(ref, lambda: _tree(api, ref, commit))
    target = intake_dir / "hf" / ref.repo_type / ref.repo_id.replace("/", "--") / commit
    marker = target.parent / f"{commit}.complete"
    if not (marker.is_file() and target.is_dir()):
        _hub_call(ref, lambda: _download(ref, commit, endpoint, target, tree))
        marker.write_text(commit + "\n", encoding="utf-8")

    kind = "commit" if ref.pinned else _hub_call(ref, lambda: _revision_kind(api, ref))
    author = str(info.get("author") or ref.owner)
    repository_id = str(info.get("_id") or "")
    observation = Observation(
        "hf",
        _host(endpoint),
        f"{ref.repo_type}/{ref.repo_id}",
        ref.revision,
        kind,
        commit,
        author,
        repository_id,
    )
    earlier = store.observations(observation.scheme, observation.host, observation.name)
    findings = namespace_findings(
        observation,
        earlier,
        ref.uri,
        history_contains=lambda old: _history_contains(endpoint, ref, commit, old),
    )
    store.record(observation)
    if not ref.pinned:
        findings.append(_unpinned(ref, commit, stage))

    reference = {
        "scheme": "hf",
        "uri": ref.uri,
        "endpoint": endpoint,
        "repo_type": ref.repo_type,
        "name": ref.repo_id,
        "requested": ref.revision,
        "revision_kind": kind,
        "resolved": commit,
        "pinned": ref.pinned,
        "owner": {"name": author, "repository_id": repository_id},
        "files": dict(islice(tree.items(), MAX_LISTED_FILES)),
    }
    if len(tree) > MAX_LISTED_FILES:
        reference["files_not_listed"] = len(tree) - MAX_LISTED_FILES
    return FetchResult(target, reference, findings, expected_files=tree)


def _host(endpoint: str) -> str:
    return urlsplit(endpoint).netloc or endpoint


def _hub_call(ref: HfReference, call: Any) -> Any:
    """Run a hub request and turn its errors into the gate's errors."""
    import httpx
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return call()
    except GatedRepoError as exc:
        raise IntakeError(
            f"{ref.repo_id} is gated on the hub: {exc}",
            hint="accept the repository's terms on the hub and set HF_TOKEN",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise UsageError(
            f"repository {ref.repo_id} was not found on the hub, or is private",
            hint="check the name, or set HF_TOKEN for a private repository",
        ) from exc
    except RevisionNotFoundError as exc:
        raise UsageError(
            f"revision {ref.revision} of {ref.repo_id} was not found on the hub",
            hint="give an existing commit hash, branch or tag",
        ) from exc
    except (HfHubHTTPError, httpx.HTTPError, OSError, ValueError) as exc:
        raise IntakeError(
            f"fetching {ref.uri} from {hub_endpoint()} failed: {type(exc).__name__}: {exc}",
            hint="check HF_ENDPOINT and the network, then admit the reference again",
        ) from exc


def _revision_info(api: Any, ref: HfReference) -> dict[str, Any]:
    info = api.repo_info(ref.repo_id, revision=ref.revision, repo_type=ref.repo_type)
    # huggingface_hub keeps fields it does not model, such as the repository's
    # "_id", as attributes of the info object.
    return {
        "sha": info.sha,
        "author": getattr(info, "author", None),
        "_id": getattr(info, "_id", ""),
    }


def _tree(api: Any, ref: HfReference, commit: str) -> dict[str, dict[str, Any]]:
    from huggingface_hub.hf_api import RepoFile

    files: dict[str, dict[str, Any]] = {}
    entries = api.list_repo_tree(
        ref.repo_id, recursive=True, revision=commit, repo_type=ref.repo_type
    )
    for entry in islice(entries, MAX_REPO_FILES + 1):
        if not isinstance(entry, RepoFile):
            continue
        if len(files) >= MAX_REPO_FILES:
            raise IntakeError(
                f"{ref.repo_id} lists more than {MAX_REPO_FILES} files at {commit}",
                hint="admit a smaller repository, or split it",
            )
        item: dict[str, Any] = {"size": int(entry.size)}
        if entry.lfs is not None:
            item["lfs_sha256"] = str(entry.lfs.sha256)
        else:
            item["git_oid"] = str(entry.blob_id)
        files[str(entry.path)] = item
    return dict(sorted(files.items()))


def _download(
    ref: HfReference, commit: str, endpoint: str, target: Path, tree: dict[str, Any]
) -> None:
    from huggingface_hub import snapshot_download

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=target.parent))
    try:
        snapshot_download(
            ref.repo_id,
            repo_type=ref.repo_type,
            revision=commit,
            local_dir=staging,
            endpoint=endpoint,
            max_workers=DOWNLOAD_WORKERS,
            tqdm_class=_silent_tqdm_class(),
        )
        if target.exists():
            shutil.rmtree(target)
        for path in tree:
            source = staging.joinpath(*path.split("/"))
            if source.is_symlink() or not source.is_file():
                raise IntakeError(
                    f"{path} of {ref.repo_id}@{commit} was listed by the hub but not downloaded",
                    hint="admit the reference again; if it persists, the hub is inconsistent",
                )
            destination = target.joinpath(*path.split("/"))
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
        target.mkdir(parents=True, exist_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("downloaded %s at %s into %s", ref.repo_id, commit, target)


def _silent_tqdm_class() -> Any:
    """Return a progress-bar class that draws nothing: library code prints nothing.

    huggingface_hub's own ``silent_tqdm`` lacks attributes snapshot_download
    1.x reads (``total``), so this disables its tqdm subclass instead.
    """
    from huggingface_hub.utils import tqdm  # type: ignore[attr-defined]

    class SilentTqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    return SilentTqdm


def _revision_kind(api: Any, ref: HfReference) -> str:
    refs = api.list_repo_refs(ref.repo_id, repo_type=ref.repo_type)
    if ref.revision in {branch.name for branch in refs.branches}:
        return "branch"
    if ref.revision in {tag.name for tag in refs.tags}:
        return "tag"
    return "unknown"


def _history_contains(endpoint: str, ref: HfReference, commit: str, old: str) -> bool | None:
    """Tell whether ``old`` is in the history of ``commit``, or return None when unknown."""
    import httpx
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.errors import HfHubHTTPError

    # build_hf_headers is public in huggingface_hub.utils but loaded lazily, so
    # mypy cannot see the export.
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url: str | None = f"{endpoint}/api/{ref.repo_type}s/{ref.repo_id}/commits/{commit}"
    try:
        for _ in range(MAX_HISTORY_PAGES):
            if url is None:
                return False
            response = get_session().get(url, headers=build_hf_headers(), timeout=TIMEOUT_SECONDS)
            hf_raise_for_status(response)
            page = response.json()
            if not isinstance(page, list):
                return None
            if any(isinstance(item, dict) and item.get("id") == old for item in page):
                return True
            url = response.links.get("next", {}).get("url")
    except (HfHubHTTPError, httpx.HTTPError, OSError, ValueError) as exc:
        logger.warning("could not list the history of %s at %s: %s", ref.repo_id, commit, exc)
        return None
    return None if url is not None else False


def _unpinned(ref: HfReference, commit: str, stage: str) -> Finding:
    deployment = stage == "deployment"
    return intake_finding(
        "intake.unpinned-revision",
        Severity.MEDIUM if deployment else Severity.INFO,
        ref.uri,
        f"{ref.uri} names revision {ref.revision}, not a commit hash; it resolved to {commit} "
        "now, but the same reference can resolve to other content later"
        + ("; the deployment stage requires a commit hash" if deployment else ""),
        f"Admit hf://{ref.repo_id}@{commit} instead, so that the decision and the deployment "
        "refer to the same files.",
        revision=ref.revision,
        resolved=commit,
    )


def verify_files(
    root: Path, files: list[FileReport], excluded: list[str], expected: dict[str, dict[str, Any]]
) -> list[Finding]:
    """Check the inspected files against the digests the hub listed for the commit."""
    findings: list[Finding] = []
    reports = {r.path: r for r in files}
    for path, item in expected.items():
        report = reports.pop(path, None)
        if report is None:
            if path not in excluded:
                findings.append(_file_mismatch(path, "is listed by the hub but missing locally"))
            continue
        problem = _file_problem(root, path, report, item)
        if problem:
            findings.append(_file_mismatch(path, problem))
    for path in sorted(reports):
        findings.append(_file_mismatch(path, "is present locally but not listed by the hub"))
    return findings


def _file_problem(root: Path, path: str, report: FileReport, item: dict[str, Any]) -> str:
    if report.size != item.get("size"):
        return f"is {report.size} bytes, but the hub lists {item.get('size')}"
    if "lfs_sha256" in item:
        if report.sha256 != item["lfs_sha256"]:
            return f"has SHA-256 {report.sha256}, but the hub lists {item['lfs_sha256']}"
        return ""
    if report.size > MAX_GIT_BLOB_BYTES:
        return ""
    data = root.joinpath(*path.split("/")).read_bytes()
    # The git blob id: SHA-1 over "blob <size>\0" and the content.
    oid = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    if oid != item.get("git_oid"):
        return f"has git blob id {oid}, but the hub lists {item.get('git_oid')}"
    return ""


def _file_mismatch(path: str, problem: str) -> Finding:
    return intake_finding(
        "intake.digest-mismatch",
        Severity.HIGH,
        path,
        f"{path} {problem}, so the files scanned are not the files the hub names for this commit",
        "Delete the intake copy and admit the reference again; if the mismatch persists, the "
        "hub or a proxy between it and the gate altered the files.",
    )
