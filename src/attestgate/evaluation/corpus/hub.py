"""Family 2: hub repositories whose files run code, read files or unpickle when loaded.

Each hostile case is a repository folder laid out as a model hub serves it
(config.json, tokenizer_config.json, README.md and the model files), and each
has a clean twin with the same layout and the hostile part removed. Clean
files come from the format's own writer; hostile parts are bytes added by
:mod:`attestgate.evaluation.corpus.hostile` and
:mod:`attestgate.evaluation.corpus.pickles`. Nothing here is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestgate.evaluation.corpus import hostile, models, pickles
from attestgate.evaluation.corpus._build import (
    BLOCK,
    QUARANTINE,
    UNSIGNED_CLEAN,
    UNSIGNED_NOTE,
    Build,
    every_stage,
)
from attestgate.evaluation.corpus.archives import tar_gz_bytes, write_7z, zip_bytes
from attestgate.evaluation.corpus.index import write_wheel
from attestgate.evaluation.scenario import MALICIOUS_HUB, Scenario

EXECUTES = (
    "Loading it runs os.system (a canary command here), so the policy's block for an "
    "executable payload applies at every stage."
)


REDUCE = "put a GLOBAL+REDUCE payload in a PyTorch checkpoint's data.pkl"
SECOND_PICKLE = "hide the payload in a second pickle inside the checkpoint archive"
NESTED = "nest the pickle payload in a zip inside a tar.gz"
SEVEN_ZIP = "compress the pickle payload with 7z"
TRUNCATED = "truncate the pickle after its payload"
NUMPY_OBJECT = "store a pickle payload as a NumPy object array"
JOBLIB = "inject a payload into a joblib file"
MODEL_IN_WHEEL = "ship a hostile checkpoint inside a Python wheel"
KERAS_LAMBDA = "add a Lambda layer with marshalled bytecode to a Keras model"
KERAS_MODULE = "name a function from a module outside Keras in a Keras config"
GGUF_TEMPLATE = "inject a dunder-walking chat template into GGUF metadata"
TOKENIZER_TEMPLATE = "inject a dunder-walking chat template into tokenizer_config.json"
ONNX_DOTDOT = "point ONNX external data outside the repository with ../"
ONNX_ABSOLUTE = "point ONNX external data at an absolute path"
ONNX_SYMLINK = "point ONNX external data at a symbolic link that leaves the repository"
AUTO_MAP = "ship custom modeling code that auto_map imports"
DATASET_SCRIPT = "ship a dataset loading script with a payload"

_SCENARIOS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "hub-pickle",
        "Unsafe deserialization in pickle-based checkpoints and arrays",
        (REDUCE, SECOND_PICKLE, NESTED, SEVEN_ZIP, TRUNCATED, NUMPY_OBJECT, JOBLIB, MODEL_IN_WHEEL),
    ),
    ("hub-keras", "Code in Keras model configurations", (KERAS_LAMBDA, KERAS_MODULE)),
    ("hub-template", "Chat-template injection", (GGUF_TEMPLATE, TOKENIZER_TEMPLATE)),
    (
        "hub-onnx",
        "ONNX external data that reads outside the repository",
        (ONNX_DOTDOT, ONNX_ABSOLUTE, ONNX_SYMLINK),
    ),
    ("hub-remote-code", "Repository code that loaders import", (AUTO_MAP, DATASET_SCRIPT)),
)


@dataclass(frozen=True)
class Pair:
    """A hostile repository and its clean twin."""

    name: str
    step: str
    hostile: Path
    clean: Path
    tags: tuple[str, ...]
    notes: str
    clean_expected: dict[str, str] | None = None
    clean_notes: str = UNSIGNED_NOTE


def write_repo(folder: Path, *, config: dict[str, Any] | None = None, template: str = "") -> Path:
    """Write the files every model repository has: config, tokenizer config and model card."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {"model_type": "tiny", "architectures": ["TinyModel"], "hidden_size": 64}
    document.update(config or {})
    (folder / "config.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tokenizer = {
        "model_max_length": 128,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": template or models.BENIGN_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(tokenizer, indent=2) + "\n", encoding="utf-8"
    )
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n\n"
        "# tiny-model\n\nA small model generated for the attestgate evaluation corpus.\n",
        encoding="utf-8",
    )
    return folder


