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
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attestgate._version import __version__
from attestgate.evaluation.metrics import LATENCY_STEPS
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
    """Write ``results.json``, ``report.md`` and the plots into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": str(out / RESULTS), "report": str(out / REPORT)}
    plots, plot_error = write_plots(results, out)
    files.update(plots)
    _write_atomic(out / RESULTS, json.dumps(results, indent=2, sort_keys=True) + "\n")
    _write_atomic(out / REPORT, render_markdown(results, plots, plot_error))
    return files


def _write_atomic(target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


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
    lines = [
        "# attestgate evaluation",
        "",
        f"Run started {results.get('started')} and took {results.get('seconds', 0):.1f} s"
        f"{' (quick run)' if results.get('quick') else ''}. Corpus: `{corpus.get('root')}`, "
        f"{corpus.get('cases', 0)} cases in {corpus.get('scenarios', 0)} scenarios"
        f"{f', generated in {generated:.1f} s before the run' if generated else ''}. "
        f"Every number is in `{RESULTS}`.",
        "",
    ]
    lines += _coverage_section(results["coverage"], plots)
    lines += _confusion_section(results)
    lines += _false_positive_section(results["false_positives"])
    lines += _remediation_section(results["actionable_remediation"])
    lines += _latency_section(results["latency"], plots)
    lines += _throughput_section(results["throughput"], plots)
    lines += _peers_section(results["peers"])
    lines += _machine_section(results["machine"])
    if plot_error:
        lines += ["", f"Plots were not drawn: {plot_error}"]
    return "\n".join(lines) + "\n"


def _coverage_section(coverage: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    counts = coverage.get("family_counts", {})
    rows = [
        (family, counts[family]["steps"], counts[family]["fired"], _pct(share))
        for family, share in coverage["families"].items()
    ]
    rows.append(("all", coverage["steps"], coverage["fired"], _pct(coverage["overall"])))
    twin = coverage["twin_specific"]
    if twin["steps"]:
        twin_line = (
            f"Counting only reasons that the step's clean twin did not also get: "
            f"{twin['fired']} of {twin['steps']} paired steps ({_pct(twin['overall'])})."
        )
    else:
        twin_line = "No attacker step has a clean twin to compare its reasons with."
    lines = [
        "## Threat coverage",
        "",
        "Share of attacker steps (hostile cases) at which at least one policy reason fired, "
        "at any stage.",
        "",
        *_table(("family", "steps", "fired", "coverage"), rows),
        "",
        twin_line,
    ]
    if coverage["missed"]:
        lines += ["", "Steps at which no reason fired:", ""]
        lines += [f"- `{m['case']}` ({m['family']}): {m['step']}" for m in coverage["missed"]]
    if "coverage" in plots:
        lines += ["", f"![coverage per family]({Path(plots['coverage']).name})"]
    return [*lines, ""]


def _confusion_section(results: Mapping[str, Any]) -> list[str]:
    detail = results.get("decisions", {})
    lines = [
        "## Decisions against labels",
        "",
        f"Accuracy over {detail.get('decisions', 0)} admissions: "
        f"{_pct(results['accuracy'])} ({detail.get('correct', 0)} correct, "
        f"{len(detail.get('lenient', []))} more lenient than the label, "
        f"{detail.get('strict', 0)} stricter, {detail.get('errors', 0)} errors).",
        "",
    ]
    actuals = (*ACTIONS, ERROR)
    for stage, table in results["confusion"].items():
        rows = [(f"expected {e}", *(table[e].get(a, 0) for a in actuals)) for e in ACTIONS]
        accuracy = detail.get("accuracy_by_stage", {}).get(stage, 0.0)
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
    lines = [
        "## False positives on clean artifacts",
        "",
        f"{fp['count']} of {fp['total']} clean cases ({_pct(fp['rate'])}) were not allowed at a "
        f"stage whose label is allow; {fp['decisions']['count']} of {fp['decisions']['total']} "
        "such admissions.",
        "",
    ]
    if fp["cases"]:
        rows = [
            (
                item["case"],
                item["kind"],
                ", ".join(item["tags"]),
                ", ".join(f"{s}: {a}" for s, a in item["stages"].items()),
                ", ".join(item["reasons"]) or "; ".join(item["errors"].values()),
            )
            for item in fp["cases"]
        ]
        lines += _table(("case", "kind", "format", "decision", "reasons"), rows)
        lines.append("")
    return lines


def _remediation_section(remediation: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Actionable remediation",
        "",
        f"{remediation['count']} of {remediation['total']} quarantine decisions "
        f"({_pct(remediation['share'])}) have an actionable remediation on every reason "
        "that quarantined them: a format to convert to, evidence to provide, a signer or key "
        "to use, a version or hash to pin, or a file to remove or replace.",
        "",
    ]
    if remediation["kinds"]:
        lines += _table(("kind", "reasons"), sorted(remediation["kinds"].items()))
        lines.append("")
    if remediation["examples"]:
        lines += ["Remediation texts that name no concrete change:", ""]
        rows = [
            (f"`{e['rule']}`", e["count"], e["remediation"] or "(none)", ", ".join(e["cases"]))
            for e in remediation["examples"]
        ]
        lines += _table(("rule", "reasons", "remediation", "cases"), rows)
        lines.append("")
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
    lines += [
        f"{throughput['admissions']} admissions per run of {throughput['distinct']} distinct "
        f"artifacts ({throughput['source']}), {throughput['bytes'] / 1048576:.1f} MiB per run, "
        f"{throughput['cpus']} CPUs. Workers are spawned processes that share one gate home. "
        f"SHA-256 over the same bytes in one thread: {sha['mib_per_s']:.1f} MiB/s.",
        "",
    ]
    rows = [
        (
            workers,
            f"{run['artifacts_per_s']:.1f}",
            f"{run['mib_per_s']:.1f}",
            f"{run['ratio_to_sha256']:.3f}",
            f"{run['seconds']:.2f}",
            run["errors"],
        )
        for workers, run in throughput["workers"].items()
    ]
    lines += _table(("workers", "artifacts/s", "MiB/s", "vs sha256", "seconds", "errors"), rows)
    errors = [run["first_error"] for run in throughput["workers"].values() if run["first_error"]]
    if errors:
        lines += ["", f"First admission error: {errors[0]}"]
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
        "deployment decision is not allow.",
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


def summary_lines(results: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
    """Return the short text summary the command prints."""
    coverage = results["coverage"]
    fp = results["false_positives"]
    remediation = results["actionable_remediation"]
    lines = [
        f"coverage: {_pct(coverage['overall'])} of {coverage['steps']} attacker steps",
        "  "
        + ", ".join(f"{family} {_pct(share)}" for family, share in coverage["families"].items()),
        f"false positives: {fp['count']} of {fp['total']} clean cases ({_pct(fp['rate'])})",
        f"accuracy: {_pct(results['accuracy'])} of "
        f"{results.get('decisions', {}).get('decisions', 0)} admissions against their labels",
        f"actionable remediation: {_pct(remediation['share'])} of "
        f"{remediation['total']} quarantine decisions",
    ]
    runs = results["throughput"].get("workers", {})
    if runs:
        best = max(runs.items(), key=lambda item: item[1]["artifacts_per_s"])
        lines.append(
            f"throughput: up to {best[1]['artifacts_per_s']:.1f} artifacts/s "
            f"with {best[0]} worker(s)"
        )
    lines.append(f"report: {files['report']}")
    return lines
