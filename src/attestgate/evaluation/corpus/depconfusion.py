"""Family 1: dependency confusion and typosquatting against ACME's Python packages.

ACME publishes three internal packages (acme-tokenizers, acme-features,
acme-eval) on an internal index, each release with SLSA provenance signed by
the producer key, and mirrors the public package tinytable there. An
attacker publishes acme-tokenizers and acme-features on the public index at
version 99.0.0, uploads an unsigned acme-eval release to the internal index
with a stolen token, and publishes look-alikes of popular ML packages.

Both indexes are static PEP 503 folders served from 127.0.0.1 while the
family is built. The public index's project list that the gate checks
against is the page fetched from that server, and pip is asked which file it
would download when both indexes are searched.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from attestgate.evaluation.corpus._build import (
    ALLOW,
    BLOCK,
    QUARANTINE,
    Build,
    every_stage,
)
from attestgate.evaluation.corpus.index import (
    Wheel,
    fetch,
    serve_index,
    write_simple_index,
    write_wheel,
)
from attestgate.evaluation.corpus.resolve import pip_resolve
from attestgate.evaluation.corpus.signing import write_provenance
from attestgate.evaluation.scenario import DEPENDENCY_CONFUSION, Scenario

INTERNAL_PACKAGES = ("acme-tokenizers", "acme-features", "acme-eval")
# Requirement files name the two indexes by these addresses, which the local
# servers stand in for; .invalid never resolves, so pip run on a corpus file
# outside the corpus reaches no real index.
INTERNAL_URL = "https://pypi.acme.invalid/simple/"
PUBLIC_URL = "https://pypi.public.invalid/simple/"

PUBLIC_HIGHER = "publish an internal package name on the public index at a higher version"
STARTUP_HOOK = "ship a wheel whose import and interpreter start-up hooks run the payload"
EXTRA_INDEX = (
    "rely on a requirements file that adds the public index with --extra-index-url "
    "and leaves an internal name unpinned"
)
NO_HASHES = (
    "rely on a requirements file without hashes, so a different file served for "
    "the same version installs unnoticed"
)
UNSIGNED_RELEASE = "upload an unsigned release to the internal index with a stolen upload token"
TYPO_WHEEL = "publish a wheel under a misspelling of a popular ML package"
TYPO_PIN = "get the misspelled name pinned in a requirements file"

NO_TWIN_TYPO = (
    "No twin: the hostile part is the name itself, and the correctly spelled name "
    "belongs to a real public project that the corpus does not ship; "
    "dc-pinned-requirements is the clean requirements file."
)


def _module(project: str, version: str, payload: bool) -> bytes:
    lines = [f'"""{project}: part of the corpus, never meant to be imported."""', ""]
    if payload:
        # The canary only writes a marker file; real payloads send the host
        # name, environment and credentials to the attacker instead.
        lines += [
            "import os",
            "import pathlib",
            "",
            "pathlib.Path('attestgate-canary.txt').write_text(",
            "    f'{__name__} was imported by user {os.getuid()}\\n'",
            ")",
            "",
        ]
    lines.append(f'__version__ = "{version}"')
    return ("\n".join(lines) + "\n").encode()


def _wheel(
    folder: Path, project: str, version: str, *, payload: bool = False, hook: bool = False
) -> Wheel:
    package = project.replace("-", "_")
    files = {
        f"{package}/__init__.py": _module(project, version, payload),
        f"{package}/core.py": b"def describe() -> str:\n    return __name__\n",
    }
    if hook:
        # site.py executes an "import" line of a .pth file in site-packages at
        # every interpreter start, whether or not the package is ever imported.
        files[f"{package}-startup.pth"] = f"import {package}\n".encode()
    return write_wheel(folder, project, version, files)


class _Indexes:
    """The wheels of both indexes and the provenance of the signed ones."""

    def __init__(self, build: Build, base: Path) -> None:
        self.build = build
        self.internal = base / "index-internal"
        self.public = base / "index-public"
        self.provenance_folder = base / "provenance"
        self.provenance: dict[str, Path] = {}
        self.wheels: dict[str, Wheel] = {}

        internal = self.internal / "packages"
        public = self.public / "packages"
        internal_wheels = [
            self._signed(internal, "acme-tokenizers", "1.0.0"),
            self._signed(internal, "acme-tokenizers", "1.1.0"),
            self._signed(internal, "acme-tokenizers", "1.2.0"),
            self._signed(internal, "acme-features", "1.0.0"),
            self._signed(internal, "acme-eval", "1.0.0"),
            self._signed(internal, "acme-eval", "1.1.0"),
            self._add(_wheel(internal, "acme-eval", "1.2.0", payload=True)),
            self._add(_wheel(internal, "tinytable", "1.4.0")),
        ]
        public_wheels = [
            self._add(_wheel(public, "acme-tokenizers", "99.0.0", payload=True)),
            self._add(_wheel(public, "acme-features", "99.0.0", payload=True, hook=True)),
            self._add(_wheel(public, "torchh", "2.3.0", payload=True)),
            self._add(_wheel(public, "transformres", "4.41.0", payload=True)),
            # The internal index mirrors this public package byte for byte.
            _wheel(public, "tinytable", "1.4.0"),
        ]
        write_simple_index(self.internal, internal_wheels)
        write_simple_index(self.public, public_wheels)

    def _add(self, wheel: Wheel) -> Wheel:
        self.wheels[wheel.path.name] = wheel
        return wheel

    def _signed(self, folder: Path, project: str, version: str) -> Wheel:
        wheel = self._add(_wheel(folder, project, version))
        target = self.provenance_folder / f"{wheel.path.name}.intoto.jsonl"
        self.provenance[wheel.path.name] = write_provenance(
            wheel.path, target, self.build.keys.producer.private
        )
        return wheel

    def get(self, project: str, version: str) -> Wheel:
        name = f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
        return self.wheels[name]


def build_dependency_confusion(build: Build) -> None:
    """Write the indexes, serve them, and add the family's scenarios and cases."""
    base = build.folder("dependency-confusion")
    indexes = _Indexes(build, base)
    internal_names = base / "internal-packages.txt"
    internal_names.write_text(
        "# Projects published only on ACME's internal index\n"
        + "".join(f"{name}\n" for name in INTERNAL_PACKAGES),
        encoding="utf-8",
    )
    snapshot = base / "public-index-snapshot.html"

    with ExitStack() as stack:
        internal = stack.enter_context(serve_index(indexes.internal))
        public = stack.enter_context(serve_index(indexes.public))
        snapshot.write_bytes(fetch(public.simple))
        resolution = {
            "requirement": "acme-tokenizers",
            "indexes": {"--index-url": "internal", "--extra-index-url": "public"},
            **pip_resolve("acme-tokenizers", [internal.simple, public.simple]),
        }
    (base / "resolution.json").write_text(
        json.dumps(resolution, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    build.facts["dependency_confusion_resolution"] = resolution["resolved"]
    build.report(f"dependency confusion: pip resolved acme-tokenizers to {resolution['resolved']}")

    env = {
        "ATTESTGATE_INTERNAL_PACKAGES": build.relative(internal_names),
        "ATTESTGATE_PUBLIC_INDEX_SNAPSHOT": build.relative(snapshot),
    }
    _takeover_cases(build, base, indexes, env)
    _typosquat_cases(build, base, indexes, env)


def _requirements(build: Build, base: Path, case_id: str, text: str) -> tuple[Path, Path]:
    """Write a requirements file signed by the producer; return it and its provenance."""
    path = base / "requirements" / case_id / "requirements.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    evidence = base / "provenance" / f"{case_id}.requirements.intoto.jsonl"
    write_provenance(path, evidence, build.keys.producer.private)
    return path, evidence


def _takeover_cases(build: Build, base: Path, indexes: _Indexes, env: dict[str, str]) -> None:
    scenario = build.scenario(
        "dc-internal-name-takeover",
        DEPENDENCY_CONFUSION,
        "An attacker takes over ACME's internal package names through the public index",
        [PUBLIC_HIGHER, STARTUP_HOOK, EXTRA_INDEX, NO_HASHES, UNSIGNED_RELEASE],
    )
    _wheel_cases(build, scenario, indexes, env)
    _requirement_cases(build, base, scenario, indexes, env)


def _wheel_cases(build: Build, scenario: Scenario, indexes: _Indexes, env: dict[str, str]) -> None:
    signed_twin = (
        "The producer's own release with SLSA provenance from the trusted key. Its name "
        "is also on the public index now, because the attacker took it, but this file is "
        "the internal release: blocking it blocks the name, not a hostile artifact."
    )
    legit = indexes.get("acme-tokenizers", "1.2.0")
    build.case(
        scenario,
        "dc-public-higher-version",
        indexes.get("acme-tokenizers", "99.0.0").path,
        every_stage(BLOCK),
        step=PUBLIC_HIGHER,
        twin="dc-internal-release",
        env=env,
        tags=("wheel",),
        notes=(
            "acme-tokenizers is an internal name, and the public index serves it at 99.0.0, "
            "above the internal 1.2.0; pip searching both indexes downloads the public file "
            "(resolution.json). Its __init__ writes a canary file when imported. The exposed "
            "internal name and the missing provenance are visible to a gate; the import-time "
            "payload is ordinary Python to a static scanner."
        ),
    )
    build.case(
        scenario,
        "dc-internal-release",
        legit.path,
        every_stage(ALLOW),
        evidence=[indexes.provenance[legit.path.name]],
        env=env,
        tags=("wheel",),
        notes=signed_twin,
    )

    features = indexes.get("acme-features", "1.0.0")
    build.case(
        scenario,
        "dc-startup-hook-wheel",
        indexes.get("acme-features", "99.0.0").path,
        every_stage(BLOCK),
        step=STARTUP_HOOK,
        twin="dc-internal-release-features",
        env=env,
        tags=("wheel",),
        notes=(
            "The canary wheel: the public acme-features 99.0.0 has an import-time payload in "
            "__init__ and a .pth file with an import line, which runs at every interpreter "
            "start once installed. A start-up hook has no place in a library, so it blocks "
            "whatever the name."
        ),
    )
    build.case(
        scenario,
        "dc-internal-release-features",
        features.path,
        every_stage(ALLOW),
        evidence=[indexes.provenance[features.path.name]],
        env=env,
        tags=("wheel",),
        notes=signed_twin,
    )

    signed_eval = indexes.get("acme-eval", "1.1.0")
    build.case(
        scenario,
        "dc-unsigned-release",
        indexes.get("acme-eval", "1.2.0").path,
        every_stage(QUARANTINE),
        step=UNSIGNED_RELEASE,
        twin="dc-signed-release",
        env=env,
        tags=("wheel",),
        notes=(
            "acme-eval 1.0.0 and 1.1.0 carry SLSA provenance from the producer key; 1.2.0, "
            "uploaded with a stolen token, has none and imports a canary payload. The corpus "
            "policy admits code (Python files, TorchScript) only with a trusted signature "
            "(custom.unsigned-code), and deployment requires signed provenance, so every "
            "stage quarantines. Blocking would need the release history or a reading of the "
            "Python payload, which a static gate does not have."
        ),
    )
    build.case(
        scenario,
        "dc-signed-release",
        signed_eval.path,
        every_stage(ALLOW),
        evidence=[indexes.provenance[signed_eval.path.name]],
        env=env,
        tags=("wheel",),
        notes="A clean wheel with SLSA provenance from the producer key; its name is not public.",
    )


def _requirement_cases(
    build: Build, base: Path, scenario: Scenario, indexes: _Indexes, env: dict[str, str]
) -> None:
    tokenizers = indexes.get("acme-tokenizers", "1.2.0")
    evaluation = indexes.get("acme-eval", "1.1.0")
    table = indexes.get("tinytable", "1.4.0")

    loose, loose_evidence = _requirements(
        build,
        base,
        "dc-extra-index",
        f"--index-url {INTERNAL_URL}\n--extra-index-url {PUBLIC_URL}\n"
        "acme-tokenizers\nacme-eval==1.1.0\ntinytable==1.4.0\n",
    )
    build.case(
        scenario,
        "dc-extra-index",
        loose,
        every_stage(BLOCK),
        step=EXTRA_INDEX,
        twin="dc-pinned-internal-requirements",
        evidence=[loose_evidence],
        env=env,
        tags=("requirements",),
        notes=(
            "Two indexes and an unpinned internal name: pip installs the highest version on "
            "either index, which is the attacker's 99.0.0 (resolution.json). The file is "
            "signed by the producer, and the signature does not make the resolution safe."
        ),
    )
    pinned, pinned_evidence = _requirements(
        build,
        base,
        "dc-pinned-internal-requirements",
        f"--index-url {INTERNAL_URL}\n"
        f"acme-tokenizers==1.2.0 --hash=sha256:{tokenizers.sha256}\n"
        f"acme-eval==1.1.0 --hash=sha256:{evaluation.sha256}\n"
        f"tinytable==1.4.0 --hash=sha256:{table.sha256}\n",
    )
    build.case(
        scenario,
        "dc-pinned-internal-requirements",
        pinned,
        every_stage(ALLOW),
        evidence=[pinned_evidence],
        env=env,
        tags=("requirements",),
        notes=(
            "One index, exact pins and hashes, signed by the producer: pip fetches only from "
            "the internal index and rejects any file whose hash differs, so the public 99.0.0 "
            "cannot be installed from this file even though the name is public."
        ),
    )

    unhashed, unhashed_evidence = _requirements(
        build,
        base,
        "dc-no-hashes",
        f"--index-url {INTERNAL_URL}\nacme-eval==1.1.0\ntinytable==1.4.0\n",
    )
    build.case(
        scenario,
        "dc-no-hashes",
        unhashed,
        {"training": ALLOW, "fine-tuning": ALLOW, "deployment": QUARANTINE},
        step=NO_HASHES,
        twin="dc-pinned-requirements",
        evidence=[unhashed_evidence],
        env=env,
        tags=("requirements",),
        notes=(
            "Exact pins on one index but no hashes: an index or mirror that serves a "
            "different file for acme-eval 1.1.0 gets it installed unnoticed. Training and "
            "fine-tuning accept the weakness (a low finding); the corpus policy maps "
            "deps.missing-hash to quarantine for deployment. The file is signed by the "
            "producer, so the deployment label rests on the missing hashes alone."
        ),
    )
    hashed, hashed_evidence = _requirements(
        build,
        base,
        "dc-pinned-requirements",
        f"--index-url {INTERNAL_URL}\n"
        f"acme-eval==1.1.0 --hash=sha256:{evaluation.sha256}\n"
        f"tinytable==1.4.0 --hash=sha256:{table.sha256}\n",
    )
    build.case(
        scenario,
        "dc-pinned-requirements",
        hashed,
        every_stage(ALLOW),
        evidence=[hashed_evidence],
        env=env,
        tags=("requirements",),
        notes="Exact pins with hashes on one index, signed by the producer.",
    )


def _typosquat_cases(build: Build, base: Path, indexes: _Indexes, env: dict[str, str]) -> None:
    scenario = build.scenario(
        "dc-typosquat",
        DEPENDENCY_CONFUSION,
        "An attacker publishes look-alike names of popular ML packages",
        [TYPO_WHEEL, TYPO_PIN],
    )
    build.case(
        scenario,
        "dc-typosquat-wheel",
        indexes.get("torchh", "2.3.0").path,
        every_stage(BLOCK),
        step=TYPO_WHEEL,
        env=env,
        tags=("wheel",),
        notes="torchh imitates torch and imports a canary payload. " + NO_TWIN_TYPO,
    )
    squat = indexes.get("transformres", "4.41.0")
    pinned, evidence = _requirements(
        build,
        base,
        "dc-typosquat-requirements",
        f"--index-url {PUBLIC_URL}\ntransformres==4.41.0 --hash=sha256:{squat.sha256}\n",
    )
    build.case(
        scenario,
        "dc-typosquat-requirements",
        pinned,
        every_stage(BLOCK),
        step=TYPO_PIN,
        evidence=[evidence],
        env=env,
        tags=("requirements",),
        notes=(
            "A developer's slip pins transformres, the attacker's look-alike of transformers, "
            "with the hash of the attacker's file. Pins and hashes make the install "
            "reproducible, not safe, and the producer's signature only says who committed it. "
            + NO_TWIN_TYPO
        ),
    )