class _Hub:
    """Writes repository pairs under ``malicious-hub/``."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self.base = build.folder("malicious-hub")
        self.size = 4_096 if build.quick else 262_144
        # Plain pickles hold Python floats, which pickle and compress slowly;
        # they carry payloads, so they stay small in either mode.
        self.pickle_size = 4_096 if build.quick else 16_384

    def pair(self, name: str) -> tuple[Path, Path]:
        return write_repo(self.base / name), write_repo(self.base / f"{name}-clean")


def _pickle_pairs(hub: _Hub) -> list[Pair]:
    size = hub.size
    pairs = []

    bad, good = hub.pair("hub-pickle-reduce")
    hostile.write_torch_reduce(bad / "pytorch_model.bin", "hub/torch", size)
    models.write_torch(good / "pytorch_model.bin", "hub/torch", size)
    pairs.append(
        Pair(
            "hub-pickle-reduce",
            REDUCE,
            bad,
            good,
            ("pytorch-zip", "pickle"),
            "data.pkl of a torch.save checkpoint calls os.system through GLOBAL and REDUCE, "
            "then returns the real state dict, so the model still loads. " + EXECUTES,
        )
    )

    bad, good = hub.pair("hub-second-pickle")
    hostile.write_torch_second_pickle(bad / "pytorch_model.bin", "hub/torch2", size)
    models.write_torch(good / "pytorch_model.bin", "hub/torch2", size)
    pairs.append(
        Pair(
            "hub-second-pickle",
            SECOND_PICKLE,
            bad,
            good,
            ("pytorch-zip", "pickle"),
            "data.pkl is clean; a second member, extra_state.pkl, is a pickle that calls "
            "os.system. Any loader that unpickles it runs the command, and a scanner that "
            "reads only data.pkl misses it. " + EXECUTES,
        )
    )

    bad, good = hub.pair("hub-nested-archive")
    clean = models.plain_pickle("hub/nested", hub.pickle_size)
    for folder, data in ((bad, pickles.inject(clean)), (good, clean)):
        inner = zip_bytes({"model.pkl": data})
        (folder / "model-bundle.tar.gz").write_bytes(
            tar_gz_bytes({"bundle/weights.zip": inner, "bundle/VERSION": b"1\n"})
        )
    pairs.append(
        Pair(
            "hub-nested-archive",
            NESTED,
            bad,
            good,
            ("tar", "gzip", "zip", "pickle"),
            "A pickle with an os.system call inside a zip inside a tar.gz; unpacking the "
            "bundle and loading model.pkl runs it. " + EXECUTES,
        )
    )

    bad, good = hub.pair("hub-7z-pickle")
    clean = models.plain_pickle("hub/7z", hub.pickle_size)
    write_7z(bad / "model.7z", {"model.pkl": pickles.inject(clean)})
    write_7z(good / "model.7z", {"model.pkl": clean})
    pairs.append(
        Pair(
            "hub-7z-pickle",
            SEVEN_ZIP,
            bad,
            good,
            ("7z", "pickle"),
            "A pickle with an os.system call, compressed with 7z (LZMA2), a container many "
            "scanners do not open. " + EXECUTES,
        )
    )

    bad, good = hub.pair("hub-truncated-pickle")
    clean = models.plain_pickle("hub/truncated", hub.pickle_size)
    (bad / "model.pkl").write_bytes(pickles.truncate_after_payload(clean))
    (good / "model.pkl").write_bytes(clean)
    pairs.append(
        Pair(
            "hub-truncated-pickle",
            TRUNCATED,
            bad,
            good,
            ("pickle",),
            "A pickle cut off after its os.system call: the unpickler runs the call before it "
            "fails on the missing end, and a scanner that gives up on a broken stream "
            "reports nothing. " + EXECUTES,
        )
    )
    return pairs


def _array_pairs(hub: _Hub) -> list[Pair]:
    size = hub.size
    bad, good = hub.pair("hub-numpy-object")
    (bad / "embeddings.npy").write_bytes(
        pickles.npy_object_array(pickles.system_payload(protocol=3))
    )
    models.write_npy(good / "embeddings.npy", "hub/npy", size)
    numpy_pair = Pair(
        "hub-numpy-object",
        NUMPY_OBJECT,
        bad,
        good,
        ("numpy", "pickle"),
        "An .npy file of object dtype whose data is a pickle calling os.system; "
        "numpy.load(allow_pickle=True) runs it. " + EXECUTES,
    )

    bad, good = hub.pair("hub-joblib")
    models.write_joblib(good / "model.joblib", "hub/joblib", size)
    (bad / "model.joblib").write_bytes(pickles.inject((good / "model.joblib").read_bytes()))
    joblib_pair = Pair(
        "hub-joblib",
        JOBLIB,
        bad,
        good,
        ("joblib", "pickle"),
        "A joblib.dump file with an os.system call injected before its content; "
        "joblib.load unpickles it. " + EXECUTES,
    )
    return [numpy_pair, joblib_pair]


def _wheel_pair(hub: _Hub) -> Pair:
    folders = []
    for name, payload in (("hub-model-in-wheel", True), ("hub-model-in-wheel-clean", False)):
        folder = hub.base / name
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / "weights.pt"
        if payload:
            hostile.write_torch_reduce(weights, "hub/wheel", hub.size)
        else:
            models.write_torch(weights, "hub/wheel", hub.size)
        loader = (
            b"import pathlib\n\nimport torch\n\n"
            b"WEIGHTS = pathlib.Path(__file__).with_name('weights.pt')\n\n\n"
            b"def load():\n    return torch.load(WEIGHTS, weights_only=False)\n"
        )
        files = {"tiny_model/__init__.py": loader, "tiny_model/weights.pt": weights.read_bytes()}
        weights.unlink()
        folders.append(write_wheel(folder, "tiny-model", "1.0.0", files).path)
    return Pair(
        "hub-model-in-wheel",
        MODEL_IN_WHEEL,
        folders[0],
        folders[1],
        ("wheel", "pytorch-zip", "pickle"),
        "A wheel that ships its weights as a torch.save checkpoint whose data.pkl calls "
        "os.system; the package loads it with weights_only=False. " + EXECUTES,
        clean_expected=every_stage(QUARANTINE),
        clean_notes=(
            "The clean wheel still contains Python code without a trusted signature, which "
            "the corpus policy quarantines at every stage (custom.unsigned-code)."
        ),
    )


def _keras_pairs(hub: _Hub) -> list[Pair]:
    size = hub.size
    clean = models.keras_sequential([models.keras_dense("dense", 64)])
    relu = models.keras_function("keras.activations", "relu")
    pairs = []

    bad, good = hub.pair("hub-keras-lambda")
    config = models.keras_sequential(
        [models.keras_dense("dense", 64), hostile.lambda_layer("lambda")]
    )
    models.write_keras(bad / "model.keras", "hub/keras", size, config)
    models.write_keras(good / "model.keras", "hub/keras", size, clean)
    pairs.append(
        Pair(
            "hub-keras-lambda",
            KERAS_LAMBDA,
            bad,
            good,
            ("keras",),
            "A Lambda layer whose function is marshalled bytecode calling os.system; Keras "
            "rebuilds and runs it when loading with safe_mode=False and in Keras 2. " + EXECUTES,
        )
    )

    bad, good = hub.pair("hub-keras-module")
    system = models.keras_function("os", "system")
    models.write_keras(
        bad / "model.keras",
        "hub/keras-module",
        size,
        models.keras_sequential([models.keras_dense("dense", 64, activation=system)]),
    )
    models.write_keras(
        good / "model.keras",
        "hub/keras-module",
        size,
        models.keras_sequential([models.keras_dense("dense", 64, activation=relu)]),
    )
    pairs.append(
        Pair(
            "hub-keras-module",
            KERAS_MODULE,
            bad,
            good,
            ("keras",),
            "The Dense layer's activation names the function system from module os, which "
            "Keras imports and calls while it builds the model. No Keras model needs os, so "
            "the policy's block for an executable payload applies at every stage.",
        )
    )
    return pairs


def _template_pairs(hub: _Hub) -> list[Pair]:
    bad, good = hub.pair("hub-gguf-template")
    models.write_gguf(bad / "model.gguf", "hub/gguf", hub.size, hostile.HOSTILE_TEMPLATE)
    models.write_gguf(good / "model.gguf", "hub/gguf", hub.size)
    gguf_pair = Pair(
        "hub-gguf-template",
        GGUF_TEMPLATE,
        bad,
        good,
        ("gguf", "chat-template"),
        "The GGUF chat template walks cycler.__init__.__globals__ to os.popen; a runtime "
        "that renders it with a non-sandboxed Jinja2 environment runs the command "
        "(llama-cpp-python, CVE-2024-34359). The policy blocks template injection at every "
        "stage.",
    )

    bad = write_repo(hub.base / "hub-tokenizer-template", template=hostile.HOSTILE_TEMPLATE)
    good = write_repo(hub.base / "hub-tokenizer-template-clean")
    for folder in (bad, good):
        models.write_safetensors(folder / "model.safetensors", "hub/tokenizer", hub.size)
    tokenizer_pair = Pair(
        "hub-tokenizer-template",
        TOKENIZER_TEMPLATE,
        bad,
        good,
        ("safetensors", "chat-template"),
        "The weights are safetensors, but tokenizer_config.json carries a chat template "
        "that walks dunder attributes to os.popen; a server that renders it unsandboxed "
        "runs the command. The policy blocks template injection at every stage.",
    )
    return [gguf_pair, tokenizer_pair]


def _onnx_cases(hub: _Hub) -> tuple[list[tuple[str, str, Path, str]], Path]:
    """Return (name, step, folder, notes) for three escapes, and the clean twin's folder."""
    size = hub.size
    good = write_repo(hub.base / "hub-onnx-external-clean")
    models.write_onnx_external(good, "hub/onnx", size, "weights.bin")
    escapes = [
        ("hub-onnx-dotdot", ONNX_DOTDOT, "../../../../../../../../etc/passwd"),
        ("hub-onnx-absolute", ONNX_ABSOLUTE, "/proc/self/environ"),
        ("hub-onnx-symlink", ONNX_SYMLINK, "weights.bin"),
    ]
    cases = []
    for name, step, location in escapes:
        folder = write_repo(hub.base / name)
        models.write_onnx_external(folder, "hub/onnx", size, location)
        if name == "hub-onnx-symlink":
            (folder / "weights.bin").unlink()
            os.symlink("/etc/passwd", folder / "weights.bin")
        what = (
            "a link inside the folder that points to /etc/passwd"
            if location == "weights.bin"
            else location
        )
        cases.append(
            (
                name,
                step,
                folder,
                f"The weight tensor's external data is {what}; onnxruntime reads that file "
                "into the tensor when the model loads, and its outputs can leak the contents. "
                "The policy blocks reads outside the artifact at every stage.",
            )
        )
    return cases, good


