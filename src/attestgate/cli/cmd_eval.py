"""``attestgate eval``: build the scenario corpus, admit every case and write the report.

Exit status 0 means that the evaluation ran, whatever the numbers. Status 1
means an internal error, or a failed throughput measurement after which the
report was still written. Status 2 is a usage error, such as a corpus folder
without a manifest.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import AttestgateError, UsageError

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Reproduce the evaluation of the gate. Without --corpus, a labelled scenario
corpus (dependency confusion, malicious hub artifacts, backdoored models
without provenance, and a clean baseline in every supported format) is
generated into OUT/corpus. Every case is admitted in this process at each
stage its label names, and OUT receives results.json (every number),
report.md (tables) and PNG plots: threat coverage, decisions against
labels, false positives on clean artifacts, the share of quarantine
decisions with actionable remediation, latency per step and throughput
with several worker processes.
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
        "--out", type=Path, metavar="DIR", required=True, help="folder for the report and corpus"
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
        help="worker process counts for the throughput measurement "
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
        help="cache of real model files for the generated corpus (default: "
        "$ATTESTGATE_ARTIFACT_CACHE or the user's cache folder)",
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
    from attestgate.evaluation.report import summary_lines
    from attestgate.evaluation.runner import run_evaluation

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} is not a directory", hint="pass a folder to --out")
    progress = _progress()
    started = time.perf_counter()
    corpus = _corpus(args, progress)
    corpus_seconds = None if args.corpus is not None else time.perf_counter() - started
    workers = args.workers or (throughput.QUICK_WORKERS if args.quick else throughput.FULL_WORKERS)
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
    if "error" in results["throughput"]:
        logger.error("the throughput measurement failed; see %s", files["report"])
        return common.EXIT_INTERNAL
    return common.EXIT_ALLOW


def _corpus(args: argparse.Namespace, progress: Any) -> Any:
    from attestgate.evaluation.scenario import CorpusError, load

    if args.corpus is not None:
        try:
            return load(args.corpus)
        except CorpusError as exc:
            raise UsageError(str(exc), hint="pass a folder that contains corpus.json") from None
    try:
        build_corpus = importlib.import_module("attestgate.evaluation.corpus").build_corpus
    except (ImportError, AttributeError) as exc:
        raise AttestgateError(
            f"the corpus generator cannot be imported: {exc}",
            hint="pass an existing corpus with --corpus DIR",
        ) from None
    cache = args.cache if args.cache is not None else _default_cache()
    root: Path = args.out / "corpus"
    root.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress(f"generating the corpus into {root}")
    return build_corpus(root, quick=args.quick, cache=cache, progress=progress)


def _default_cache() -> Path | None:
    try:
        realfiles = importlib.import_module("attestgate.evaluation.corpus.realfiles")
        default_cache = realfiles.default_cache
    except (ImportError, AttributeError):
        logger.info("no default artifact cache is known; the corpus uses generated files only")
        return None
    return Path(default_cache())
