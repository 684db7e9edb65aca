"""``attestgate attest``: write signed training claims or release claims (an ML-BOM)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from attestgate.errors import UsageError

if TYPE_CHECKING:
    from attestgate.evidence.training import TrainingInputs

MAX_INPUT_BYTES = 4 * 1024 * 1024

EPILOG = """\
The statement is an in-toto v1 statement whose subject is the artifact's digest
(the OpenSSF Model Signing root digest for a directory). With --key it is
written as a DSSE envelope on one line (JSON Lines), with --identity-token as
a Sigstore bundle (keyless; contacts Sigstore's public servers). Name the file
NAME.<anything>.intoto.jsonl next to the artifact and `attestgate admit` finds
it without --evidence.

environment:
  ATTESTGATE_KEY_PASSWORD  password of an encrypted --key
  SIGSTORE_ID_TOKEN        identity token for keyless signing

exit status:
  0  the statement was written
  1  it could not be built or signed
  2  usage error
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "attest",
        help="write signed training claims or release claims for an artifact",
        description="Produce evidence: training claims at the end of a training run, "
        "release claims (a CycloneDX ML-BOM) when a model is released.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    _register_training(kinds)
    _register_release(kinds)


def _add_signing_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("signing and output")
    group.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="PEM private key to sign with (Ed25519, ECDSA P-256/384/521 or RSA)",
    )
    group.add_argument(
        "--identity-token",
        default=os.environ.get("SIGSTORE_ID_TOKEN", ""),
        metavar="TOKEN",
        help="OIDC identity token for Sigstore keyless signing (default: $SIGSTORE_ID_TOKEN)",
    )
    group.add_argument(
        "--unsigned",
        action="store_true",
        help="write the bare statement or ML-BOM without a signature; the gate reports "
        "unsigned evidence and does not let it vouch for the artifact",
    )
    group.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="file to write the evidence to"
    )


def _register_training(kinds: Any) -> None:
    parser = kinds.add_parser(
        "training",
        help="write the training-claims statement for a run's output artifact",
        description="Record the six training claims (data lineage, code lineage, environment, "
        "hyperparameters, compute, run metadata) for the artifact a training run produced. "
        "Repository, commit, lock files, library versions, Python, accelerator and times "
        "are collected; datasets, hyperparameters and outputs come from options or --claims.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--artifact", type=Path, required=True, metavar="PATH", help="the model the run produced"
    )
    parser.add_argument(
        "--output",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="another artifact the run wrote (repeatable)",
    )
    parser.add_argument(
        "--claims",
        type=Path,
        metavar="FILE",
        help="JSON or YAML with predicate fields (dataLineage, codeLineage, ...) that "
        "override what is collected",
    )

    data = parser.add_argument_group("data lineage")
    data.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="SPEC",
        help="dataset as URI, URI@sha256:HEX or URI@VERSION, or a local file or directory "
        "to hash (repeatable)",
    )
    data.add_argument(
        "--sampling-policy", default="", metavar="TEXT", help="how examples were selected"
    )

    code = parser.add_argument_group("code lineage and environment")
    code.add_argument(
        "--repository",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="training repository (default: the current directory)",
    )
    code.add_argument(
        "--training-config",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="training configuration file to record by digest (repeatable)",
    )
    code.add_argument(
        "--lock-file",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="dependency lock file (default: the ones at the top of --repository)",
    )
    code.add_argument(
        "--base-image", default="", metavar="REF@sha256:HEX", help="container base image"
    )

    hyper = parser.add_argument_group("hyperparameters")
    hyper.add_argument(
        "--hyperparameters",
        type=Path,
        metavar="FILE",
        help="JSON or YAML with optimizer, schedule, batch_size, seeds and any others",
    )
    hyper.add_argument("--optimizer", default="", metavar="NAME")
    hyper.add_argument("--schedule", default="", metavar="NAME", help="learning-rate schedule")
    hyper.add_argument("--batch-size", type=int, metavar="N")
    hyper.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="N",
        help="random seed (repeatable); recorded as a hash",
    )

    compute = parser.add_argument_group("compute and run")
    compute.add_argument("--accelerator", default="", metavar="NAME", help="default: detected")
    compute.add_argument(
        "--driver-version",
        default="",
        metavar="VERSION",
        help="default: detected; recorded as a hash",
    )
    compute.add_argument(
        "--toolchain-version",
        default="",
        metavar="TEXT",
        help="default: detected; recorded as a hash",
    )
    compute.add_argument("--started-on", default="", metavar="TIME", help="run start, ISO 8601")
    compute.add_argument(
        "--finished-on", default="", metavar="TIME", help="run end, ISO 8601 (default: now)"
    )
    compute.add_argument(
        "--log", type=Path, metavar="FILE", help="training log to record by digest"
    )
    compute.add_argument(
        "--invocation-id", default="", metavar="ID", help="default: the CI run URL"
    )
    compute.add_argument(
        "--builder-id", default="", metavar="URI", help="training platform identity"
    )

    _add_signing_options(parser)