def _code_pairs(hub: _Hub) -> list[Pair]:
    auto_map = {"AutoConfig": "modeling_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"}
    bad = write_repo(hub.base / "hub-auto-map", config={"auto_map": auto_map})
    good = write_repo(hub.base / "hub-auto-map-clean")
    (bad / "modeling_tiny.py").write_text(hostile.PAYLOAD_MODULE, encoding="utf-8")
    for folder in (bad, good):
        models.write_safetensors(folder / "model.safetensors", "hub/auto-map", hub.size)
    auto_map_pair = Pair(
        "hub-auto-map",
        AUTO_MAP,
        bad,
        good,
        ("safetensors", "python"),
        "config.json maps AutoModel to modeling_tiny.py through auto_map, and that module "
        "calls os.system when imported; from_pretrained(trust_remote_code=True) imports it. "
        "The weights are safe, the code is not. " + EXECUTES,
    )

    datasets = []
    for name, script in (("hub-dataset-script", True), ("hub-dataset-script-clean", False)):
        folder = hub.base / name
        models.write_jsonl(
            folder / "data" / "train.jsonl", "hub/dataset", 64 if hub.build.quick else 4096
        )
        (folder / "README.md").write_text(
            "---\nlicense: cc-by-4.0\ntask_categories: [text-classification]\n---\n\n"
            "# tiny-corpus\n\nA dataset generated for the attestgate evaluation corpus.\n",
            encoding="utf-8",
        )
        if script:
            (folder / "tiny_corpus.py").write_text(hostile.LOADING_SCRIPT, encoding="utf-8")
        datasets.append(folder)
    dataset_pair = Pair(
        "hub-dataset-script",
        DATASET_SCRIPT,
        datasets[0],
        datasets[1],
        ("jsonl", "python"),
        "A dataset repository with a loading script, tiny_corpus.py, that calls os.system "
        "when load_dataset imports it (datasets before 4.0, or trust_remote_code=True). "
        + EXECUTES,
    )
    return [auto_map_pair, dataset_pair]


