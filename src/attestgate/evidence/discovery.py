"""Find evidence beside an artifact by attestgate's naming convention.

For an artifact at ``PATH`` (a file or a directory), these are picked up:

- ``PATH/model.sig`` when ``PATH`` is a directory: the OpenSSF Model Signing
  signature that ``model_signing sign`` and ``attestgate sign`` write there;
- files next to ``PATH`` named ``NAME.<anything>``, where ``NAME`` is the
  artifact's own file or directory name, that end in ``.sig``,
  ``.sigstore.json``, ``.sigstore``, ``.intoto.jsonl``, ``.intoto.json``,
  ``.dsse.json`` or ``.cdx.json``. Examples: ``model.safetensors.sigstore.json``,
  ``my-model.training.intoto.jsonl``, ``my-model.cdx.json``.

Evidence for a directory lives next to it, not inside it, because files
inside the directory are part of the artifact and its digest (``model.sig``
is the one exception, which the digest leaves out).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_SIGNATURE = "model.sig"
SUFFIXES = (
    ".sig",
    ".sigstore.json",
    ".sigstore",
    ".intoto.jsonl",
    ".intoto.json",
    ".dsse.json",
    ".cdx.json",
)
# Directories with more entries than this are not searched for evidence.
MAX_SIBLINGS = 100_000


def discover(path: Path) -> list[Path]:
    """Return the evidence files found for the artifact at ``path``, sorted by name."""
    found: list[Path] = []
    if path.is_dir():
        candidate = path / MODEL_SIGNATURE
        if candidate.is_file() and not candidate.is_symlink():
            found.append(candidate)
    prefix = path.name + "."
    parent = path.parent if path.name else path
    try:
        with os.scandir(parent) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_SIBLINGS:
                    logger.warning(
                        "stopped looking for evidence in %s after %d entries", parent, count
                    )
                    break
                name = entry.name
                if (
                    name.startswith(prefix)
                    and name.endswith(SUFFIXES)
                    and entry.is_file(follow_symlinks=False)
                ):
                    found.append(Path(entry.path))
    except OSError as exc:
        logger.warning("could not look for evidence next to %s: %s", path, exc)
    found.sort(key=lambda p: (p.parent != path, p.name))
    for item in found:
        logger.debug("found evidence %s", item)
    return found