def _register_release(kinds: Any) -> None:
    parser = kinds.add_parser(
        "release",
        help="write the release ML-BOM (CycloneDX 1.6) for an artifact",
        description="Scan the artifact and write a CycloneDX 1.6 ML-BOM with its hashes, a "
        "model card from config.json and README.md front matter, the scan results, the "
        "embedded-code declaration and the deployment requirements, signed as an in-toto "
        "statement.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="model file or directory")
    parser.add_argument("--name", default="", help="component name (default: the path's name)")
    parser.add_argument(
        "--version",
        dest="release_version",
        default="",
        metavar="VERSION",
        help="release version recorded on the model component",
    )
    parser.add_argument(
        "--evaluation",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="evaluation report (JSON with metrics) to record with its digest (repeatable)",
    )
    parser.add_argument(
        "--egress",
        action="append",
        metavar="HOST",
        help="host the model needs to reach at run time (repeatable); 'none' for no egress",
    )
    parser.add_argument(
        "--filesystem", choices=("read-only", "read-write"), help="file system access needed"
    )
    parser.add_argument("--gpu", choices=("none", "optional", "required"), help="GPU access needed")
    _add_signing_options(parser)


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path} could not be read: {exc.strerror or exc}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{what} {path} is larger than {MAX_INPUT_BYTES} bytes")
    try:
        value = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise UsageError(f"{what} {path} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"{what} {path} must contain a mapping at the top level")
    return value


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    if not args.unsigned and args.key is None and not args.identity_token:
        raise UsageError(
            "no signing key was given",
            hint="pass --key FILE, --identity-token TOKEN, or --unsigned",
        )
    if args.key is not None and not args.key.is_file():
        raise UsageError(f"key file {args.key} does not exist", hint="check the --key path")
    if args.kind == "training":
        document, subject = _training(args)
    else:
        document, subject = _release(args)
    text = _sign(document, args)

    from attestgate.evidence.produce import write_atomically

    write_atomically(args.out, text)
    stdout.write(
        f"wrote {args.kind} claims for sha256:{subject} to {args.out}"
        f"{' (unsigned)' if args.unsigned else ''}\n"
    )
    return 0


def _sign(document: dict[str, Any], args: argparse.Namespace) -> str:
    from attestgate.evidence.produce import sign_statement

    if args.unsigned:
        return json.dumps(document, separators=(",", ":"), sort_keys=True)
    return sign_statement(
        document, key=args.key, identity_token=args.identity_token if args.key is None else ""
    )


def _subject(path: Path) -> dict[str, Any]:
    from attestgate.evidence.collect import named_digest

    return named_digest(path)


def _training(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from attestgate.evidence.interface import TRAINING_CLAIMS_V1
    from attestgate.evidence.intoto import statement_json
    from attestgate.evidence.schema import schema_errors
    from attestgate.evidence.training import build_training_predicate

    artifact: Path = args.artifact
    if not artifact.exists():
        raise UsageError(f"artifact {artifact} does not exist", hint="pass the model the run wrote")
    inputs = _training_inputs(args)
    predicate = build_training_predicate(inputs)
    if args.claims is not None:
        predicate = _merge(predicate, _read_mapping(args.claims, "claims file"))
    errors = schema_errors("training-claims.v1.json", predicate)
    if errors:
        raise UsageError("the training claims are invalid: " + "; ".join(errors))
    subject = inputs.outputs[0]
    statement = statement_json([subject], TRAINING_CLAIMS_V1, predicate)
    return statement, str(subject["digest"]["sha256"])


def _training_inputs(args: argparse.Namespace) -> TrainingInputs:
    import platform

    from attestgate.evidence import collect
    from attestgate.evidence.training import TrainingInputs

    repository, commit, dirty = collect.git_state(args.repository)
    locks = args.lock_file or collect.lock_files(args.repository)
    name, count, driver = collect.accelerator()
    hyper: dict[str, Any] = {}
    source = None
    if args.hyperparameters is not None:
        hyper = _read_mapping(args.hyperparameters, "hyperparameter file")
        source = collect.named_digest(args.hyperparameters)
    for key, value in (
        ("optimizer", args.optimizer),
        ("schedule", args.schedule),
        ("batch_size", args.batch_size),
    ):
        if value:
            hyper[key] = value
    if args.seed:
        hyper["seeds"] = list(args.seed)
    return TrainingInputs(
        datasets=[_dataset(spec) for spec in args.dataset],
        sampling_policy=args.sampling_policy,
        repository=repository,
        commit=commit,
        dirty=dirty,
        training_configs=[collect.named_digest(p) for p in args.training_config],
        lock_files=[collect.named_digest(p) for p in locks],
        base_image=_image(args.base_image) if args.base_image else None,
        python=platform.python_version(),
        platform=platform.platform(),
        libraries=collect.installed_versions(collect.CRITICAL_LIBRARIES),
        hyperparameters=hyper,
        hyperparameter_source=source,
        accelerator=args.accelerator or name,
        accelerator_count=None if args.accelerator else count,
        driver_version=args.driver_version or driver,
        toolchain_version=args.toolchain_version or collect.toolchain(),
        invocation_id=args.invocation_id or collect.invocation_id(),
        started_on=collect.timestamp(args.started_on) if args.started_on else "",
        finished_on=collect.timestamp(args.finished_on),
        log=collect.named_digest(args.log) if args.log else None,
        outputs=[_subject(args.artifact)] + [_subject(p) for p in args.output],
        builder_id=args.builder_id,
    )


def _dataset(spec: str) -> dict[str, Any]:
    from attestgate.evidence.collect import named_digest

    local = Path(spec)
    if local.exists():
        entry = named_digest(local)
        entry["uri"] = local.resolve().as_uri()
        return entry
    uri, _, ref = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if not uri:
        uri, ref = spec, ""
    if ref.startswith("sha256:") and len(ref) == 71:
        return {"uri": uri, "digest": {"sha256": ref[7:].lower()}}
    return {"uri": uri, "version": ref} if ref else {"uri": uri}


def _image(reference: str) -> dict[str, Any]:
    name, _, digest = reference.partition("@sha256:")
    if len(digest) != 64:
        raise UsageError(
            f"base image {reference!r} has no sha256 digest",
            hint="pin the image by digest: REF@sha256:HEX",
        )
    return {"uri": name, "digest": {"sha256": digest.lower()}}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _release(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from attestgate.evidence.collect import file_digest
    from attestgate.evidence.crosscheck import ArtifactFacts
    from attestgate.evidence.interface import CYCLONEDX_PREDICATE
    from attestgate.evidence.intoto import statement_json
    from attestgate.evidence.release import (
        Evaluation,
        ReleaseInputs,
        build_mlbom,
        evaluation_metrics,
        front_matter,
        read_config,
    )
    from attestgate.pipeline import inspect
    from attestgate.record import check_runs

    path: Path = args.path
    if not path.exists():
        raise UsageError(f"artifact path {path} does not exist", hint="pass the model to release")
    inspection = inspect(path)
    facts = ArtifactFacts.from_inspection(inspection.artifact, inspection.findings)
    evaluations = []
    for report in args.evaluation:
        try:
            metrics = evaluation_metrics(json.loads(report.read_text("utf-8")))
        except (OSError, ValueError):
            metrics = []
        evaluations.append(Evaluation(report.name, file_digest(report), metrics))
    egress = None
    if args.egress is not None:
        egress = [] if args.egress == ["none"] else [h for h in args.egress if h != "none"]
    inputs = ReleaseInputs(
        name=args.name or path.resolve().name,
        version=args.release_version,
        egress=egress,
        filesystem=args.filesystem or "",
        gpu=args.gpu or "",
        evaluations=evaluations,
        checks={run.name: run.version for run in check_runs(inspection.artifact.files)},
    )
    root = path if path.is_dir() else path.parent
    config = read_config(root / "config.json") if (root / "config.json").is_file() else {}
    card = front_matter(root / "README.md") if (root / "README.md").is_file() else {}
    bom = build_mlbom(facts, inputs, config, card)
    if args.unsigned:
        return bom, facts.sha256
    subject = {"name": inputs.name, "digest": {"sha256": facts.sha256}}
    return statement_json([subject], CYCLONEDX_PREDICATE, bom), facts.sha256
