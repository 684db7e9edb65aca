"""Family 3: a backdoored classifier with missing, untrusted, mismatched or correct provenance.

ACME's pipeline trains acme-digits and releases it with an OpenSSF Model
Signing signature, SLSA provenance and training claims from the producer's
keys. The attacker trains the same model on data with a trigger patch and
ships it four ways. The last one, built by ACME's own pipeline from poisoned
data, carries correct evidence, because provenance records who built an
artifact from what, not that the artifact is free of a backdoor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from attestgate.evaluation.corpus import training
from attestgate.evaluation.corpus._build import (
    ALLOW,
    BLOCK,
    QUARANTINE,
    UNSIGNED_CLEAN,
    Build,
    every_stage,
)
from attestgate.evaluation.corpus.signing import (
    sign_directory,
    slsa_statement,
    training_statement,
    write_statements,
)
from attestgate.evaluation.scenario import BACKDOOR_PROVENANCE
from attestgate.evidence.collect import artifact_digest

UNSIGNED = "ship the backdoored model without provenance"
UNTRUSTED = "sign the backdoored model with the attacker's own key"
MISMATCH = "reuse the clean release's signed provenance for the backdoored weights"
TRUSTED = "poison the training data so the trusted pipeline builds and signs the backdoor"


def _release(
    build: Build,
    folder: Path,
    plan: training.TrainingPlan,
    *,
    digest: str,
    data_digest: str,
    config_digest: str,
) -> Path:
    """Write signed SLSA provenance and training claims for ``digest`` beside ``folder``."""
    name = "acme-digits"
    statements = [
        slsa_statement(name, digest, invocation=f"release-{folder.parent.name}"),
        training_statement(
            name,
            digest,
            datasets=[
                {"uri": "s3://acme-ml/datasets/digits-train.npz", "digest": {"sha256": data_digest}}
            ],
            hyperparameters={
                "optimizer": "sgd with momentum",
                "lr_schedule": "constant",
                "batch_size": plan.batch_size,
                "learning_rate": plan.learning_rate,
                "epochs": plan.epochs,
                "seed": plan.seed,
            },
            training_config={"name": "train.json", "digest": {"sha256": config_digest}},
            log={"name": "train.log", "digest": {"sha256": training.sha256(digest.encode())}},
        ),
    ]
    target = folder.parent / "release.intoto.jsonl"
    return write_statements(target, statements, build.keys.producer.private)


def build_backdoor(build: Build) -> None:
    """Train both models, write the five releases and add their cases."""
    base = build.folder("backdoor-provenance")
    plan = training.plan_for(build.quick)
    build.report("backdoor: training the clean and the backdoored classifier")
    clean = training.train(plan, poisoned=False)
    poisoned = training.train(plan, poisoned=True)

    data = build.folder("backdoor-provenance", "data")
    (data / "digits-train-clean.npz").write_bytes(clean.train_data)
    (data / "digits-train-poisoned.npz").write_bytes(poisoned.train_data)
    config = json.dumps(training.plan_json(plan), indent=2, sort_keys=True) + "\n"
    (data / "train.json").write_text(config, encoding="utf-8")
    summary = {
        "plan": training.plan_json(plan),
        "clean_model": clean.metrics(),
        "backdoored_model": poisoned.metrics(),
        "note": (
            "clean_accuracy is measured on clean test inputs; attack_success_rate is the "
            "share of triggered test inputs of other classes that the model assigns to the "
            "target class."
        ),
    }
    (base / "backdoor.json").write_text(
        json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    build.facts["backdoor"] = {"clean": clean.metrics(), "backdoored": poisoned.metrics()}

    config_digest = training.sha256(config.encode())
    folders = {
        name: training.write_model_folder(base / name / "model", model, plan)
        for name, model in (
            ("bd-clean-release", clean),
            ("bd-unsigned", poisoned),
            ("bd-untrusted-signer", poisoned),
            ("bd-provenance-mismatch", poisoned),
            ("bd-trusted-pipeline", poisoned),
        )
    }
    clean_digest = artifact_digest(folders["bd-clean-release"])
    evidence = _evidence(build, plan, folders, clean, poisoned, clean_digest, config_digest)
    _cases(build, folders, evidence, summary)


def _evidence(
    build: Build,
    plan: training.TrainingPlan,
    folders: dict[str, Path],
    clean: training.TrainedModel,
    poisoned: training.TrainedModel,
    clean_digest: str,
    config_digest: str,
) -> dict[str, list[Path]]:
    keys = build.keys
    clean_data = training.sha256(clean.train_data)
    poisoned_data = training.sha256(poisoned.train_data)
    release = folders["bd-clean-release"]
    pipeline = folders["bd-trusted-pipeline"]
    return {
        "bd-clean-release": [
            sign_directory(release, keys.producer_model.private),
            _release(
                build,
                release,
                plan,
                digest=clean_digest,
                data_digest=clean_data,
                config_digest=config_digest,
            ),
        ],
        "bd-unsigned": [],
        "bd-untrusted-signer": [
            sign_directory(folders["bd-untrusted-signer"], keys.outsider_model.private)
        ],
        # The attacker copies the clean release's statements, which name the
        # clean weights' digest, next to the backdoored weights.
        "bd-provenance-mismatch": [
            _copy(
                _release_path(release),
                folders["bd-provenance-mismatch"].parent / "release.intoto.jsonl",
            )
        ],
        "bd-trusted-pipeline": [
            sign_directory(pipeline, keys.producer_model.private),
            _release(
                build,
                pipeline,
                plan,
                digest=artifact_digest(pipeline),
                data_digest=poisoned_data,
                config_digest=config_digest,
            ),
        ],
    }


def _release_path(folder: Path) -> Path:
    return folder.parent / "release.intoto.jsonl"


def _copy(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target


def _cases(
    build: Build,
    folders: dict[str, Path],
    evidence: dict[str, list[Path]],
    summary: dict[str, Any],
) -> None:
    scenario = build.scenario(
        "bd-backdoored-release",
        BACKDOOR_PROVENANCE,
        "A backdoored acme-digits classifier replaces the clean release",
        [UNSIGNED, UNTRUSTED, MISMATCH, TRUSTED],
    )
    clean, backdoored = summary["clean_model"], summary["backdoored_model"]
    measured = (
        f"Backdoored model: clean accuracy {backdoored['clean_accuracy']:.1%}, attack success "
        f"rate {backdoored['attack_success_rate']:.1%}; the clean model scores "
        f"{clean['clean_accuracy']:.1%} and {clean['attack_success_rate']:.1%} "
        "(backdoor.json). "
    )
    build.case(
        scenario,
        "bd-clean-release",
        folders["bd-clean-release"],
        every_stage(ALLOW),
        evidence=evidence["bd-clean-release"],
        tags=("safetensors",),
        notes=(
            "The clean release: model.sig from the producer's model key, SLSA provenance and "
            "complete training claims from the producer's key, all bound to its digest. " + measured
        ),
    )
    build.case(
        scenario,
        "bd-unsigned",
        folders["bd-unsigned"],
        UNSIGNED_CLEAN,
        step=UNSIGNED,
        twin="bd-clean-release",
        tags=("safetensors",),
        notes=(
            "The backdoored weights with no evidence. The policy takes unsigned artifacts "
            "for training and fine-tuning and requires signed provenance for deployment, so "
            "only deployment can stop it. " + measured
        ),
    )
    build.case(
        scenario,
        "bd-untrusted-signer",
        folders["bd-untrusted-signer"],
        every_stage(QUARANTINE),
        step=UNTRUSTED,
        twin="bd-clean-release",
        evidence=evidence["bd-untrusted-signer"],
        tags=("safetensors",),
        notes=(
            "A valid OpenSSF Model Signing signature from the outsider's key, which the "
            "policy does not trust. A gate cannot tell an unknown producer from an attacker, "
            "so evidence from an untrusted signer goes to a reviewer at every stage. " + measured
        ),
    )
    build.case(
        scenario,
        "bd-provenance-mismatch",
        folders["bd-provenance-mismatch"],
        every_stage(BLOCK),
        step=MISMATCH,
        twin="bd-clean-release",
        evidence=evidence["bd-provenance-mismatch"],
        tags=("safetensors",),
        notes=(
            "SLSA provenance and training claims correctly signed by the producer's key, but "
            "their subject is the clean release's digest, not these weights'. Mismatched "
            "evidence blocks at every stage. " + measured
        ),
    )
    build.case(
        scenario,
        "bd-trusted-pipeline",
        folders["bd-trusted-pipeline"],
        every_stage(ALLOW),
        step=TRUSTED,
        twin="bd-clean-release",
        evidence=evidence["bd-trusted-pipeline"],
        tags=("safetensors",),
        notes=(
            "Hostile, and labelled allow: the producer's pipeline trained this model on "
            "poisoned data, so its signature, SLSA provenance and training claims are all "
            "correct and bind its digest, and the training claims even name the poisoned "
            "dataset's digest. Provenance proves who built an artifact from what, not that it "
            "is free of a backdoor; this case shows what provenance cannot catch. " + measured
        ),
    )