def build_malicious_hub(build: Build) -> None:
    """Write every hostile repository with its clean twin and add their cases."""
    hub = _Hub(build)
    scenarios = {
        id: build.scenario(id, MALICIOUS_HUB, title, steps) for id, title, steps in _SCENARIOS
    }
    writers: Sequence[tuple[str, Callable[[_Hub], list[Pair]]]] = (
        ("hub-pickle", _pickle_pairs),
        ("hub-pickle", _array_pairs),
        ("hub-pickle", lambda h: [_wheel_pair(h)]),
        ("hub-keras", _keras_pairs),
        ("hub-template", _template_pairs),
        ("hub-remote-code", _code_pairs),
    )
    for scenario_id, write in writers:
        for pair in write(hub):
            _add_pair(build, scenarios[scenario_id], pair)

    onnx_cases, onnx_clean = _onnx_cases(hub)
    scenario = scenarios["hub-onnx"]
    for name, step, folder, notes in onnx_cases:
        build.case(
            scenario,
            name,
            folder,
            every_stage(BLOCK),
            step=step,
            twin="hub-onnx-external-clean",
            tags=("onnx",),
            notes=notes,
        )
    build.case(
        scenario,
        "hub-onnx-external-clean",
        onnx_clean,
        UNSIGNED_CLEAN,
        tags=("onnx",),
        notes="External data in weights.bin inside the repository. " + UNSIGNED_NOTE,
    )


def _add_pair(build: Build, scenario: Scenario, pair: Pair) -> None:
    build.case(
        scenario,
        pair.name,
        pair.hostile,
        every_stage(BLOCK),
        step=pair.step,
        twin=f"{pair.name}-clean",
        tags=pair.tags,
        notes=pair.notes,
    )
    build.case(
        scenario,
        f"{pair.name}-clean",
        pair.clean,
        pair.clean_expected or UNSIGNED_CLEAN,
        tags=pair.tags,
        notes=pair.clean_notes,
    )
